// Durable persistence for the embedded aedes broker.
//
// SqlitePersistence IS the in-memory persistence of aedes-persistence (asyncPersistence.js: the
// retained map, the subscription trie, the per-client queues ...), extended so that every change
// is also written to SQLite, and so that setup() first rebuilds the in-memory state from the
// database. Reads are served from memory, exactly as the stock persistence serves them; SQLite is
// only read once, at setup().
//
// Rules this file keeps:
// - The parent's state is in JS private fields: it is reached only through the parent's public
//   methods (super.*), and restored by replaying them (so the trie, the counters etc. are rebuilt
//   by the parent's own code).
// - Every mutating method awaits exactly one super call (which settles synchronously, the parent
//   never awaits in these paths) and then writes synchronously. Writes therefore reach SQLite in the
//   order the mutations reached memory, whatever the interleaving of callers. A rejected super call
//   (e.g. 'no such packet') writes nothing.
// - Packets are stored as a JSON document of their own enumerable fields (Buffers, undefined and
//   non-finite numbers are tagged so they round-trip) plus the publish payload as a BLOB; functions
//   (aedes' QoSPacket.writeCallback) are not state and are dropped.
import { createRequire } from 'node:module'
import type { Readable } from 'node:stream'
import { openDatabase, type Db, type Statement } from '../store/sqlite.ts'
import { mayMatchTelemetry } from './policy.ts'

// ---------------------------------------------------------------------------------------------
// Types at the module boundary
// ---------------------------------------------------------------------------------------------

export type QoS = 0 | 1 | 2

/** What the persistence needs of an aedes client: its id (aedes also passes `{ id }` literals). */
export interface PersistenceClient {
  readonly id: string
}

/** What the persistence needs of the broker: its id (stamped on wills as `brokerId`). */
export interface PersistenceBroker {
  readonly id: string
}

/** An MQTT packet as aedes hands it to the persistence (aedes-packet Packet, QoSPacket, PubRel ...). */
export interface PersistencePacket {
  cmd?: string
  topic?: string
  payload?: Buffer | string
  qos?: QoS
  retain?: boolean
  dup?: boolean
  messageId?: number
  brokerId?: string
  brokerCounter?: number
  clientId?: string
  nl?: boolean
  properties?: object
  messageExpiry?: number
}

/** A will as stored: putWill stamps the owning broker and the client on it. */
export interface PersistenceWill extends PersistencePacket {
  brokerId: string
  clientId: string
}

/** A subscription of one client, as aedes adds it and as subscriptionsByClient returns it. */
export interface PersistenceSubscription {
  topic: string
  qos: QoS
  rh?: number
  rap?: boolean
  nl?: boolean
  /** MQTT 5 Subscription Identifier, only present when the subscription carried one. */
  subscriptionIdentifier?: number
}

/** A QoS>0 subscription matching a topic (subscriptionsByTopic). */
export interface TopicSubscription {
  clientId: string
  topic: string
  qos: QoS
  rh?: number
  rap?: boolean
  nl?: boolean
}

export interface OfflineCount {
  subsCount: number
  clientsCount: number
}

/** brokerId -> last heartbeat (ms epoch), as in aedes' `broker.brokers`. */
export type BrokerHeartbeats = Readonly<Record<string, number>>

export interface SqlitePersistenceOptions {
  /** SQLite database file (created with its directory if missing). */
  file: string
}

// ---------------------------------------------------------------------------------------------
// The parent: aedes-persistence/asyncPersistence.js (CommonJS, no usable typings for a subclass)
// ---------------------------------------------------------------------------------------------

interface MemoryPersistence {
  readonly broker: PersistenceBroker | undefined
  setup(broker: PersistenceBroker): Promise<void>
  storeRetained(packet: PersistencePacket): Promise<void>
  createRetainedStream(pattern: string): Readable
  createRetainedStreamCombi(patterns: string[]): Readable
  addSubscriptions(client: PersistenceClient, subs: PersistenceSubscription[]): Promise<void>
  removeSubscriptions(client: PersistenceClient, topics: string[]): Promise<void>
  subscriptionsByClient(client: PersistenceClient): Promise<PersistenceSubscription[]>
  countOffline(): Promise<OfflineCount>
  subscriptionsByTopic(topic: string): Promise<TopicSubscription[]>
  cleanSubscriptions(client: PersistenceClient): Promise<void>
  outgoingEnqueue(sub: { clientId: string }, packet: PersistencePacket): Promise<void>
  outgoingEnqueueCombi(subs: ReadonlyArray<{ clientId: string }>, packet: PersistencePacket): Promise<void>
  outgoingUpdate(client: PersistenceClient, packet: PersistencePacket): Promise<void>
  outgoingClearMessageId(client: PersistenceClient, packet: PersistencePacket): Promise<PersistencePacket | undefined>
  outgoingStream(client: PersistenceClient): Readable
  incomingStorePacket(client: PersistenceClient, packet: PersistencePacket): Promise<void>
  incomingGetPacket(client: PersistenceClient, packet: PersistencePacket): Promise<PersistencePacket>
  incomingDelPacket(client: PersistenceClient, packet: PersistencePacket): Promise<void>
  cleanIncoming(client: PersistenceClient): Promise<void>
  putWill(client: PersistenceClient, packet: PersistencePacket): Promise<void>
  getWill(client: PersistenceClient): Promise<PersistenceWill | undefined>
  delWill(client: PersistenceClient): Promise<PersistenceWill | undefined>
  streamWill(brokers?: BrokerHeartbeats): Readable
  getClientList(topic: string): Readable
  destroy(): Promise<void>
}

