// Device registry: who may connect, with what secret, and what we know about each device.
import { openDatabase, type Db } from '../store/sqlite.ts'
import { DEVICE_ID_RE } from '../readings.ts'
import { generateSecret, hashSecret, verifySecret, VerifiedCache } from './secrets.ts'

export interface Device {
  id: string
  metadata: Record<string, unknown>
  createdAt: number
  firstSeen: number | null
  lastSeen: number | null
  online: boolean
  firmwareVersion: string | null
  link: string | null
}

interface DeviceRow {
  id: string; secret_hash: string | null; metadata: string; created_at: number; first_seen: number | null
  last_seen: number | null; online: number; firmware: string | null; link: string | null
}

export class RegistryError extends Error {}

export class Registry {
  private db!: Db
  private readonly cache = new VerifiedCache()
  /** last-seen times are kept here and written in batches, not per reading. */
  private readonly seen = new Map<string, number>()

  constructor(private readonly file: string) {}

  open(): void {
    this.db = openDatabase(this.file, { synchronous: 'FULL' })
    this.db.exec(`CREATE TABLE IF NOT EXISTS devices (
      id TEXT PRIMARY KEY, secret_hash TEXT, metadata TEXT NOT NULL DEFAULT '{}', created_at INTEGER NOT NULL,
      first_seen INTEGER, last_seen INTEGER, online INTEGER NOT NULL DEFAULT 0, firmware TEXT, link TEXT)`)
  }

  close(): void {
    if (!this.db?.open) return
    this.flushSeen()
    this.db.close()
  }

  /** Creates a device and returns its secret: the only time the plaintext exists. */
  async add(id: string, metadata: Record<string, unknown> = {}): Promise<string> {
    if (!DEVICE_ID_RE.test(id)) throw new RegistryError(`invalid device id "${id}": 1-64 characters, letters, digits, "_", "." and "-", starting with a letter or digit`)
    if (this.get(id)) throw new RegistryError(`device "${id}" already exists`)
    const secret = generateSecret()
    const hash = await hashSecret(secret)
    this.db.prepare('INSERT INTO devices (id, secret_hash, metadata, created_at) VALUES (?, ?, ?, ?)').run(id, hash, JSON.stringify(metadata), Date.now())
    return secret
  }

  async rotateSecret(id: string): Promise<string> {
    if (!this.get(id)) throw new RegistryError(`no device "${id}"`)
    const secret = generateSecret()
    this.db.prepare('UPDATE devices SET secret_hash = ? WHERE id = ?').run(await hashSecret(secret), id)
    return secret
  }

  remove(id: string): boolean {
    return this.db.prepare('DELETE FROM devices WHERE id = ?').run(id).changes > 0
  }

  get(id: string): Device | undefined {
    const r = this.db.prepare('SELECT * FROM devices WHERE id = ?').get(id) as DeviceRow | undefined
    return r && this.toDevice(r)
  }

  list(): Device[] {
    return (this.db.prepare('SELECT * FROM devices ORDER BY id').all() as DeviceRow[]).map((r) => this.toDevice(r))
  }

  async verify(id: string, secret: string): Promise<boolean> {
    const r = this.db.prepare('SELECT secret_hash FROM devices WHERE id = ?').get(id) as { secret_hash: string | null } | undefined
    if (!r?.secret_hash) return false
    if (this.cache.has(id, secret, r.secret_hash)) return true
    const ok = await verifySecret(secret, r.secret_hash)
    if (ok) this.cache.add(id, secret, r.secret_hash)
    return ok
  }

  /** Link state from the broker or a serial link; unknown devices (open/anonymous mode) are recorded without a secret. */
  setOnline(id: string, online: boolean, link: string, now = Date.now()): void {
    this.db.prepare(`INSERT INTO devices (id, created_at, first_seen, last_seen, online, link) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET online = excluded.online, link = excluded.link, last_seen = excluded.last_seen,
      first_seen = COALESCE(devices.first_seen, excluded.first_seen)`).run(id, now, now, now, online ? 1 : 0, link)
  }

  /** Called per reading: cheap, written later by flushSeen(). */
  touch(id: string, now = Date.now()): void {
    this.seen.set(id, now)
  }

  flushSeen(): void {
    if (this.seen.size === 0) return
    const st = this.db.prepare('UPDATE devices SET last_seen = MAX(COALESCE(last_seen, 0), ?), first_seen = COALESCE(first_seen, ?) WHERE id = ?')
    this.db.transaction(() => { for (const [id, t] of this.seen) st.run(t, t, id) })()
    this.seen.clear()
  }

  setFirmware(id: string, version: string): void {
    this.db.prepare('UPDATE devices SET firmware = ? WHERE id = ?').run(version, id)
  }

  /** At start: nobody is connected yet, whatever the last run recorded. */
  markAllOffline(): void {
    this.db.prepare('UPDATE devices SET online = 0 WHERE online = 1').run()
  }

  private toDevice(r: DeviceRow): Device {
    return {
      id: r.id,
      metadata: JSON.parse(r.metadata) as Record<string, unknown>,
      createdAt: r.created_at,
      firstSeen: r.first_seen,
      lastSeen: this.seen.get(r.id) ?? r.last_seen,
      online: r.online === 1,
      firmwareVersion: r.firmware,
      link: r.link,
    }
  }
}
