// The one file that imports better-sqlite3: every SQLite database of the gateway is opened here,
// with the same pragmas, so durability settings cannot drift between stores.
import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'

export type Db = Database.Database
export type Statement<P extends unknown[] = unknown[], R = unknown> = Database.Statement<P, R>

export interface OpenOptions {
  /** FULL: a commit has reached the disk when it returns (needed before acking a device).
   *  NORMAL: survives a process crash but not a power cut (fine for state that can be rebuilt). */
  synchronous?: 'FULL' | 'NORMAL'
  readonly?: boolean
  /** How long a writer waits for another connection's lock before SQLITE_BUSY. */
  busyTimeoutMs?: number
  /** false: this connection never checkpoints the WAL on commit (another connection does it, off the write path). */
  autoCheckpoint?: boolean
}

export function openDatabase(file: string, opts: OpenOptions = {}): Db {
  if (file !== ':memory:' && !opts.readonly) mkdirSync(dirname(file), { recursive: true })
  const db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false })
  db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 5000}`)
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${opts.synchronous ?? 'FULL'}`)
    if (opts.autoCheckpoint === false) db.pragma('wal_autocheckpoint = 0')
    db.pragma('foreign_keys = ON')
  }
  return db
}

/** SQLite error codes the gateway reacts to (better-sqlite3 sets `code` on SqliteError). */
export function sqliteErrorCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code
  }
  return undefined
}

/** True when a write failed because the disk (or the database size limit) is full. */
export function isDiskFull(err: unknown): boolean {
  const code = sqliteErrorCode(err)
  return code === 'SQLITE_FULL' || code === 'SQLITE_IOERR_WRITE' || code === 'SQLITE_IOERR_FSYNC' || code === 'SQLITE_IOERR'
    || (code?.startsWith('SQLITE_IOERR') ?? false)
}

/** 'ok', or SQLite's first complaint about the file's structure (reads every page: seconds for a large file). */
export function quickCheck(file: string): string {
  const db = new Database(file, { fileMustExist: true })
  try { return String(db.pragma('quick_check(1)', { simple: true })) } finally { db.close() }
}

/** Copies committed WAL frames into the database file without blocking writers; returns the WAL size in frames. */
export function checkpointPassive(db: Db): { walFrames: number; checkpointed: number } {
  const r = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[]
  return { walFrames: r[0]?.log ?? 0, checkpointed: r[0]?.checkpointed ?? 0 }
}
