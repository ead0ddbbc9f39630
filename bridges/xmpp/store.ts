// The bridge's own SQLite file (<dataDir>/xmpp.db): approved subscriptions and the CLI's block list.
// Shared by the running gateway and `edgeway xmpp block` (WAL: both may have it open).
import { join, resolve } from 'node:path'
import { openDatabase, type Db } from '../../gateway/store/sqlite.ts'

export function xmppDbPath(dataDir: string): string { return join(resolve(dataDir), 'xmpp.db') }

export class XmppStore {
  private db: Db | null = null

  constructor(private readonly file: string) {}

  open(): void {
    // NORMAL: a subscription lost to a power cut is asked for again by the client; no acknowledgement hangs on it.
    this.db = openDatabase(this.file, { synchronous: 'NORMAL' })
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS subscriptions (device TEXT NOT NULL, jid TEXT NOT NULL, since INTEGER NOT NULL, PRIMARY KEY (device, jid)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS blocked (jid TEXT PRIMARY KEY, since INTEGER NOT NULL) WITHOUT ROWID;
    `)
  }

  close(): void { this.db?.close(); this.db = null }

  private get d(): Db {
    if (!this.db) throw new Error('xmpp store is not open')
    return this.db
  }

  subscribe(device: string, jid: string, now = Date.now()): void {
    this.d.prepare('INSERT OR IGNORE INTO subscriptions (device, jid, since) VALUES (?, ?, ?)').run(device, jid, now)
  }

  unsubscribe(device: string, jid: string): boolean {
    return this.d.prepare('DELETE FROM subscriptions WHERE device = ? AND jid = ?').run(device, jid).changes > 0
  }

  isSubscribed(device: string, jid: string): boolean {
    return this.d.prepare('SELECT 1 FROM subscriptions WHERE device = ? AND jid = ?').get(device, jid) !== undefined
  }

  subscribers(device: string): string[] {
    return (this.d.prepare('SELECT jid FROM subscriptions WHERE device = ? ORDER BY jid').all(device) as { jid: string }[]).map((r) => r.jid)
  }

  allSubscriptions(): { device: string; jid: string }[] {
    return this.d.prepare('SELECT device, jid FROM subscriptions ORDER BY device, jid').all() as { device: string; jid: string }[]
  }

  /** Re-read on every use: `edgeway xmpp block` changes it from another process while the gateway runs. */
  blocked(): string[] {
    return (this.d.prepare('SELECT jid FROM blocked ORDER BY jid').all() as { jid: string }[]).map((r) => r.jid)
  }

  block(jid: string, now = Date.now()): boolean {
    return this.d.prepare('INSERT OR IGNORE INTO blocked (jid, since) VALUES (?, ?)').run(jid.toLowerCase(), now).changes > 0
  }

  unblock(jid: string): boolean {
    return this.d.prepare('DELETE FROM blocked WHERE jid = ?').run(jid.toLowerCase()).changes > 0
  }
}
