// The device journal's SQLite file (journal.db in the data dir): one table of entries, bounded per device and kind,
// and one row per device for its last payload. synchronous=NORMAL: the journal is a history for operators, not a
// promise to a device, so a power cut may lose its last second. Used only by the journal's worker thread (and tests).
import { openDatabase, type Db } from '../store/sqlite.ts'
import { DEFAULT_BOUNDS, ENTRY_KINDS, type Bounds, type EntryKind, type JournalEntry, type LastPayload, type StoredEntry } from './entries.ts'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, kind TEXT NOT NULL, at INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_device ON entries (device, kind, id);
CREATE TABLE IF NOT EXISTS last_payload (device TEXT PRIMARY KEY, at INTEGER NOT NULL, ts INTEGER NOT NULL, link TEXT NOT NULL, seq INTEGER, payload TEXT);`

interface EntryRow { id: number; device: string; kind: string; at: number; data: string }
interface PayloadRow { device: string; at: number; ts: number; link: string; seq: number | null; payload: string | null }

/** Newest first, per kind. */
export type JournalLists = Record<EntryKind, StoredEntry[]>

export class JournalStore {
  private db!: Db

  /**
   * `maxRows` and `maxDevices` bound the whole file too: anonymous clients (mqtt.allowAnonymous) can name any number
   * of devices, so per-device bounds alone would not.
   */
  constructor(private readonly file: string, private readonly bounds: Bounds = DEFAULT_BOUNDS, private readonly limits: { maxRows: number; maxDevices: number } = { maxRows: 200_000, maxDevices: 10_000 }) {}

  open(): void {
    this.db = openDatabase(this.file, { synchronous: 'NORMAL' })
    this.db.exec(SCHEMA)
  }

  close(): void { if (this.db?.open) this.db.close() }

  /**
   * One transaction per batch. A firmware entry that repeats the device's last recorded version is skipped (devices
   * report their version at every connect). Afterwards each touched (device, kind) is cut to its bound.
   */
  write(entries: readonly JournalEntry[], payloads: readonly LastPayload[] = []): number {
    const insert = this.db.prepare('INSERT INTO entries (device, kind, at, data) VALUES (?, ?, ?, ?)')
    const lastFw = this.db.prepare("SELECT data FROM entries WHERE device = ? AND kind = 'firmware' ORDER BY id DESC LIMIT 1")
    const cutoff = this.db.prepare('SELECT id FROM entries WHERE device = ? AND kind = ? ORDER BY id DESC LIMIT 1 OFFSET ?')
    const trim = this.db.prepare('DELETE FROM entries WHERE device = ? AND kind = ? AND id <= ?')
    const upsert = this.db.prepare(`INSERT INTO last_payload (device, at, ts, link, seq, payload) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT(device) DO UPDATE SET at = excluded.at, ts = excluded.ts, link = excluded.link, seq = excluded.seq, payload = excluded.payload
      WHERE excluded.at >= last_payload.at`)
    let written = 0
    this.db.transaction(() => {
      const touched = new Map<string, { device: string; kind: EntryKind }>()
      for (const e of entries) {
        if (e.kind === 'firmware') {
          const prev = lastFw.get(e.device) as { data: string } | undefined
          if (prev && (JSON.parse(prev.data) as { version?: unknown }).version === e.data.version) continue
        }
        insert.run(e.device, e.kind, e.at, JSON.stringify(e.data))
        touched.set(`${e.kind}\u0000${e.device}`, { device: e.device, kind: e.kind })
        written++
      }
      for (const { device, kind } of touched.values()) {
        const row = cutoff.get(device, kind, this.bounds[kind]) as { id: number } | undefined
        if (row) trim.run(device, kind, row.id)
      }
      for (const p of payloads) upsert.run(p.device, p.at, p.ts, p.link, p.seq, p.payload)
      // Whole-file bounds, cheap on the primary keys: ids only grow, so max - min bounds the row count from above.
      const span = this.db.prepare('SELECT MIN(id) AS lo, MAX(id) AS hi FROM entries').get() as { lo: number | null; hi: number | null }
      if (span.hi !== null && span.lo !== null && span.hi - span.lo >= this.limits.maxRows) this.db.prepare('DELETE FROM entries WHERE id <= ?').run(span.hi - this.limits.maxRows)
      if (payloads.length) {
        this.db.prepare('DELETE FROM last_payload WHERE device IN (SELECT device FROM last_payload ORDER BY at DESC LIMIT -1 OFFSET ?)').run(this.limits.maxDevices)
      }
    })()
    return written
  }

  /** Newest first; `limit` per kind (default: everything kept). */
  entries(device: string, kind: EntryKind, limit = this.bounds[kind]): StoredEntry[] {
    const rows = this.db.prepare('SELECT * FROM entries WHERE device = ? AND kind = ? ORDER BY id DESC LIMIT ?').all(device, kind, limit) as EntryRow[]
    return rows.map((r) => ({ id: r.id, device: r.device, kind: r.kind as EntryKind, at: r.at, data: JSON.parse(r.data) as Record<string, unknown> }))
  }

  all(device: string, limits: Partial<Record<EntryKind, number>> = {}): JournalLists {
    const out = {} as JournalLists
    for (const k of ENTRY_KINDS) out[k] = this.entries(device, k, limits[k] ?? this.bounds[k])
    return out
  }

  lastPayload(device: string): LastPayload | null {
    const r = this.db.prepare('SELECT * FROM last_payload WHERE device = ?').get(device) as PayloadRow | undefined
    return r ? { device: r.device, at: r.at, ts: r.ts, link: r.link, seq: r.seq, payload: r.payload } : null
  }

  /** Rows kept for a device (for tests and the benchmark). */
  count(device?: string): number {
    const r = (device === undefined
      ? this.db.prepare('SELECT COUNT(*) AS n FROM entries').get()
      : this.db.prepare('SELECT COUNT(*) AS n FROM entries WHERE device = ?').get(device)) as { n: number }
    return r.n
  }
}