type MemoryPersistenceCtor = new () => MemoryPersistence
type PacketCtor = new (original: PersistencePacket) => PersistencePacket

const require = createRequire(import.meta.url)
const MemoryPersistenceBase = require('aedes-persistence/asyncPersistence.js') as MemoryPersistenceCtor
// aedes-packet's Packet, as the parent uses it (re-exported by the package's main module).
const { Packet } = require('aedes-persistence') as { Packet: PacketCtor }

// ---------------------------------------------------------------------------------------------
// Packet codec
// ---------------------------------------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

// Tagged values are objects with exactly one of these keys; real keys starting with '$' are
// escaped with one more '$', so a tag can never be confused with data.
const TAG_UNDEFINED = '$u'
const TAG_BUFFER = '$b'
const TAG_NUMBER = '$n' // NaN / Infinity
const TAG_BIGINT = '$i'
const TAG_PAYLOAD = '$p' // the top-level payload, stored in the BLOB column
const TAGS = new Set([TAG_UNDEFINED, TAG_BUFFER, TAG_NUMBER, TAG_BIGINT, TAG_PAYLOAD])
const OMIT = Symbol('omit')

const escapeKey = (key: string): string => (key.startsWith('$') ? `$${key}` : key)
const unescapeKey = (key: string): string => (key.startsWith('$') ? key.slice(1) : key)

function encodeValue(value: unknown, seen: Set<object>): Json | typeof OMIT {
  switch (typeof value) {
    case 'undefined': return { [TAG_UNDEFINED]: 1 }
    case 'boolean':
    case 'string': return value
    case 'number': return Number.isFinite(value) ? value : { [TAG_NUMBER]: String(value) }
    case 'bigint': return { [TAG_BIGINT]: value.toString() }
    case 'function':
    case 'symbol': return OMIT
  }
  if (value === null) return null
  if (value instanceof Uint8Array) {
    return { [TAG_BUFFER]: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') }
  }
  const obj = value as object
  if (seen.has(obj)) throw new TypeError('cannot persist a packet with a circular reference')
  seen.add(obj)
  try {
    if (Array.isArray(obj)) {
      return obj.map((item: unknown) => {
        const enc = encodeValue(item, seen)
        return enc === OMIT ? null : enc
      })
    }
    const out: { [key: string]: Json } = {}
    for (const [key, item] of Object.entries(obj)) {
      const enc = encodeValue(item, seen)
      if (enc !== OMIT) out[escapeKey(key)] = enc
    }
    return out
  } finally {
    seen.delete(obj)
  }
}

function decodeValue(value: Json, payload: Buffer | null): unknown {
  if (value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map((item) => decodeValue(item, null))
  const keys = Object.keys(value)
  const tag = keys.length === 1 ? keys[0] : undefined
  if (tag !== undefined && TAGS.has(tag)) {
    const tagged = value[tag]
    switch (tag) {
      case TAG_UNDEFINED: return undefined
      case TAG_BUFFER: return Buffer.from(String(tagged), 'base64')
      case TAG_NUMBER: return Number(tagged)
      case TAG_BIGINT: return BigInt(String(tagged))
      case TAG_PAYLOAD: return payload ?? Buffer.alloc(0)
    }
  }
  const out: Record<string, unknown> = {}
  for (const key of keys) {
    const item = value[key]
    if (item !== undefined) out[unescapeKey(key)] = decodeValue(item, null)
  }
  return out
}

interface EncodedPacket {
  json: string
  payload: Buffer | null
}

/** Encodes a packet's own enumerable fields (minus `omit`); a binary payload goes to the BLOB. */
function encodePacket(packet: object, omit?: string): EncodedPacket {
  const doc: { [key: string]: Json } = {}
  let payload: Buffer | null = null
  const seen = new Set<object>([packet])
  for (const [key, value] of Object.entries(packet)) {
    if (key === omit) continue
    if (key === 'payload' && value instanceof Uint8Array) {
      payload = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)
      doc[escapeKey(key)] = { [TAG_PAYLOAD]: 1 }
      continue
    }
    const enc = encodeValue(value, seen)
    if (enc !== OMIT) doc[escapeKey(key)] = enc
  }
  return { json: JSON.stringify(doc), payload }
}

function decodePacket(json: string, payload: Buffer | null): PersistencePacket {
  const doc = JSON.parse(json) as Json
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new Error('corrupt persisted packet: not an object')
  }
  // The top level is decoded here (not by decodeValue) so that the payload tag is honoured only
  // for the `payload` field itself.
  const out: Record<string, unknown> = {}
  for (const [escaped, item] of Object.entries(doc)) {
    const key = unescapeKey(escaped)
    const isPayloadTag = key === 'payload' && item !== null && typeof item === 'object' && !Array.isArray(item) &&
      Object.keys(item).length === 1 && TAG_PAYLOAD in item
    out[key] = isPayloadTag ? (payload ?? Buffer.alloc(0)) : decodeValue(item, null)
  }
  return out as PersistencePacket
}

