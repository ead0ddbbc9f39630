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
  /** Registered with a secret (`device add`); devices only seen on a link or from an older version have none. */
  hasSecret: boolean
}

interface DeviceRow {
  id: string; secret_hash: string | null; metadata: string; created_at: number; first_seen: number | null
  last_seen: number | null; online: number; firmware: string | null; link: string | null
}

/** An integration client (Home Assistant, Node-RED, a script): connects with a secret like a device, bound by a role. */
export interface IntegrationClient {
  name: string
  role: string
  createdAt: number
}

interface ClientRow { name: string; secret_hash: string; role: string; created_at: number }

export class RegistryError extends Error {}

const ID_RULE = '1-64 characters, letters, digits, "_", "." and "-", starting with a letter or digit'

/**
 * A hash no secret matches (its secret is thrown away): unknown ids are checked against it so that they cost the
 * same scrypt as a wrong secret and response times do not tell which ids exist. Computed once, on first need.
 */
let dummyHash: Promise<string> | undefined
function dummy(): Promise<string> {
  dummyHash ??= hashSecret(generateSecret())
  return dummyHash
}

export class Registry {
  private db!: Db
  private readonly cache = new VerifiedCache()
  /** last-seen times are kept here and written in batches, not per reading. */
  private readonly seen = new Map<string, number>()

  /**
   * `liveState: 'NORMAL'` (the running gateway): presence, last-seen and firmware writes do not wait for the disk.
   * They run on the broker's event loop, where an fsync holds every PUBACK behind it, and all of it is rebuilt after a
   * power cut (everyone is marked offline at start, devices report their firmware again). Secrets and registrations
   * are always committed with FULL (see durably()).
   */
  constructor(private readonly file: string, private readonly opts: { liveState?: 'FULL' | 'NORMAL' } = {}) {}

  open(): void {
    this.db = openDatabase(this.file, { synchronous: this.opts.liveState ?? 'FULL' })
    this.db.exec(`CREATE TABLE IF NOT EXISTS devices (
      id TEXT PRIMARY KEY, secret_hash TEXT, metadata TEXT NOT NULL DEFAULT '{}', created_at INTEGER NOT NULL,
      first_seen INTEGER, last_seen INTEGER, online INTEGER NOT NULL DEFAULT 0, firmware TEXT, link TEXT)`)
    this.db.exec(`CREATE TABLE IF NOT EXISTS clients (
      name TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, role TEXT NOT NULL, created_at INTEGER NOT NULL)`)
  }

  close(): void {
    if (!this.db?.open) return
    this.flushSeen()
    this.db.close()
  }

  /** Creates a device and returns its secret: the only time the plaintext exists. */
  async add(id: string, metadata: Record<string, unknown> = {}): Promise<string> {
    if (!DEVICE_ID_RE.test(id)) throw new RegistryError(`invalid device id "${id}": ${ID_RULE}`)
    const taken = (): void => {
      if (this.get(id)) throw new RegistryError(`device "${id}" already exists`)
      if (this.getClient(id)) throw new RegistryError(`"${id}" is already an integration client: devices and clients share one namespace (MQTT usernames)`)
    }
    taken()
    const secret = generateSecret()
    const hash = await hashSecret(secret)
    // checked again after the hash: the check and the insert are one synchronous step
    // (synchronous cannot change inside a transaction: durably() goes around it)
    this.durably(() => this.db.transaction(() => {
      taken()
      this.db.prepare('INSERT INTO devices (id, secret_hash, metadata, created_at) VALUES (?, ?, ?, ?)').run(id, hash, JSON.stringify(metadata), Date.now())
    })())
    return secret
  }

  async rotateSecret(id: string): Promise<string> {
    if (!this.get(id)) throw new RegistryError(`no device "${id}"`)
    const secret = generateSecret()
    const hash = await hashSecret(secret)
    this.durably(() => this.db.prepare('UPDATE devices SET secret_hash = ? WHERE id = ?').run(hash, id))
    return secret
  }

  remove(id: string): boolean {
    return this.durably(() => this.db.prepare('DELETE FROM devices WHERE id = ?').run(id).changes > 0)
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
    return this.check(id, secret, r?.secret_hash ?? null)
  }

  /** Verified secrets are cached (VerifiedCache); no stored hash (unknown id, secretless row): the dummy check, false. */
  private async check(id: string, secret: string, stored: string | null): Promise<boolean> {
    if (!stored) {
      await verifySecret(secret, await dummy())
      return false
    }
    if (this.cache.has(id, secret, stored)) return true
    const ok = await verifySecret(secret, stored)
    if (ok) this.cache.add(id, secret, stored)
    return ok
  }

