// The fleet's own small SQLite (fleet.db in fleet.dataDir): the last-known record of every gateway, so a restarted
// fleet shows the whole fleet at once instead of an empty page until each gateway's next heartbeat. State that can
// be rebuilt from the next messages: synchronous NORMAL (survives a crash of the process, not a power cut), written
// in one transaction per flush (fleet/main.ts flushes the changed records once a second, not per message).
import { join } from 'node:path'
import { openDatabase, type Db } from '../gateway/store/sqlite.ts'
import type { GatewayRecord } from './model.ts'

export class FleetStore {
  private db: Db | null = null

  constructor(private readonly dataDir: string) {}

  get file(): string { return join(this.dataDir, 'fleet.db') }

  open(): void {
    const db = openDatabase(this.file, { synchronous: 'NORMAL' })
    db.exec('CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY, record TEXT NOT NULL, updated_at INTEGER NOT NULL)')
    this.db = db
  }

  /** Every stored record that still parses (a damaged row is skipped: the gateway's next message rebuilds it). */
  load(): GatewayRecord[] {
    const rows = this.need().prepare('SELECT record FROM gateways').all() as { record: string }[]
    const out: GatewayRecord[] = []
    for (const r of rows) {
      try {
        const g = JSON.parse(r.record) as GatewayRecord
        if (g && typeof g.id === 'string' && typeof g.lastMessageAt === 'number' && Array.isArray(g.devices) && Array.isArray(g.alerts)) out.push(g)
      } catch { /* skipped */ }
    }
    return out
  }

  save(records: GatewayRecord[], now: number): void {
    if (!records.length) return
    const db = this.need()
    const put = db.prepare('INSERT INTO gateways (id, record, updated_at) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at')
    db.transaction(() => { for (const r of records) put.run(r.id, JSON.stringify(r), now) })()
  }

  close(): void { this.db?.close(); this.db = null }

  private need(): Db {
    if (!this.db) throw new Error('fleet store is not open')
    return this.db
  }
}