/** A value better-sqlite3 can bind, compared with `IS` the way the parent compares with `===`. */
type SqlKey = string | number | null
function sqlKey(value: unknown): SqlKey {
  return typeof value === 'string' || typeof value === 'number' ? value : null
}

/** rh / rap / nl are kept as JSON text so booleans, numbers and absence all round-trip. */
function jsonColumn(value: unknown): string | null {
  if (value === undefined) return null
  return JSON.stringify(value) ?? null
}
function fromJsonColumn<T>(text: string | null): T | undefined {
  return text === null ? undefined : JSON.parse(text) as T
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

const SCHEMA_VERSION = 2

/** Inbound QoS 2 publishes one client may have awaiting PUBREL (aedes 1.2.0's maxInflightInbound default). */
export const MAX_INBOUND_QOS2 = 1000

// Orders: the parent keeps Maps / arrays in insertion order, and an entry that is overwritten keeps
// its place. Rows are therefore upserted (ON CONFLICT DO UPDATE keeps the rowid) and read back by
// rowid. Table names are prefixed so the file could be shared with other gateway stores.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS mqtt_retained (
  topic   TEXT PRIMARY KEY,
  packet  TEXT NOT NULL,
  payload BLOB
);
CREATE TABLE IF NOT EXISTS mqtt_sub_clients (
  seq       INTEGER PRIMARY KEY,
  client_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS mqtt_subscriptions (
  seq       INTEGER PRIMARY KEY,
  client_id TEXT NOT NULL,
  topic     TEXT NOT NULL,
  qos       INTEGER NOT NULL,
  rh        TEXT,
  rap       TEXT,
  nl        TEXT,
  subscription_identifier INTEGER,
  UNIQUE (client_id, topic)
);
CREATE TABLE IF NOT EXISTS mqtt_outgoing (
  seq            INTEGER PRIMARY KEY,
  client_id      TEXT NOT NULL,
  broker_id      TEXT,
  broker_counter INTEGER,
  message_id     INTEGER,
  has_message_id INTEGER NOT NULL,
  packet         TEXT NOT NULL,
  payload        BLOB
);
CREATE INDEX IF NOT EXISTS mqtt_outgoing_by_client ON mqtt_outgoing (client_id, seq);
CREATE TABLE IF NOT EXISTS mqtt_incoming (
  client_id  TEXT NOT NULL,
  message_id TEXT NOT NULL,
  packet     TEXT NOT NULL,
  payload    BLOB,
  PRIMARY KEY (client_id, message_id)
);
CREATE TABLE IF NOT EXISTS mqtt_wills (
  client_id TEXT PRIMARY KEY,
  broker_id TEXT,
  packet    TEXT NOT NULL,
  payload   BLOB
);
-- Who a client id's persistent session belongs to (the broker's principal key): only that identity may resume it.
CREATE TABLE IF NOT EXISTS mqtt_session_owners (
  client_id TEXT PRIMARY KEY,
  owner     TEXT NOT NULL
);
-- MQTT 5 Session Expiry: when a disconnected session ends (ms epoch); no row: connected, or it never expires.
CREATE TABLE IF NOT EXISTS mqtt_session_expiry (
  client_id  TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL
);
`

function migrate(db: Db): void {
  const version = db.pragma('user_version', { simple: true }) as number
  if (version > SCHEMA_VERSION) {
    throw new Error(`broker persistence schema version ${version} is newer than this gateway (${SCHEMA_VERSION})`)
  }
  db.transaction(() => {
    db.exec(SCHEMA)
    db.pragma(`user_version = ${SCHEMA_VERSION}`)
  })()
}

interface PacketRow { packet: string; payload: Buffer | null }
interface SubRow {
  topic: string
  qos: number
  rh: string | null
  rap: string | null
  nl: string | null
  subscription_identifier: number | null
}
interface OutgoingRow extends PacketRow {
  client_id: string
  message_id: number | null
  has_message_id: number
}
interface OutgoingMatch { seq: number; broker_id: string | null }
type Blob = Buffer | null

interface Statements {
  retainedUpsert: Statement<[string, string, Blob]>
  retainedDelete: Statement<[string]>
  subClientAdd: Statement<[string]>
  subClientDropIfEmpty: Statement<[string, string]>
  subClientDelete: Statement<[string]>
  subUpsert: Statement<[string, string, number, string | null, string | null, string | null, number | null]>
  subDelete: Statement<[string, string]>
  subDeleteClient: Statement<[string]>
  subTopics: Statement<[]>
  outInsert: Statement<[string, SqlKey, SqlKey, SqlKey, number, string, Blob]>
  outFindForUpdate: Statement<[string, SqlKey, SqlKey, SqlKey, SqlKey], OutgoingMatch>
  outSetMessageId: Statement<[SqlKey, number]>
  outReplace: Statement<[SqlKey, SqlKey, SqlKey, number, string, Blob, number]>
  outDeleteByMessageId: Statement<[string, SqlKey]>
  incomingUpsert: Statement<[string, string, string, Blob]>
  incomingDelete: Statement<[string, string]>
  incomingDeleteClient: Statement<[string]>
  willUpsert: Statement<[string, SqlKey, string, Blob]>
  willDelete: Statement<[string]>
  ownerUpsert: Statement<[string, string]>
  ownerDelete: Statement<[string]>
  expiryUpsert: Statement<[string, number]>
  expiryDelete: Statement<[string]>
  outgoingDeleteClient: Statement<[string]>
}

function prepareStatements(db: Db): Statements {
  return {
    retainedUpsert: db.prepare(`INSERT INTO mqtt_retained (topic, packet, payload) VALUES (?, ?, ?)
      ON CONFLICT (topic) DO UPDATE SET packet = excluded.packet, payload = excluded.payload`),
    retainedDelete: db.prepare('DELETE FROM mqtt_retained WHERE topic = ?'),
    subClientAdd: db.prepare('INSERT OR IGNORE INTO mqtt_sub_clients (client_id) VALUES (?)'),
    subClientDropIfEmpty: db.prepare(`DELETE FROM mqtt_sub_clients WHERE client_id = ?
      AND NOT EXISTS (SELECT 1 FROM mqtt_subscriptions WHERE client_id = ?)`),
    subClientDelete: db.prepare('DELETE FROM mqtt_sub_clients WHERE client_id = ?'),
    subUpsert: db.prepare(`INSERT INTO mqtt_subscriptions (client_id, topic, qos, rh, rap, nl, subscription_identifier)
      VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (client_id, topic) DO UPDATE SET qos = excluded.qos, rh = excluded.rh, rap = excluded.rap,
        nl = excluded.nl, subscription_identifier = excluded.subscription_identifier`),
    subDelete: db.prepare('DELETE FROM mqtt_subscriptions WHERE client_id = ? AND topic = ?'),
    subDeleteClient: db.prepare('DELETE FROM mqtt_subscriptions WHERE client_id = ?'),
    subTopics: db.prepare('SELECT DISTINCT topic FROM mqtt_subscriptions').pluck(),
    outInsert: db.prepare(`INSERT INTO mqtt_outgoing
      (client_id, broker_id, broker_counter, message_id, has_message_id, packet, payload) VALUES (?, ?, ?, ?, ?, ?, ?)`),
    // The parent's outgoingUpdate loop, in SQL: the first queued entry that has the same brokerId
    // and brokerCounter, or a different brokerId and the same messageId (`IS` = null-safe `===`).
    outFindForUpdate: db.prepare(`SELECT seq, broker_id FROM mqtt_outgoing WHERE client_id = ?
      AND ((broker_id IS ? AND broker_counter IS ?) OR (broker_id IS NOT ? AND message_id IS ?))
      ORDER BY seq LIMIT 1`),
    outSetMessageId: db.prepare('UPDATE mqtt_outgoing SET message_id = ?, has_message_id = 1 WHERE seq = ?'),
    outReplace: db.prepare(`UPDATE mqtt_outgoing SET broker_id = ?, broker_counter = ?, message_id = ?,
      has_message_id = ?, packet = ?, payload = ? WHERE seq = ?`),
    outDeleteByMessageId: db.prepare(`DELETE FROM mqtt_outgoing WHERE seq =
      (SELECT seq FROM mqtt_outgoing WHERE client_id = ? AND message_id IS ? ORDER BY seq LIMIT 1)`),
    incomingUpsert: db.prepare(`INSERT INTO mqtt_incoming (client_id, message_id, packet, payload) VALUES (?, ?, ?, ?)
      ON CONFLICT (client_id, message_id) DO UPDATE SET packet = excluded.packet, payload = excluded.payload`),
    incomingDelete: db.prepare('DELETE FROM mqtt_incoming WHERE client_id = ? AND message_id = ?'),
    incomingDeleteClient: db.prepare('DELETE FROM mqtt_incoming WHERE client_id = ?'),
    willUpsert: db.prepare(`INSERT INTO mqtt_wills (client_id, broker_id, packet, payload) VALUES (?, ?, ?, ?)
      ON CONFLICT (client_id) DO UPDATE SET broker_id = excluded.broker_id, packet = excluded.packet,
        payload = excluded.payload`),
    willDelete: db.prepare('DELETE FROM mqtt_wills WHERE client_id = ?'),
    ownerUpsert: db.prepare(`INSERT INTO mqtt_session_owners (client_id, owner) VALUES (?, ?)
      ON CONFLICT (client_id) DO UPDATE SET owner = excluded.owner`),
    ownerDelete: db.prepare('DELETE FROM mqtt_session_owners WHERE client_id = ?'),
    expiryUpsert: db.prepare(`INSERT INTO mqtt_session_expiry (client_id, expires_at) VALUES (?, ?)
      ON CONFLICT (client_id) DO UPDATE SET expires_at = excluded.expires_at`),
    expiryDelete: db.prepare('DELETE FROM mqtt_session_expiry WHERE client_id = ?'),
    outgoingDeleteClient: db.prepare('DELETE FROM mqtt_outgoing WHERE client_id = ?'),
  }
}

const hasOwn = (obj: object, key: string): boolean => Object.prototype.hasOwnProperty.call(obj, key)

/** The entry of an outgoing queue as the parent holds it, encoded for a row (messageId apart). */
function outgoingColumns(entry: PersistencePacket): [SqlKey, SqlKey, SqlKey, number, string, Blob] {
  const { json, payload } = encodePacket(entry, 'messageId')
  return [sqlKey(entry.brokerId), sqlKey(entry.brokerCounter), sqlKey(entry.messageId),
    hasOwn(entry, 'messageId') ? 1 : 0, json, payload]
}

/** Makes `target` own exactly the fields of `source` (the object identity, hence its place, stays). */
function reshape(target: object, source: object): void {
  const t = target as Record<string, unknown>
  for (const key of Object.keys(t)) {
    if (!hasOwn(source, key)) Reflect.deleteProperty(t, key)
  }
  Object.assign(t, source)
}

// ---------------------------------------------------------------------------------------------
// SqlitePersistence
// ---------------------------------------------------------------------------------------------

/**
 * aedes persistence: the stock in-memory persistence, written through to SQLite (synchronous=FULL)
 * and restored from it by setup(). One instance per broker; the database file must not be shared
 * by two live brokers. aedes does not destroy its persistence on close(): call destroy() after
 * broker.close().
 */
export class SqlitePersistence extends MemoryPersistenceBase {
  readonly file: string
  #db: Db | undefined
  #stmt: Statements | undefined
  #telemetryWatched: boolean | null = null
  /** client id -> owner of its persistent session, as in mqtt_session_owners (read once at setup). */
  readonly #owners = new Map<string, string>()
  /** client id -> message ids of its inbound QoS 2 publishes awaiting PUBREL (bounded: see incomingStorePacket). */
  readonly #incoming = new Map<string, Set<string>>()
  /** client id -> when its disconnected MQTT 5 session expires (ms epoch), as in mqtt_session_expiry. */
  readonly #expiry = new Map<string, number>()

  constructor(opts: SqlitePersistenceOptions) {
    super()
    if (typeof opts?.file !== 'string' || opts.file === '') {
      throw new TypeError('SqlitePersistence: options.file must be a non-empty path')
    }
    this.file = opts.file
  }

  /** Opens the database and restores the saved state into memory; aedes requires it to be async. */
  override async setup(broker: PersistenceBroker): Promise<void> {
    if (this.#db) throw new Error('SqlitePersistence: setup() called twice')
    await super.setup(broker)
    const db = openDatabase(this.file, { synchronous: 'FULL' })
    try {
      migrate(db)
      this.#stmt = prepareStatements(db)
      await this.#restore(db)
    } catch (err) {
      this.#stmt = undefined
      db.close()
      throw err
    }
    this.#db = db
    this.#telemetryWatched = null
    // MQTT 5 sessions that expired while the gateway was down are gone now (their wills stay: aedes publishes them)
    for (const id of this.expiredSessions(Date.now())) await this.purgeClient(id, { keepWill: true })
  }

  /**
   * Whether any stored subscription (live or of an offline persistent session) can match a telemetry topic; cached
   * until the subscriptions change.
   */
  get telemetryWatched(): boolean {
    if (this.#telemetryWatched === null) {
      const topics = this.#ready().stmt.subTopics.all() as string[]
      this.#telemetryWatched = topics.some(mayMatchTelemetry)
    }
    return this.#telemetryWatched
  }

  override async destroy(): Promise<void> {
    const db = this.#db
    this.#db = undefined
    this.#stmt = undefined
    try {
      await super.destroy()
    } finally {
      if (db?.open) db.close()
    }
  }

  // --- retained ------------------------------------------------------------------------------

  override async storeRetained(packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.storeRetained(packet)
    const topic = String(packet.topic)
    if (packet.payload?.length === 0) {
      stmt.retainedDelete.run(topic)
    } else {
      const { json, payload } = encodePacket(packet)
      stmt.retainedUpsert.run(topic, json, payload)
    }
  }

  // --- subscriptions ---------------------------------------------------------------------------

  override async addSubscriptions(client: PersistenceClient, subs: PersistenceSubscription[]): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.addSubscriptions(client, subs)
    db.transaction(() => {
      stmt.subClientAdd.run(client.id)
      for (const sub of subs) {
        stmt.subUpsert.run(client.id, sub.topic, sub.qos, jsonColumn(sub.rh), jsonColumn(sub.rap), jsonColumn(sub.nl),
          typeof sub.subscriptionIdentifier === 'number' ? sub.subscriptionIdentifier : null)
      }
    })()
    this.#telemetryWatched = null
  }

  override async removeSubscriptions(client: PersistenceClient, topics: string[]): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.removeSubscriptions(client, topics)
    db.transaction(() => {
      for (const topic of topics) stmt.subDelete.run(client.id, topic)
      stmt.subClientDropIfEmpty.run(client.id, client.id)
    })()
    this.#telemetryWatched = null
  }

  override async cleanSubscriptions(client: PersistenceClient): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.cleanSubscriptions(client)
    db.transaction(() => {
      stmt.subDeleteClient.run(client.id)
      stmt.subClientDelete.run(client.id)
    })()
    this.#telemetryWatched = null
  }

  // --- outgoing queue --------------------------------------------------------------------------

  override async outgoingEnqueue(sub: { clientId: string }, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.outgoingEnqueue(sub, packet)
    // The parent queues `new Packet(packet)`: persist that very shape.
    stmt.outInsert.run(sub.clientId, ...outgoingColumns(new Packet(packet)))
  }

  override async outgoingEnqueueCombi(subs: ReadonlyArray<{ clientId: string }>, packet: PersistencePacket): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.outgoingEnqueueCombi(subs, packet)
    if (subs.length === 0) return
    const columns = outgoingColumns(new Packet(packet))
    db.transaction(() => {
      for (const sub of subs) stmt.outInsert.run(sub.clientId, ...columns)
    })()
  }

  override async outgoingUpdate(client: PersistenceClient, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.outgoingUpdate(client, packet) // rejects with 'no such packet' when nothing matched
    const brokerId = sqlKey(packet.brokerId)
    const messageId = sqlKey(packet.messageId)
    const match = stmt.outFindForUpdate.get(client.id, brokerId, sqlKey(packet.brokerCounter), brokerId, messageId)
    if (!match) return // memory and disk disagree (an earlier write failed): memory stays authoritative
    if (match.broker_id === brokerId) {
      stmt.outSetMessageId.run(messageId, match.seq) // same message: the messageId was assigned
    } else {
      stmt.outReplace.run(...outgoingColumns(packet), match.seq) // e.g. the publish became its pubrel
    }
  }

  override async outgoingClearMessageId(client: PersistenceClient, packet: PersistencePacket): Promise<PersistencePacket | undefined> {
    const { stmt } = this.#ready()
    const removed = await super.outgoingClearMessageId(client, packet)
    if (removed !== undefined) stmt.outDeleteByMessageId.run(client.id, sqlKey(packet?.messageId))
    return removed
  }

  // --- incoming QoS 2 ----------------------------------------------------------------------------

  override async incomingStorePacket(client: PersistenceClient, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    // aedes 1.2.0 bounded this (maxInflightInbound, 1000); the 2.0 line does not: a client that sends fresh QoS 2
    // packet ids and withholds PUBREL would grow this table without end. Refused, aedes closes the connection.
    // The slot is taken before the await: aedes handles every packet of one socket read concurrently, so a check
    // here and a count after it would let a whole chunk through (aedes' own first fix had that flaw, see
    // GHSA-5jvp-3p2v-5qgf); keyed by packet id, a DUP retransmission takes no second slot.
    const key = String(packet.messageId)
    let ids = this.#incoming.get(client.id)
    const fresh = !ids?.has(key)
    if (ids && fresh && ids.size >= MAX_INBOUND_QOS2) {
      throw new Error(`more than ${MAX_INBOUND_QOS2} inbound QoS 2 messages awaiting PUBREL`)
    }
    if (!ids) this.#incoming.set(client.id, ids = new Set())
    ids.add(key)
    try {
      await super.incomingStorePacket(client, packet)
    } catch (err) {
      if (fresh) ids.delete(key)
      throw err
    }
    const stored = new Packet(packet)
    stored.messageId = packet.messageId
    const { json, payload } = encodePacket(stored)
    // The parent keys the client's packets by `store[messageId]`, i.e. by String(messageId).
    stmt.incomingUpsert.run(client.id, String(packet.messageId), json, payload)
  }

  override async incomingDelPacket(client: PersistenceClient, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.incomingDelPacket(client, packet) // rejects with 'no such packet'
    stmt.incomingDelete.run(client.id, String(packet.messageId))
    const ids = this.#incoming.get(client.id)
    if (ids?.delete(String(packet.messageId)) && ids.size === 0) this.#incoming.delete(client.id)
  }

  override async cleanIncoming(client: PersistenceClient): Promise<void> {
    const { stmt } = this.#ready()
    await super.cleanIncoming(client)
    stmt.incomingDeleteClient.run(client.id)
    this.#incoming.delete(client.id)
  }

  /** Inbound QoS 2 publishes of a client id awaiting PUBREL. */
  incomingCount(clientId: string): number { return this.#incoming.get(clientId)?.size ?? 0 }

  // --- wills ---------------------------------------------------------------------------------

  override async putWill(client: PersistenceClient, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.putWill(client, packet) // stamps packet.brokerId and packet.clientId
    const { json, payload } = encodePacket(packet)
    stmt.willUpsert.run(client.id, sqlKey(packet.brokerId), json, payload)
  }

  override async delWill(client: PersistenceClient): Promise<PersistenceWill | undefined> {
    const { stmt } = this.#ready()
    const will = await super.delWill(client)
    stmt.willDelete.run(client.id)
    return will
  }

  // --- session owners and purging (not part of aedes' interface) -------------------------------

  /** The principal a client id's persistent session belongs to, if one was recorded. */
  sessionOwner(clientId: string): string | undefined { return this.#owners.get(clientId) }

  /** Records the owner; writes only when it changes (this runs on the broker thread at CONNECT). */
  setSessionOwner(clientId: string, owner: string): void {
    if (this.#owners.get(clientId) === owner) return
    this.#ready().stmt.ownerUpsert.run(clientId, owner)
    this.#owners.set(clientId, owner)
  }

  /**
   * MQTT 5 Session Expiry: when the (now disconnected) session of a client id ends; null: it is connected again, or
   * never expires. Writes only when it changes.
   */
  setSessionExpiry(clientId: string, expiresAt: number | null): void {
    if (expiresAt === null) {
      if (!this.#expiry.has(clientId)) return
      this.#ready().stmt.expiryDelete.run(clientId)
      this.#expiry.delete(clientId)
      return
    }
    if (this.#expiry.get(clientId) === expiresAt) return
    this.#ready().stmt.expiryUpsert.run(clientId, expiresAt)
    this.#expiry.set(clientId, expiresAt)
  }

  /** Client ids whose session expiry is at or before `now`. */
  expiredSessions(now: number): string[] {
    const out: string[] = []
    for (const [id, at] of this.#expiry) if (at <= now) out.push(id)
    return out
  }

  /** Client ids whose stored session belongs to `owner`. */
  sessionsOwnedBy(owner: string): string[] {
    return [...this.#owners].filter(([, o]) => o === owner).map(([id]) => id)
  }

  /** Client ids that have any stored state (subscriptions, queued messages, a will, an owner). */
  storedClientIds(): string[] {
    const { db } = this.#ready()
    return db.prepare<[], string>(`SELECT client_id FROM mqtt_sub_clients UNION SELECT client_id FROM mqtt_outgoing
      UNION SELECT client_id FROM mqtt_wills UNION SELECT client_id FROM mqtt_session_owners`).pluck().all()
  }

  /**
   * Forgets everything stored for a client id: subscriptions, queued messages, inbound QoS 2 state, its will and its
   * owner (a revoked identity's session must not be delivered to whoever gets that name next).
   */
  async purgeClient(clientId: string, opts: { keepWill?: boolean } = {}): Promise<void> {
    const { db, stmt } = this.#ready()
    const client = { id: clientId }
    await super.cleanSubscriptions(client)
    await super.cleanIncoming(client)
    if (!opts.keepWill) await super.delWill(client)
    // The parent has no "drop this queue": give every queued entry (the very objects it holds) a message id of its
    // own, outside MQTT's 1..65535, and clear it by that id.
    const queued = await super.outgoingStream(client).toArray() as PersistencePacket[]
    let n = 0
    for (const entry of queued) {
      entry.messageId = -(++n)
      await super.outgoingClearMessageId(client, { messageId: entry.messageId })
    }
    db.transaction(() => {
      stmt.subDeleteClient.run(clientId)
      stmt.subClientDelete.run(clientId)
      stmt.incomingDeleteClient.run(clientId)
      if (!opts.keepWill) stmt.willDelete.run(clientId)
      stmt.outgoingDeleteClient.run(clientId)
      stmt.ownerDelete.run(clientId)
      stmt.expiryDelete.run(clientId)
    })()
    this.#owners.delete(clientId)
    this.#expiry.delete(clientId)
    this.#incoming.delete(clientId)
    this.#telemetryWatched = null
  }

  // --- internals -----------------------------------------------------------------------------

  #ready(): { db: Db; stmt: Statements } {
    const db = this.#db
    const stmt = this.#stmt
    if (!db || !stmt) throw new Error('SqlitePersistence: not set up (call setup() first) or already destroyed')
    return { db, stmt }
  }

  /** Replays the saved state through the parent's methods (no write-through: super, not this). */
  async #restore(db: Db): Promise<void> {
    const retained = db.prepare<[], PacketRow>('SELECT packet, payload FROM mqtt_retained ORDER BY rowid').all()
    for (const row of retained) await super.storeRetained(decodePacket(row.packet, row.payload))

    const clients = db.prepare<[], { client_id: string }>('SELECT client_id FROM mqtt_sub_clients ORDER BY seq').all()
    const subsOf = db.prepare<[string], SubRow>(`SELECT topic, qos, rh, rap, nl, subscription_identifier
      FROM mqtt_subscriptions WHERE client_id = ? ORDER BY seq`)
    for (const { client_id: id } of clients) {
      const subs = subsOf.all(id).map((row): PersistenceSubscription => {
        const sub: PersistenceSubscription = {
          topic: row.topic,
          qos: row.qos as QoS,
          rh: fromJsonColumn<number>(row.rh),
          rap: fromJsonColumn<boolean>(row.rap),
          nl: fromJsonColumn<boolean>(row.nl),
        }
        if (row.subscription_identifier !== null) sub.subscriptionIdentifier = row.subscription_identifier
        return sub
      })
      await super.addSubscriptions({ id }, subs)
    }

    // Outgoing queues: the parent only builds entries as `new Packet(x)` (enqueue) or stores the
    // object given to outgoingUpdate (replace). Replaying the public calls cannot reproduce every
    // queue exactly (the update loop would match earlier entries), so each entry is enqueued and
    // then reshaped in place through the references outgoingStream yields (a shallow copy of the
    // parent's array: same objects), to own exactly the saved fields (incl. messageId).
    const outgoing = db.prepare<[], OutgoingRow>(`SELECT client_id, message_id, has_message_id, packet, payload
      FROM mqtt_outgoing ORDER BY client_id, seq`).all()
    const queues = new Map<string, PersistencePacket[]>()
    for (const row of outgoing) {
      const entry = decodePacket(row.packet, row.payload)
      if (row.has_message_id) entry.messageId = row.message_id ?? undefined
      let queue = queues.get(row.client_id)
      if (!queue) queues.set(row.client_id, queue = [])
      queue.push(entry)
    }
    for (const [clientId, entries] of queues) {
      for (const entry of entries) await super.outgoingEnqueue({ clientId }, entry)
      const live = await super.outgoingStream({ id: clientId }).toArray() as object[]
      if (live.length !== entries.length) {
        throw new Error(`restoring the outgoing queue of ${clientId}: ${live.length} entries in memory, ${entries.length} saved`)
      }
      entries.forEach((entry, i) => reshape(live[i] as object, entry))
    }

    const incoming = db.prepare<[], PacketRow & { client_id: string }>(
      'SELECT client_id, packet, payload FROM mqtt_incoming ORDER BY rowid').all()
    for (const row of incoming) {
      const packet = decodePacket(row.packet, row.payload)
      await super.incomingStorePacket({ id: row.client_id }, packet)
      let ids = this.#incoming.get(row.client_id)
      if (!ids) this.#incoming.set(row.client_id, ids = new Set())
      ids.add(String(packet.messageId))
    }

    for (const row of db.prepare<[], { client_id: string; owner: string }>('SELECT client_id, owner FROM mqtt_session_owners').all()) {
      this.#owners.set(row.client_id, row.owner)
    }
    for (const row of db.prepare<[], { client_id: string; expires_at: number }>('SELECT client_id, expires_at FROM mqtt_session_expiry').all()) {
      this.#expiry.set(row.client_id, row.expires_at)
    }

    // putWill stamps the current broker's id; the saved one is put back, so that a will left by a
    // broker that died is recognised as orphaned (aedes publishes wills of brokers not alive).
    const wills = db.prepare<[], PacketRow & { client_id: string }>(
      'SELECT client_id, packet, payload FROM mqtt_wills ORDER BY rowid').all()
    for (const row of wills) {
      const will = decodePacket(row.packet, row.payload)
      const savedBrokerId = will.brokerId
      await super.putWill({ id: row.client_id }, will)
      const live = await super.getWill({ id: row.client_id })
      if (live) live.brokerId = savedBrokerId as string
    }
  }
}
