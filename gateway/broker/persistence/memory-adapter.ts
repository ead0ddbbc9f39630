// Every aedes-persistence internal the broker persistence relies on, in one place. The store (store.ts) IS
// aedes-persistence 11's in-memory persistence, reached by a private path (asyncPersistence.js: the package exports
// only a callback wrapper around it), extended to write through to SQLite. Beyond that class's public methods it
// relies on these behaviours of it, each checked by a premise test in test/aedes-persistence-adapter.test.ts, so an
// aedes-persistence upgrade that changes one fails there, loudly, instead of silently reordering or losing writes:
// - every mutating method settles synchronously (it never awaits without broadcastSubscriptions), so the store's
//   writes, made right after each awaited parent call, reach SQLite in the order the mutations reached memory;
// - outgoing queues hold `new Packet(packet)` (aedes-packet), and outgoingStream yields the very objects queued (a
//   shallow copy of the array), so they can be reshaped or re-keyed in place;
// - getWill returns the very will object that streamWill yields and judges by its brokerId;
// - outgoingUpdate matches the first entry with the same brokerId and brokerCounter (sets its messageId), or with a
//   different brokerId and the same messageId (replaces it), else rejects with 'no such packet' (the store's SQL
//   mirrors that loop); incomingStorePacket keys a client's packets by String(messageId).
import { createRequire } from 'node:module'
import type { Readable } from 'node:stream'
import type {
  BrokerHeartbeats, OfflineCount, PersistenceBroker, PersistenceClient, PersistencePacket, PersistenceSubscription,
  PersistenceWill, TopicSubscription,
} from './types.ts'

/** aedes-persistence's MemoryPersistence (asyncPersistence.js): CommonJS, its typings do not admit a subclass. */
export interface MemoryPersistenceApi {
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

interface MemoryPersistenceModule {
  new (): MemoryPersistenceApi
  readonly prototype: MemoryPersistenceApi
  /** aedes-packet's Packet, re-exported by the module: the constructor the memory store queues with. */
  readonly Packet: new (original: PersistencePacket) => PersistencePacket
}

const require = createRequire(import.meta.url)

/** The private path: the package's main module exports only a callback wrapper, which cannot be extended. */
export const MEMORY_PERSISTENCE_PATH = 'aedes-persistence/asyncPersistence.js'

/** The class to extend. */
export const MemoryPersistence = require(MEMORY_PERSISTENCE_PATH) as MemoryPersistenceModule

// The parent's own methods, for the helpers below: they must not run the subclass's write-through overrides.
const base = MemoryPersistence.prototype

/** The packet the memory store queues (outgoingEnqueue) or keeps (incomingStorePacket) for `packet`. */
export function queuedShape(packet: PersistencePacket): PersistencePacket {
  return new MemoryPersistence.Packet(packet)
}

/**
 * Empties a client's outgoing queue in memory. The parent has no "drop this queue": every queued entry (the very
 * objects it holds) gets a message id of its own, outside MQTT's 1..65535, and is cleared by that id.
 */
export async function dropOutgoingQueue(memory: MemoryPersistenceApi, clientId: string): Promise<void> {
  const client = { id: clientId }
  const queued = await base.outgoingStream.call(memory, client).toArray() as PersistencePacket[]
  let n = 0
  for (const entry of queued) {
    entry.messageId = -(++n)
    await base.outgoingClearMessageId.call(memory, client, { messageId: entry.messageId })
  }
}

/**
 * Puts a saved outgoing queue back, entry for entry. The parent only builds entries as `new Packet(x)` (enqueue) or
 * stores the object given to outgoingUpdate (replace); replaying the public calls cannot reproduce every queue exactly
 * (the update loop would match earlier entries), so each entry is enqueued and then reshaped in place, through the
 * references outgoingStream yields, to own exactly the saved fields (incl. messageId).
 */
export async function restoreOutgoingQueue(memory: MemoryPersistenceApi, clientId: string, entries: readonly PersistencePacket[]): Promise<void> {
  for (const entry of entries) await base.outgoingEnqueue.call(memory, { clientId }, entry)
  const live = await base.outgoingStream.call(memory, { id: clientId }).toArray() as object[]
  if (live.length !== entries.length) {
    throw new Error(`restoring the outgoing queue of ${clientId}: ${live.length} entries in memory, ${entries.length} saved`)
  }
  entries.forEach((entry, i) => reshape(live[i] as object, entry))
}

/**
 * Puts a saved will back with the broker id it was saved with (putWill stamps the current broker's), so that a will
 * left by a broker that died is recognised as orphaned (aedes publishes the wills of brokers not alive).
 */
export async function restoreWill(memory: MemoryPersistenceApi, clientId: string, will: PersistencePacket): Promise<void> {
  const savedBrokerId = will.brokerId
  await base.putWill.call(memory, { id: clientId }, will)
  const live = await base.getWill.call(memory, { id: clientId })
  if (live) live.brokerId = savedBrokerId as string
}

/** Makes `target` own exactly the fields of `source` (the object identity, hence its place, stays). */
function reshape(target: object, source: object): void {
  const t = target as Record<string, unknown>
  for (const key of Object.keys(t)) {
    if (!Object.hasOwn(source, key)) Reflect.deleteProperty(t, key)
  }
  Object.assign(t, source)
}
