// The history worker's logic: owns the HistoryStore, takes the outbox's committed readings (tap.ts batches, and at
// start the outbox rows written after history's last position), commits every `commitMs`, prunes every `pruneMs`
// and answers the main thread's queries. Runs in the records thread (gateway/records/); worker.ts serves it there.
import { existsSync } from 'node:fs'
import { openDatabase } from '../store/sqlite.ts'
import { HistoryStore } from './store.ts'
import type { HistoryInit, HistoryQuery, HistoryStats, TapBatch } from './protocol.ts'

const CATCH_UP_PAGE = 5000

export class HistoryEngine {
  readonly store: HistoryStore
  private commitTimer: NodeJS.Timeout | null = null
  private pruneTimer: NodeJS.Timeout | null = null
  /** Highest outbox row id seen (ingested or skipped): a row at or below it is not counted twice. */
  private seenRow = 0

  constructor(private readonly init: HistoryInit, now?: () => number) {
    this.store = new HistoryStore({ ...init, ...(now ? { now } : {}) })
  }

  open(): void {
    this.store.open()
    this.seenRow = this.store.lastRow
  }

  /**
   * Readings the outbox committed after history's position and that are still in the outbox (a crash between the
   * two commits, or a gateway stopped while history was off). Returns how many rows it read. Call once, after the
   * outbox is open and before the first tap batch.
   */
  catchUp(): number {
    const file = this.init.outboxFile
    if (!existsSync(file)) return 0
    const db = openDatabase(file, { readonly: true })
    let n = 0
    try {
      const has = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'readings'").get()
      if (!has) return 0
      const maxId = Math.max(
        Number(db.prepare('SELECT COALESCE(MAX(id), 0) FROM readings').pluck().get()),
        Number(db.prepare("SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'last_id'").pluck().get()))
      // A new outbox (its file was deleted) numbers rows from 1 again: history's old position means nothing there.
      if (maxId < this.seenRow) this.seenRow = 0
      const page = db.prepare('SELECT id, device, ts, payload FROM readings WHERE id > ? AND kind = 0 ORDER BY id LIMIT ?')
      for (;;) {
        const rows = page.all(this.seenRow, CATCH_UP_PAGE) as { id: number; device: string; ts: number; payload: string | Buffer }[]
        if (rows.length === 0) break
        for (const r of rows) {
          this.store.ingest(r.device, r.ts, typeof r.payload === 'string' ? r.payload : r.payload.toString('utf8'), r.id)
          this.seenRow = r.id
        }
        n += rows.length
        this.store.commit()
      }
      if (maxId > this.seenRow) this.seenRow = maxId
    } finally { db.close() }
    return n
  }

  /** Starts the commit and prune timers; a failed commit (disk full) keeps its points for the next try. */
  startTimers(onError: (what: string, err: Error) => void): void {
    const guarded = (what: string, fn: () => void) => (): void => { try { fn() } catch (err) { onError(what, err as Error) } }
    this.commitTimer = setInterval(guarded('commit', () => this.store.commit()), this.init.commitMs)
    this.pruneTimer = setInterval(guarded('prune', () => this.store.prune()), this.init.pruneMs)
    guarded('prune', () => this.store.prune())()
  }

  onBatch(b: TapBatch): void {
    const texts = b.text.split('\0')
    for (let i = 0; i < texts.length; i++) {
      const id = b.ids[i]!
      if (id <= this.seenRow) continue
      this.seenRow = id
      this.store.ingest(b.names[b.dev[i]!]!, b.ts[i]!, texts[i]!, id)
    }
  }

  query(q: HistoryQuery): unknown {
    const s = this.store
    switch (q.q) {
      case 'series': return s.series(q.device)
      case 'range': return s.range(q.device, q.metric, q.from, q.to, q.points)
      case 'csvPlan': return s.csvPlan(q.device, q.from, q.to)
      case 'csvRows': return s.csvRows(q.plan, q.a, q.b)
      case 'stats': {
        const t = s.totals
        const refusedDevices = [...s.refusedDevices]
        s.refusedDevices.clear()
        return { points: t.points, refused: t.refused, pruned: structuredClone(t.pruned), usedBytes: s.usedBytes(), series: s.seriesTotal, lastRow: s.lastRow, refusedDevices } satisfies HistoryStats
      }
    }
  }

  close(): void {
    if (this.commitTimer) clearInterval(this.commitTimer)
    if (this.pruneTimer) clearInterval(this.pruneTimer)
    this.store.close()
  }
}
