// Durable persistence for the embedded aedes broker.
//
// SqlitePersistence IS the in-memory persistence of aedes-persistence (the retained map, the subscription trie, the
// per-client queues ..., reached through memory-adapter.ts), extended so that every change is also written to SQLite,
// and so that setup() first rebuilds the in-memory state from the database. Reads are served from memory, exactly as
// the stock persistence serves them; SQLite is only read once, at setup().
//
// Rules this file keeps:
// - The parent's state is in JS private fields: it is reached only through the parent's public methods (super.*)
//   and the adapter's helpers, and restored by replaying them (so the trie, the counters etc. are rebuilt by the
//   parent's own code).
// - Every mutating method awaits exactly one super call (which settles synchronously: see memory-adapter.ts) and then
//   writes synchronously. Writes therefore reach SQLite in the order the mutations reached memory, whatever the
//   interleaving of callers. A rejected super call (e.g. 'no such packet') writes nothing.
// - Packets are stored by codec.ts: a JSON document of their own enumerable fields plus the publish payload as a BLOB.
import { openDatabase, type Db } from '../../store/sqlite.ts'
import { WalSync } from '../../store/wal-sync.ts'
import { keepRetainedDeadline } from '../aedes-adapter.ts'
import { mayMatchTelemetry } from '../policy.ts'
import { decodePacket, encodePacket, fromJsonColumn, jsonColumn } from './codec.ts'
import {
  MemoryPersistence, dropOutgoingQueue, queuedShape, restoreOutgoingQueue, restoreWill,
} from './memory-adapter.ts'
import { migrate, prepareStatements, sqlKey, type OutgoingColumns, type Statements } from './schema.ts'
import type {
  PersistenceBroker, PersistenceClient, PersistencePacket, PersistenceSubscription, PersistenceWill, QoS,
} from './types.ts'

/** Inbound QoS 2 publishes one client may have awaiting PUBREL (aedes 1.2.0's maxInflightInbound default). */
export const MAX_INBOUND_QOS2 = 1000

export interface SqlitePersistenceOptions {
  /** SQLite database file (created with its directory if missing). */
  file: string
}

const asPacket = (json: string, payload: Buffer | null): PersistencePacket => decodePacket(json, payload) as PersistencePacket

/** The entry of an outgoing queue as the parent holds it, encoded for a row (messageId apart). */
function outgoingColumns(entry: PersistencePacket): OutgoingColumns {
  const { json, payload } = encodePacket(entry, 'messageId')
  return [sqlKey(entry.brokerId), sqlKey(entry.brokerCounter), sqlKey(entry.messageId),
    Object.hasOwn(entry, 'messageId') ? 1 : 0, json, payload]
}

/**
 * aedes persistence: the stock in-memory persistence, written through to SQLite and restored from it by setup().
 * Durable without blocking the broker's thread: commits run at synchronous=NORMAL and each mutating method resolves
 * only once WalSync (gateway/store/wal-sync.ts) has fdatasynced the WAL on libuv's pool, so aedes answers a
 * SUBSCRIBE, an inbound QoS 2 message (PUBREC, PUBCOMP) or a CONNECT with a will after it is on disk, as with FULL.
 * What nobody is answered on (retained messages, the outgoing queues, session owners and expiries) is synced right
 * after its write without holding its caller up (see storeRetained and the outgoing queue). One instance per broker; the database file must not be shared
 * by two live brokers. aedes does not destroy its persistence on close(): call destroy() after
 * broker.close().
 */
