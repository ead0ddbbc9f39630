// The outbox's message handler: owns the OutboxStore and answers the broker side's messages (protocol.ts).
// Runs on the outbox worker thread; worker.ts hands it each drain of the port (group commit).
import { OutboxStore } from './store.ts'
import { isDiskFull, quickCheck } from '../store/sqlite.ts'
import { sharedNow, type FromWorker, type LatestReading, type OutboxRecovery, type Refusal, type ToWorker, type WorkerInit } from './protocol.ts'
import { decodeTelemetry, type ReadingInput } from '../readings.ts'
import { HeldAppends } from './held.ts'
import { checkMarker, clearCheckMarker, isCorrupt, salvageOutbox } from './salvage.ts'
import { existsSync, writeFileSync } from 'node:fs'

/** How often held appends are retried while the disk is full. */
const HOLD_RETRY_MS = 500
import { HistoryTap } from '../history/tap.ts'

export class OutboxEngine {
  private store: OutboxStore
  private corruptionNoted = false
  private closing = false
  /** Device and link names by the numbers the broker thread sends instead of the strings (see client.ts). */
  private readonly names: string[] = []
  private readonly prioMetrics: Set<string>
  private readonly prioDevices: Set<string>
  // Each device's newest committed reading, sent at most every latestEveryMs: live views (dashboard, XMPP status)
  // get values without a message per reading crossing threads.
  // Keeps the decoded rows themselves (no object per reading on this hot path); the message is built at the flush.
  private readonly latest = new Map<string, ReadingInput>()
  private latestTimer: NodeJS.Timeout | null = null
  private maintenanceTimer: NodeJS.Timeout | null = null
  private catchUp: NodeJS.Timeout | null = null
  /** Appends waiting for disk space (see held.ts), retried every HOLD_RETRY_MS. */
  private readonly held: HeldAppends
  private heldReason = ''
  private retryHeld: NodeJS.Timeout | null = null
  /** history tap: committed readings go on to the history worker, after the acks are on their way. */
  private readonly tap: HistoryTap | null

  constructor(private readonly init: WorkerInit, private readonly send: (m: FromWorker) => void) {
    this.store = new OutboxStore(init)
    this.prioMetrics = new Set(init.priority?.metrics ?? [])
    this.prioDevices = new Set(init.priority?.devices ?? [])
    this.held = new HeldAppends(init.diskFullHoldMs ?? 60_000)
    this.tap = init.tap ? new HistoryTap(init.tap, init.tapMinIntervalMs ?? 0) : null
  }

  /** Opens the database (throws if it cannot), says 'ready' and starts maintenance. */
  open(): void {
    const recovery = this.openOrSalvage()
    this.send({ t: 'ready', lastRowId: this.store.lastRowId, upstreams: this.store.upstreamNames, ...(recovery ? { recovery } : {}) })
    this.maintenanceTimer = setInterval(() => this.maintain(), this.init.maintenanceMs)
  }

