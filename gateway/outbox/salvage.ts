// A corrupted outbox: moved aside with a timestamp, and whatever rows can still be read are copied into a fresh one,
// so the gateway starts (degraded, saying what happened) instead of failing to start or crash-looping. Row by row
// where a page is damaged: every reading that can be read is kept, with its id, sequence and message id, so the
// consumers' deduplication still works for what was already delivered.
import { existsSync, renameSync, rmSync } from 'node:fs'
import { openDatabase, sqliteErrorCode, type Db } from '../store/sqlite.ts'

/** SQLite's verdicts on a damaged file (the disk, a torn write outside SQLite, a file that is not a database). */
export function isCorrupt(err: unknown): boolean {
  const code = sqliteErrorCode(err)
  return code !== undefined && (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB')
}

/** Written when corruption shows at run time: the next start checks the file whole (PRAGMA quick_check). */
export const checkMarker = (file: string): string => `${file}.check`

export interface SalvagedRow {
  id: number; device: string; seq: number; dseq: number | null; ts: number; recv: number; kind: number; link: string
  payload: string | Buffer; bytes: number; prio: number
  /** MQTT 5 user properties (JSON text), null when none (or the file predates them). */
  user_props: string | null
}

export interface Salvage {
  /** Where the damaged file (and its -wal) now is. */
  movedTo: string
  rows: SalvagedRow[]
  /** Each device's highest sequence known (from its table or its rows): new readings continue above it. */
  seqs: Map<string, number>
  /** Whether seqs came from the sequence table (exact) or only from the rows (the tail may be missing). */
  seqsFromTable: boolean
  /** Upstream cursors, when their table could be read (rows at or below one were delivered to that upstream). */
  cursors: Map<string, number>
  /** The highest row id the damaged file is known to have used (rows, cursors, its last_id record). */
  maxId: number
  /** Row ids that could not be read (damaged pages, and gaps between the rows read), and whether the whole file was unreadable. */
  unreadable: number
  unreadableFile: boolean
  /** The first error, as SQLite said it. */
  error: string
}

const CHUNK = 500
/** Ids probed one by one past a damaged page before giving up on the rest of the table. */
const MAX_PROBES = 200_000

/** Moves `file` (+ -wal, -shm) aside as `<file>.corrupt-<time>` and reads what it can from the moved copy. */
export function salvageOutbox(file: string, error: string, now = new Date()): Salvage {
  const movedTo = `${file}.corrupt-${now.toISOString().replace(/[:.]/g, '-')}`
  renameSync(file, movedTo)
  for (const ext of ['-wal', '-shm']) if (existsSync(file + ext)) renameSync(file + ext, movedTo + ext)
  const out: Salvage = { movedTo, rows: [], seqs: new Map(), seqsFromTable: false, cursors: new Map(), maxId: 0, unreadable: 0, unreadableFile: false, error }
  let db: Db
  try {
    db = openDatabase(movedTo, { readonly: true })
    db.prepare('SELECT 1 FROM sqlite_master LIMIT 1').get()
  } catch {
    out.unreadableFile = true
    return out
  }
  try {
    try {
      for (const r of db.prepare('SELECT device, seq FROM device_seq').all() as { device: string; seq: number }[]) out.seqs.set(r.device, r.seq)
      out.seqsFromTable = true
    } catch { out.seqs.clear() /* rebuilt from the rows */ }
    try { for (const r of db.prepare('SELECT upstream, acked_upto FROM cursors').all() as { upstream: string; acked_upto: number }[]) out.cursors.set(r.upstream, r.acked_upto) } catch { out.cursors.clear() /* every row is resent */ }
    try { out.maxId = Number(db.prepare("SELECT value FROM meta WHERE key = 'last_id'").pluck().get() ?? 0) || 0 } catch { /* from rows and cursors */ }
    readRows(db, out)
  } finally {
    db.close()
  }
  let prev = 0
  for (const r of out.rows) {
    if ((out.seqs.get(r.device) ?? 0) < r.seq) out.seqs.set(r.device, r.seq)
    if (prev > 0 && r.id > prev + 1) out.unreadable += r.id - prev - 1
    prev = r.id
  }
  out.maxId = Math.max(out.maxId, prev, ...out.cursors.values())
  return out
}

function readRows(db: Db, out: Salvage): void {
  let hasPrio = true
  try { db.prepare('SELECT prio FROM readings LIMIT 0').all() } catch { hasPrio = false }
  let hasProps = true
  try { db.prepare('SELECT user_props FROM readings LIMIT 0').all() } catch { hasProps = false }
  const cols = `id, device, seq, dseq, ts, recv, kind, link, payload, bytes, ${hasPrio ? 'prio' : '0 AS prio'}, ${hasProps ? 'user_props' : 'NULL AS user_props'}`
  let scan, one
  try {
    scan = db.prepare(`SELECT ${cols} FROM readings WHERE id > ? ORDER BY id LIMIT ${CHUNK}`)
    one = db.prepare(`SELECT ${cols} FROM readings WHERE id = ?`)
  } catch { out.unreadableFile = true; return }
  let maxId = Number.MAX_SAFE_INTEGER
  try { maxId = (db.prepare('SELECT MAX(id) AS id FROM readings').get() as { id: number | null }).id ?? 0 } catch { /* probe until MAX_PROBES */ }
  if (maxId !== Number.MAX_SAFE_INTEGER) out.maxId = Math.max(out.maxId, maxId)
  let after = 0
  for (;;) {
    let chunk: SalvagedRow[]
    try { chunk = scan.all(after) as SalvagedRow[] } catch {
      // A damaged page lies ahead: step over it id by id (a seek by id does not read the leaves before it).
      let probes = 0
      let found: SalvagedRow | undefined
      for (let id = after + 1; id <= maxId && probes < MAX_PROBES; id++, probes++) {
        try { found = one.get(id) as SalvagedRow | undefined } catch { continue }
        if (found) break
      }
      if (!found) return
      out.rows.push(found)
      after = found.id
      continue
    }
    if (chunk.length === 0) return
    for (const r of chunk) out.rows.push(r)
    after = chunk[chunk.length - 1]!.id
  }
}

/** Removes the run-time corruption marker (after a check found the file sound, or after a salvage). */
export function clearCheckMarker(file: string): void { rmSync(checkMarker(file), { force: true }) }