export class SqlitePersistence extends MemoryPersistence {
  readonly file: string
  #db: Db | undefined
  #stmt: Statements | undefined
  #telemetryWatched: boolean | null = null
  #sync: WalSync | undefined
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
    // NORMAL: a commit does not wait for the disk on the broker's thread; #durable() syncs the WAL off it
    const db = openDatabase(this.file, { synchronous: 'NORMAL' })
    this.#sync = new WalSync(`${this.file}-wal`)
    try {
      migrate(db)
      this.#stmt = prepareStatements(db)
      await this.#restore(this.#stmt)
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
      const topics = this.#ready().stmt.subTopics.all()
      this.#telemetryWatched = topics.some(mayMatchTelemetry)
    }
    return this.#telemetryWatched
  }

  override async destroy(): Promise<void> {
    const db = this.#db
    this.#db = undefined
    this.#stmt = undefined
    await this.#sync?.idle()
    try {
      await super.destroy()
    } finally {
      if (db?.open) db.close()
    }
  }

  // --- retained ------------------------------------------------------------------------------

  override async storeRetained(packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.storeRetained(keepRetainedDeadline(packet))
    const topic = String(packet.topic)
    // Not waited for: aedes stores a retained message inside the publish series of the message it retains, and a
    // later message of the same publisher that retains nothing would overtake it in its subscribers' queues while it
    // waited (aedes 2 PUBACKs QoS 1 before that series, so nothing is acknowledged on it either). Synced right after.
    if (packet.payload?.length === 0) {
      this.#background(stmt.retainedDelete.run(topic).changes)
    } else {
      const { json, payload } = encodePacket(packet)
      this.#background(stmt.retainedUpsert.run(topic, json, payload).changes)
    }
  }

  // --- subscriptions ---------------------------------------------------------------------------

  override async addSubscriptions(client: PersistenceClient, subs: PersistenceSubscription[]): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.addSubscriptions(client, subs)
    const changes = db.transaction(() => {
      let n = stmt.subClientAdd.run(client.id).changes
      for (const sub of subs) {
        n += stmt.subUpsert.run(client.id, sub.topic, sub.qos, jsonColumn(sub.rh), jsonColumn(sub.rap), jsonColumn(sub.nl),
          typeof sub.subscriptionIdentifier === 'number' ? sub.subscriptionIdentifier : null).changes
      }
      return n
    })()
    this.#telemetryWatched = null
    await this.#durable(changes)
  }

  override async removeSubscriptions(client: PersistenceClient, topics: string[]): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.removeSubscriptions(client, topics)
    const changes = db.transaction(() => {
      let n = 0
      for (const topic of topics) n += stmt.subDelete.run(client.id, topic).changes
      return n + stmt.subClientDropIfEmpty.run(client.id, client.id).changes
    })()
    this.#telemetryWatched = null
    await this.#durable(changes)
  }

  override async cleanSubscriptions(client: PersistenceClient): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.cleanSubscriptions(client)
    const changes = db.transaction(() => stmt.subDeleteClient.run(client.id).changes + stmt.subClientDelete.run(client.id).changes)()
    this.#telemetryWatched = null
    await this.#durable(changes)
  }

  // --- outgoing queue --------------------------------------------------------------------------
  // Synced right after, not waited for: aedes answers the publisher before it queues (its QoS 1 PUBACK precedes the
  // publish series), so nobody is answered on these writes, and a queue write that waited for the disk would widen the
  // gap between queueing a message and emitting it live: a subscriber reconnecting in between got it twice.

  override async outgoingEnqueue(sub: { clientId: string }, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.outgoingEnqueue(sub, packet)
    // The parent queues `new Packet(packet)`: persist that very shape.
    this.#background(stmt.outInsert.run(sub.clientId, ...outgoingColumns(queuedShape(packet))).changes)
  }

  override async outgoingEnqueueCombi(subs: ReadonlyArray<{ clientId: string }>, packet: PersistencePacket): Promise<void> {
    const { db, stmt } = this.#ready()
    await super.outgoingEnqueueCombi(subs, packet)
    if (subs.length === 0) return
    const columns = outgoingColumns(queuedShape(packet))
    db.transaction(() => {
      for (const sub of subs) stmt.outInsert.run(sub.clientId, ...columns)
    })()
    this.#background(subs.length)
  }

  override async outgoingUpdate(client: PersistenceClient, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.outgoingUpdate(client, packet) // rejects with 'no such packet' when nothing matched
    const brokerId = sqlKey(packet.brokerId)
    const messageId = sqlKey(packet.messageId)
    const match = stmt.outFindForUpdate.get(client.id, brokerId, sqlKey(packet.brokerCounter), brokerId, messageId)
    if (!match) return // memory and disk disagree (an earlier write failed): memory stays authoritative
    const changes = match.broker_id === brokerId
      ? stmt.outSetMessageId.run(messageId, match.seq).changes // same message: the messageId was assigned
      : stmt.outReplace.run(...outgoingColumns(packet), match.seq).changes // e.g. the publish became its pubrel
    this.#background(changes)
  }

  override async outgoingClearMessageId(client: PersistenceClient, packet: PersistencePacket): Promise<PersistencePacket | undefined> {
    const { stmt } = this.#ready()
    const removed = await super.outgoingClearMessageId(client, packet)
    if (removed !== undefined) this.#background(stmt.outDeleteByMessageId.run(client.id, sqlKey(packet?.messageId)).changes)
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
    const stored = queuedShape(packet)
    stored.messageId = packet.messageId
    const { json, payload } = encodePacket(stored)
    // The parent keys the client's packets by `store[messageId]`, i.e. by String(messageId).
    await this.#durable(stmt.incomingUpsert.run(client.id, String(packet.messageId), json, payload).changes)
  }

  override async incomingDelPacket(client: PersistenceClient, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.incomingDelPacket(client, packet) // rejects with 'no such packet'
    const changes = stmt.incomingDelete.run(client.id, String(packet.messageId)).changes
    const ids = this.#incoming.get(client.id)
    if (ids?.delete(String(packet.messageId)) && ids.size === 0) this.#incoming.delete(client.id)
    await this.#durable(changes)
  }

  override async cleanIncoming(client: PersistenceClient): Promise<void> {
    const { stmt } = this.#ready()
    await super.cleanIncoming(client)
    const changes = stmt.incomingDeleteClient.run(client.id).changes
    this.#incoming.delete(client.id)
    await this.#durable(changes)
  }

  /** Inbound QoS 2 publishes of a client id awaiting PUBREL. */
  incomingCount(clientId: string): number { return this.#incoming.get(clientId)?.size ?? 0 }

  // --- wills ---------------------------------------------------------------------------------

  override async putWill(client: PersistenceClient, packet: PersistencePacket): Promise<void> {
    const { stmt } = this.#ready()
    await super.putWill(client, packet) // stamps packet.brokerId and packet.clientId
    const { json, payload } = encodePacket(packet)
    await this.#durable(stmt.willUpsert.run(client.id, sqlKey(packet.brokerId), json, payload).changes)
  }

  override async delWill(client: PersistenceClient): Promise<PersistenceWill | undefined> {
    const { stmt } = this.#ready()
    const will = await super.delWill(client)
    await this.#durable(stmt.willDelete.run(client.id).changes)
    return will
  }

  // --- session owners and purging (not part of aedes' interface) -------------------------------

  /** The principal a client id's persistent session belongs to, if one was recorded. */
  sessionOwner(clientId: string): string | undefined { return this.#owners.get(clientId) }

  /** Records the owner; writes only when it changes (this runs on the broker thread at CONNECT). */
  setSessionOwner(clientId: string, owner: string): void {
    if (this.#owners.get(clientId) === owner) return
    this.#background(this.#ready().stmt.ownerUpsert.run(clientId, owner).changes)
    this.#owners.set(clientId, owner)
  }

  /**
   * MQTT 5 Session Expiry: when the (now disconnected) session of a client id ends; null: it is connected again, or
   * never expires. Writes only when it changes.
   */
  setSessionExpiry(clientId: string, expiresAt: number | null): void {
    if (expiresAt === null) {
      if (!this.#expiry.has(clientId)) return
      this.#background(this.#ready().stmt.expiryDelete.run(clientId).changes)
      this.#expiry.delete(clientId)
      return
    }
    if (this.#expiry.get(clientId) === expiresAt) return
    this.#background(this.#ready().stmt.expiryUpsert.run(clientId, expiresAt).changes)
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
    return this.#ready().stmt.storedClientIds.all()
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
    await dropOutgoingQueue(this, clientId)
    const changes = db.transaction(() =>
      stmt.subDeleteClient.run(clientId).changes +
      stmt.subClientDelete.run(clientId).changes +
      stmt.incomingDeleteClient.run(clientId).changes +
      (opts.keepWill ? 0 : stmt.willDelete.run(clientId).changes) +
      stmt.outgoingDeleteClient.run(clientId).changes +
      stmt.ownerDelete.run(clientId).changes +
      stmt.expiryDelete.run(clientId).changes)()
    this.#owners.delete(clientId)
    this.#expiry.delete(clientId)
    this.#incoming.delete(clientId)
    this.#telemetryWatched = null
    await this.#durable(changes)
  }

  // --- internals -----------------------------------------------------------------------------

  /** Resolves once a write that changed `changes` rows is on disk (at once if it changed none). */
  #durable(changes: number): Promise<void> {
    return changes > 0 && this.#sync ? this.#sync.synced() : Promise.resolve()
  }

  /** For writes no caller waits on (session owners and expiries, written at CONNECT/close): synced soon after. */
  #background(changes: number): void {
    this.#durable(changes).catch(() => undefined) // a failed sync is sticky: the next awaited write reports it
  }

  #ready(): { db: Db; stmt: Statements } {
    const db = this.#db
    const stmt = this.#stmt
    if (!db || !stmt) throw new Error('SqlitePersistence: not set up (call setup() first) or already destroyed')
    return { db, stmt }
  }

  /** Replays the saved state through the parent's methods (no write-through: super, not this). */
  async #restore(stmt: Statements): Promise<void> {
    for (const row of stmt.retainedAll.all()) await super.storeRetained(keepRetainedDeadline(asPacket(row.packet, row.payload)))

    for (const id of stmt.subClientsAll.all()) {
      const subs = stmt.subsOf.all(id).map((row): PersistenceSubscription => {
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

    const queues = new Map<string, PersistencePacket[]>()
    for (const row of stmt.outgoingAll.all()) {
      const entry = asPacket(row.packet, row.payload)
      if (row.has_message_id) entry.messageId = row.message_id ?? undefined
      let queue = queues.get(row.client_id)
      if (!queue) queues.set(row.client_id, queue = [])
      queue.push(entry)
    }
    for (const [clientId, entries] of queues) await restoreOutgoingQueue(this, clientId, entries)

    for (const row of stmt.incomingAll.all()) {
      const packet = asPacket(row.packet, row.payload)
      await super.incomingStorePacket({ id: row.client_id }, packet)
      let ids = this.#incoming.get(row.client_id)
      if (!ids) this.#incoming.set(row.client_id, ids = new Set())
      ids.add(String(packet.messageId))
    }

    for (const row of stmt.ownersAll.all()) this.#owners.set(row.client_id, row.owner)
    for (const row of stmt.expiryAll.all()) this.#expiry.set(row.client_id, row.expires_at)

    for (const row of stmt.willsAll.all()) await restoreWill(this, row.client_id, asPacket(row.packet, row.payload))
  }
}