  /** Handles messages in arrival order, except that the appends among them are committed first, together. */
  handle(msgs: ToWorker[]): void {
    const { store } = this
    const startedAt = sharedNow()
    // Phase 1: decode every reading of this drain; the valid ones go into one transaction.
    const ids: number[] = []
    const rows: ReadingInput[] = []
    const refused: Refusal[] = []
    const prioMetrics = this.prioMetrics.size ? this.prioMetrics : undefined
    const prioDevices = this.prioDevices
    const names = this.names
    for (const m of msgs) {
      if (m.t !== 'append') continue
      ids.push(m.id)
      if (m.reset) names.length = 0
      for (const name of m.names) names.push(name)
      const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength)
      const meta = m.meta
      const n = meta.length / 3
      const up = m.userProperties
      let upNext = up === undefined ? -1 : up[0]![0]
      let upAt = 0
      let off = 0
      for (let i = 0; i < n; i++) {
        const len = meta[i]!
        const device = names[meta[n + i]!]!
        const d = decodeTelemetry(device, data.subarray(off, off + len), m.receivedAt, names[meta[2 * n + i]!]!, prioMetrics)
        off += len
        if (i === upNext) {
          if (d.ok) d.reading.userProperties = up![upAt]![1]
          upNext = ++upAt < up!.length ? up![upAt]![0] : -1
        }
        if (d.ok) {
          if (prioDevices.size && prioDevices.has(device)) d.reading.priority = true
          rows.push(d.reading)
        }
        else refused.push({ id: m.id, index: i, device, reason: d.reason })
      }
    }
    // Behind held appends (disk full) new ones wait their turn: per-device order holds.
    if (ids.length > 0) {
      if (this.held.size > 0) this.hold(ids, rows, refused, null)
      else this.commit(ids, rows, refused, startedAt)
    }
    // Phase 2: the rest in arrival order; claims see the rows just committed.
    for (const m of msgs) {
      try {
        switch (m.t) {
          case 'append': break
          case 'claim': this.send({ t: 'claimed', id: m.id, rows: store.claim(m.upstream, m.limit) }); break
          case 'ack': store.ack(m.upstream, m.ids); break
          case 'release': store.release(m.upstream, m.ids); break
          case 'dead': store.deadLetter(m.upstream, m.id, m.reason); break
          case 'stats': this.send({ t: 'stats', id: m.id, stats: store.stats() }); break
          case 'close':
            this.close()
            this.send({ t: 'closed', id: m.id })
            return
        }
      } catch (err) {
        this.noteCorruption(err)
        this.send({ t: 'error', id: m.t === 'claim' || m.t === 'stats' ? m.id : undefined, message: `${m.t}: ${(err as Error).message}` })
      }
    }
  }

  get closed(): boolean { return this.closing }

  /**
   * Opens the store; a corrupted file (found by the open's own reads, or by a full check when the last run met
   * corruption) is moved aside and what can be read is salvaged into a fresh one (salvage.ts).
   */
  private openOrSalvage(): OutboxRecovery | null {
    const file = this.init.file
    let error: string | null = null
    try {
      if (existsSync(checkMarker(file))) {
        const verdict = quickCheck(file)
        if (verdict !== 'ok') error = `PRAGMA quick_check: ${verdict}`
      }
      if (error === null) this.store.open()
    } catch (err) {
      if (!isCorrupt(err)) throw err
      error = (err as Error).message
    }
    if (error === null) { clearCheckMarker(file); return null }
    this.store.abandon()
    const s = salvageOutbox(file, error)
    const fresh = new OutboxStore(this.init)
    fresh.open()
    fresh.importSalvaged(s)
    fresh.close()
    this.store = new OutboxStore(this.init)
    this.store.open()
    clearCheckMarker(file)
    return { at: Date.now(), movedTo: s.movedTo, error, salvaged: s.rows.length, unreadable: s.unreadable, unreadableFile: s.unreadableFile }
  }

  /** Corruption met while running: noted for the next start, which checks the file and salvages it. */
  private noteCorruption(err: unknown): void {
    if (!isCorrupt(err) || this.corruptionNoted) return
    this.corruptionNoted = true
    try { writeFileSync(checkMarker(this.init.file), `${new Date().toISOString()} ${(err as Error).message}\n`) } catch { /* best effort */ }
    this.send({ t: 'error', message: `outbox corrupted (${(err as Error).message}): restart the gateway to move the file aside and salvage what can be read` })
  }

  /** One transaction for the drain's readings; a full disk holds them instead of failing them (held.ts). */
  private commit(ids: number[], rows: ReadingInput[], refused: Refusal[], startedAt: number): void {
    try {
      this.write(ids, rows, refused, startedAt)
    } catch (err) {
      if (isDiskFull(err) && this.init.diskFullHoldMs !== 0) this.hold(ids, rows, refused, err as Error)
      else this.send({ t: 'appendFailed', ids, code: isDiskFull(err) ? 'disk_full' : 'io', message: (err as Error).message })
    }
  }

  /** One transaction; only once it committed: the acks, the live views, the history tap. Throws if it failed. */
  private write(ids: number[], rows: ReadingInput[], refused: Refusal[], startedAt: number): void {
    const decoded = sharedNow()
    let lastRowId: number
    try {
      lastRowId = rows.length > 0 ? this.store.appendBatch(rows) : this.store.lastRowId
    } catch (err) {
      this.noteCorruption(err)
      throw err
    }
    const sentAt = sharedNow()
    this.send({ t: 'appended', ids, lastRowId, refused, phases: { startedAt, decodeMs: decoded - startedAt, writeMs: sentAt - decoded, sentAt } })
    this.noteLatest(rows)
    this.tap?.add(rows, lastRowId)
  }

  private hold(ids: number[], rows: ReadingInput[], refused: Refusal[], err: Error | null): void {
    const first = this.held.size === 0
    if (!this.held.add(ids, rows, refused, Date.now())) {
      this.send({ t: 'appendFailed', ids, code: 'disk_full', message: `${this.heldReason} (and ${this.held.heldBytes} bytes are held already)` })
      return
    }
    if (!first) return
    this.heldReason = err?.message ?? 'disk full'
    this.send({ t: 'held', code: 'disk_full', message: this.heldReason })
    this.retryHeld ??= setTimeout(() => this.retry(), HOLD_RETRY_MS)
  }

  /** Fails what waited too long, then writes everything still held in one transaction (it fails whole or not at all). */
  private retry(): void {
    this.retryHeld = null
    if (this.closing) return
    for (const b of this.held.expire(Date.now())) {
      this.send({ t: 'appendFailed', ids: b.ids, code: 'disk_full', message: `${this.heldReason} (held ${Math.round((this.init.diskFullHoldMs ?? 0) / 1000)} s)` })
    }
    if (this.held.size === 0) return
    const { ids, rows, refused } = this.held.merged()
    try {
      this.write(ids, rows, refused, sharedNow())
      this.held.takeAll()
    } catch (err) {
      if (isDiskFull(err)) { this.retryHeld = setTimeout(() => this.retry(), HOLD_RETRY_MS); return }
      for (const b of this.held.takeAll()) this.send({ t: 'appendFailed', ids: b.ids, code: 'io', message: (err as Error).message })
    }
  }

  private close(): void {
    this.closing = true
    if (this.maintenanceTimer) clearInterval(this.maintenanceTimer)
    if (this.catchUp) clearTimeout(this.catchUp)
    if (this.latestTimer) clearTimeout(this.latestTimer)
    if (this.retryHeld) clearTimeout(this.retryHeld)
    // Held readings were never acknowledged: their devices send them again to the next gateway run.
    for (const b of this.held.takeAll()) this.send({ t: 'appendFailed', ids: b.ids, code: 'disk_full', message: 'gateway stopping with the disk still full' })
    this.tap?.close()
    this.store.close()
  }

  private noteLatest(rows: ReadingInput[]): void {
    if (this.init.latestEveryMs <= 0) return
    for (const r of rows) this.latest.set(r.device, r)
    this.latestTimer ??= setTimeout(() => this.flushLatest(), this.init.latestEveryMs)
  }

  private flushLatest(): void {
    this.latestTimer = null
    if (this.latest.size === 0 || this.closing) return
    const readings: LatestReading[] = []
    for (const r of this.latest.values()) readings.push({ device: r.device, link: r.link, ts: r.ts, seq: r.deviceSeq, payload: r.kind === 'json' ? (r.payload as string) : null })
    this.send({ t: 'latest', readings })
    this.latest.clear()
  }

  private maintain(): void {
    if (this.closing) return
    try {
      for (const d of this.store.maintain()) this.send({ t: 'dropped', ...d })
    } catch (err) {
      this.send({ t: 'error', message: `outbox maintenance: ${(err as Error).message}` })
    }
    // After a drain, a large delivered backlog is deleted in small steps with commits and claims in between.
    if (this.store.deleteBehind && !this.catchUp) this.catchUp = setTimeout(() => { this.catchUp = null; this.maintain() }, 5)
  }
}
