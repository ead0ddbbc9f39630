// Durable OTA jobs (SQLite, ota.db) and their images (files under <dataDir>/ota/images/), so a restart resumes.
import { mkdirSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { openDatabase, type Db } from '../store/sqlite.ts'
import { FINAL_STATES, type OtaJob, type OtaState } from './job.ts'

interface JobRow {
  id: number; device: string; version: string; previous_version: string | null; size: number; sha256: string
  chunk_size: number; signature: string | null; state: string; reason: string | null; offset: number
  created_at: number; updated_at: number; applied_at: number | null; deadline_ms: number; deadline_at: number | null
}

export const otaFiles = (dataDir: string) => ({ db: join(dataDir, 'ota.db'), images: join(dataDir, 'ota', 'images') })

const SCHEMA = `CREATE TABLE IF NOT EXISTS ota_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, version TEXT NOT NULL, previous_version TEXT,
  size INTEGER NOT NULL, sha256 TEXT NOT NULL, chunk_size INTEGER NOT NULL, signature TEXT, state TEXT NOT NULL,
  reason TEXT, offset INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  applied_at INTEGER, deadline_ms INTEGER NOT NULL, deadline_at INTEGER)`

export class OtaStore {
  private db!: Db

  constructor(private readonly dataDir: string) {}

  get imagesDir(): string { return otaFiles(this.dataDir).images }
  imagePath(job: number): string { return join(this.imagesDir, `${job}.bin`) }

  open(): void {
    mkdirSync(this.imagesDir, { recursive: true })
    this.db = openDatabase(otaFiles(this.dataDir).db, { synchronous: 'FULL' })
    this.db.exec(SCHEMA)
  }

  close(): void { if (this.db?.open) this.db.close() }

  /** Reserves a job id (the image is then stored under that id, and the job saved with `save`). */
  create(job: Omit<OtaJob, 'id'>): OtaJob {
    const r = this.db.prepare(`INSERT INTO ota_jobs (device, version, previous_version, size, sha256, chunk_size, signature, state,
      reason, offset, created_at, updated_at, applied_at, deadline_ms, deadline_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`).run(
      job.device, job.version, job.previousVersion, job.size, job.sha256, job.chunkSize, job.signature, job.state, job.reason,
      job.offset, job.createdAt, job.updatedAt, job.appliedAt, job.deadlineMs, job.deadlineAt)
    return { ...job, id: Number(r.lastInsertRowid) }
  }

  save(job: OtaJob): void {
    this.db.prepare(`UPDATE ota_jobs SET state = ?, reason = ?, offset = ?, updated_at = ?, applied_at = ?, deadline_at = ? WHERE id = ?`)
      .run(job.state, job.reason, job.offset, job.updatedAt, job.appliedAt, job.deadlineAt, job.id)
  }

  remove(id: number): void { this.db.prepare('DELETE FROM ota_jobs WHERE id = ?').run(id) }

  active(): OtaJob[] {
    return (this.db.prepare(`SELECT * FROM ota_jobs WHERE state NOT IN (${FINAL_STATES.map((x) => `'${x}'`).join(',')}) ORDER BY id`).all() as JobRow[]).map(toJob)
  }

  get(id: number): OtaJob | undefined {
    const r = this.db.prepare('SELECT * FROM ota_jobs WHERE id = ?').get(id) as JobRow | undefined
    return r && toJob(r)
  }
}

/** Read-only listing for `edgeway ota status` (safe while the gateway runs). */
export function readJobs(dataDir: string, device?: string, limit = 50): OtaJob[] {
  const file = otaFiles(dataDir).db
  if (!existsSync(file)) return []
  const db = openDatabase(file, { readonly: true })
  try {
    const rows = (device
      ? db.prepare('SELECT * FROM ota_jobs WHERE device = ? ORDER BY id DESC LIMIT ?').all(device, limit)
      : db.prepare('SELECT * FROM ota_jobs ORDER BY id DESC LIMIT ?').all(limit)) as JobRow[]
    return rows.map(toJob)
  } finally { db.close() }
}

function toJob(r: JobRow): OtaJob {
  return {
    id: r.id, device: r.device, version: r.version, previousVersion: r.previous_version, size: r.size, sha256: r.sha256,
    chunkSize: r.chunk_size, signature: r.signature, state: r.state as OtaState, reason: r.reason, offset: r.offset,
    createdAt: r.created_at, updatedAt: r.updated_at, appliedAt: r.applied_at, deadlineMs: r.deadline_ms, deadlineAt: r.deadline_at,
    reconnected: false, lastHealth: null,
  }
}