  /** Creates an integration client and returns its secret (shown once). The role is checked by the caller against the config. */
  async addClient(name: string, role: string): Promise<string> {
    if (!DEVICE_ID_RE.test(name)) throw new RegistryError(`invalid client name "${name}": ${ID_RULE}`)
    const taken = (): void => {
      if (this.getClient(name)) throw new RegistryError(`client "${name}" already exists`)
      if (this.get(name)) throw new RegistryError(`"${name}" is already a device: devices and clients share one namespace (MQTT usernames)`)
    }
    taken()
    const secret = generateSecret()
    const hash = await hashSecret(secret)
    this.durably(() => this.db.transaction(() => {
      taken()
      this.db.prepare('INSERT INTO clients (name, secret_hash, role, created_at) VALUES (?, ?, ?, ?)').run(name, hash, role, Date.now())
    })())
    return secret
  }

  getClient(name: string): IntegrationClient | undefined {
    const r = this.db.prepare('SELECT * FROM clients WHERE name = ?').get(name) as ClientRow | undefined
    return r && { name: r.name, role: r.role, createdAt: r.created_at }
  }

  listClients(): IntegrationClient[] {
    return (this.db.prepare('SELECT * FROM clients ORDER BY name').all() as ClientRow[]).map((r) => ({ name: r.name, role: r.role, createdAt: r.created_at }))
  }

  removeClient(name: string): boolean {
    return this.durably(() => this.db.prepare('DELETE FROM clients WHERE name = ?').run(name).changes > 0)
  }

  async rotateClientSecret(name: string): Promise<string> {
    if (!this.getClient(name)) throw new RegistryError(`no client "${name}"`)
    const secret = generateSecret()
    const hash = await hashSecret(secret)
    this.durably(() => this.db.prepare('UPDATE clients SET secret_hash = ? WHERE name = ?').run(hash, name))
    return secret
  }

  async verifyClient(name: string, secret: string): Promise<boolean> {
    const r = this.db.prepare('SELECT secret_hash FROM clients WHERE name = ?').get(name) as { secret_hash: string } | undefined
    return this.check(name, secret, r?.secret_hash ?? null)
  }

  /**
   * Link state from the broker or a serial link; unknown devices (open/anonymous mode) are recorded without a
   * secret, except under an integration client's name (one namespace: a client never becomes a device row).
   */
  setOnline(id: string, online: boolean, link: string, now = Date.now()): void {
    // A device removed while connected (`device remove`, the device page) is revoked and its connection closed after
    // the row is gone: that close must not bring the row back (as a secretless ghost). Serial and Firmata boards keep
    // being recorded when they go offline: their configured names are reserved by their rows.
    if (!online && link === 'mqtt') {
      this.db.prepare('UPDATE devices SET online = 0, link = ?, last_seen = ? WHERE id = ?').run(link, now, id)
      return
    }
    this.db.prepare(`INSERT INTO devices (id, created_at, first_seen, last_seen, online, link) SELECT ?, ?, ?, ?, ?, ?
      WHERE NOT EXISTS (SELECT 1 FROM clients WHERE name = ?)
      ON CONFLICT(id) DO UPDATE SET online = excluded.online, link = excluded.link, last_seen = excluded.last_seen,
      first_seen = COALESCE(devices.first_seen, excluded.first_seen)`).run(id, now, now, now, online ? 1 : 0, link, id)
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

  /** Replaces a device's metadata (the dashboard's device page validates it first); false: no such device. */
  setMetadata(id: string, metadata: Record<string, unknown>): boolean {
    return this.db.prepare('UPDATE devices SET metadata = ? WHERE id = ?').run(JSON.stringify(metadata), id).changes > 0
  }

  setFirmware(id: string, version: string): void {
    this.db.prepare('UPDATE devices SET firmware = ? WHERE id = ?').run(version, id)
  }

  /** At start: nobody is connected yet, whatever the last run recorded. */
  markAllOffline(): void {
    this.db.prepare('UPDATE devices SET online = 0 WHERE online = 1').run()
  }

  /** Who may connect is never left to a later sync: these commits wait for the disk whatever liveState says. */
  private durably<T>(fn: () => T): T {
    if ((this.opts.liveState ?? 'FULL') === 'FULL') return fn()
    this.db.pragma('synchronous = FULL')
    try { return fn() } finally { this.db.pragma(`synchronous = ${this.opts.liveState}`) }
  }

  /**
   * A name only its secret may speak as over MQTT: a device with a secret, a serial or Firmata board, or an
   * integration client. (Rows without a secret and link "mqtt" are anonymous devices seen by an older version.)
   */
  isReserved(id: string): boolean {
    const r = this.db.prepare('SELECT secret_hash, link FROM devices WHERE id = ?').get(id) as { secret_hash: string | null; link: string | null } | undefined
    if (r) return r.secret_hash !== null || (r.link !== null && r.link !== 'mqtt')
    return this.getClient(id) !== undefined
  }

  private toDevice(r: DeviceRow): Device {
    return {
      hasSecret: r.secret_hash !== null,
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
