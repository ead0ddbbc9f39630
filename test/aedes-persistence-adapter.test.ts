// Every aedes-persistence internal in gateway/broker/persistence/memory-adapter.ts, run against the installed
// aedes-persistence: the private path to its memory store, and each behaviour of that store the SQLite write-through
// relies on beyond its public contract (the contract itself is test/broker-persistence.test.ts's abstract suite).
// Fails loudly when an aedes-persistence upgrade changes one, instead of letting writes reach SQLite out of order or
// the restore rebuild queues and wills wrongly.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  MEMORY_PERSISTENCE_PATH, MemoryPersistence, dropOutgoingQueue, queuedShape, restoreOutgoingQueue, restoreWill,
  type MemoryPersistenceApi,
} from '../gateway/broker/persistence/memory-adapter.ts'
import type { PersistencePacket } from '../gateway/broker/persistence/types.ts'

const CHANGED = `aedes-persistence changed (${MEMORY_PERSISTENCE_PATH}): review gateway/broker/persistence/memory-adapter.ts`

async function fresh(brokerId = 'b1'): Promise<MemoryPersistenceApi> {
  const m = new MemoryPersistence()
  await m.setup({ id: brokerId })
  return m
}

const publish = (topic: string, brokerCounter: number, extra: Partial<PersistencePacket> = {}): PersistencePacket =>
  ({ cmd: 'publish', topic, payload: Buffer.from(topic), qos: 1, retain: false, dup: false, brokerId: 'b1', brokerCounter, ...extra })

async function queue(m: MemoryPersistenceApi, id: string): Promise<PersistencePacket[]> {
  return await m.outgoingStream({ id }).toArray() as PersistencePacket[]
}

/** Whether a promise is settled within one microtask, i.e. the async method returned without awaiting anything. */
async function settlesAtOnce(p: Promise<unknown>): Promise<boolean> {
  let done = false
  p.then(() => { done = true }, () => { done = true })
  await null
  return done
}

test('premise: the private path is a class with every method the store overrides or calls', () => {
  assert.equal(typeof MemoryPersistence, 'function', CHANGED)
  const m = new MemoryPersistence()
  const methods: (keyof MemoryPersistenceApi)[] = [
    'setup', 'storeRetained', 'createRetainedStream', 'createRetainedStreamCombi', 'addSubscriptions',
    'removeSubscriptions', 'subscriptionsByClient', 'countOffline', 'subscriptionsByTopic', 'cleanSubscriptions',
    'outgoingEnqueue', 'outgoingEnqueueCombi', 'outgoingUpdate', 'outgoingClearMessageId', 'outgoingStream',
    'incomingStorePacket', 'incomingGetPacket', 'incomingDelPacket', 'cleanIncoming', 'putWill', 'getWill', 'delWill',
    'streamWill', 'getClientList', 'destroy',
  ]
  for (const name of methods) assert.equal(typeof m[name], 'function', `${name}: ${CHANGED}`)
  assert.equal(typeof MemoryPersistence.Packet, 'function', `Packet export: ${CHANGED}`)
  class Sub extends MemoryPersistence {}
  assert.ok(new Sub() instanceof MemoryPersistence, 'subclassable')
})

test('premise: every mutating method settles synchronously, so write-through order is memory order', async () => {
  // the probe itself: one await inside is caught
  assert.equal(await settlesAtOnce((async () => { await null })()), false, 'probe sees an awaiting method')
  assert.equal(await settlesAtOnce((async () => undefined)()), true, 'probe sees a non-awaiting one')

  const m = await fresh()
  const c = { id: 'c1' }
  const q1 = publish('a', 1)
  const calls: [string, () => Promise<unknown>][] = [
    ['storeRetained', () => m.storeRetained({ ...publish('r', 0), retain: true })],
    ['storeRetained (delete)', () => m.storeRetained({ ...publish('r', 0), payload: Buffer.alloc(0) })],
    ['addSubscriptions', () => m.addSubscriptions(c, [{ topic: 'a/#', qos: 1 }, { topic: 'b', qos: 0 }])],
    ['removeSubscriptions', () => m.removeSubscriptions(c, ['b'])],
    ['cleanSubscriptions', () => m.cleanSubscriptions(c)],
    ['outgoingEnqueue', () => m.outgoingEnqueue({ clientId: 'c1' }, q1)],
    ['outgoingEnqueueCombi', () => m.outgoingEnqueueCombi([{ clientId: 'c1' }, { clientId: 'c2' }], publish('b', 2))],
    ['outgoingUpdate', () => m.outgoingUpdate(c, { ...q1, messageId: 1 })],
    ['outgoingUpdate (no such packet)', () => m.outgoingUpdate(c, { ...q1, brokerCounter: 99, messageId: 77 })],
    ['outgoingClearMessageId', () => m.outgoingClearMessageId(c, { messageId: 1 })],
    ['incomingStorePacket', () => m.incomingStorePacket(c, { ...publish('i', 3, { qos: 2 }), messageId: 5 })],
    ['incomingDelPacket', () => m.incomingDelPacket(c, { messageId: 5 })],
    ['incomingDelPacket (no such packet)', () => m.incomingDelPacket(c, { messageId: 5 })],
    ['cleanIncoming', () => m.cleanIncoming(c)],
    ['putWill', () => m.putWill(c, publish('w', 0))],
    ['delWill', () => m.delWill(c)],
  ]
  for (const [name, call] of calls) assert.equal(await settlesAtOnce(call()), true, `${name} awaits: ${CHANGED}`)
})

test('premise: outgoing queues hold aedes-packet copies, and outgoingStream yields those very objects', async () => {
  const m = await fresh()
  const original = publish('a', 1, { properties: { contentType: 'x' }, messageExpiry: 123 })
  await m.outgoingEnqueue({ clientId: 'c1' }, original)
  const [entry] = await queue(m, 'c1')
  assert.ok(entry instanceof MemoryPersistence.Packet, `queued as Packet: ${CHANGED}`)
  assert.notEqual(entry, original, 'a copy, not the caller\'s object')
  assert.deepStrictEqual(entry, queuedShape(original), `queuedShape is what the parent queues: ${CHANGED}`)
  // the same object again: a change to it is a change to the queue
  const [again] = await queue(m, 'c1')
  assert.equal(again, entry, `outgoingStream yields the held objects: ${CHANGED}`)
  entry!.messageId = -1
  assert.equal(await m.outgoingClearMessageId({ id: 'c1' }, { messageId: -1 }), entry)
  assert.deepEqual(await queue(m, 'c1'), [])
})

test('premise: outgoingUpdate matches the first same brokerId+brokerCounter (in place) or other brokerId+same messageId (replaced)', async () => {
  const m = await fresh()
  const c = { id: 'c1' }
  await m.outgoingEnqueue({ clientId: 'c1' }, publish('a', 1))
  await m.outgoingEnqueue({ clientId: 'c1' }, publish('b', 2))
  const [a, b] = await queue(m, 'c1')
  await m.outgoingUpdate(c, { ...publish('a', 1), messageId: 10 })
  await m.outgoingUpdate(c, { ...publish('b', 2), messageId: 11 })
  const [a2, b2] = await queue(m, 'c1')
  assert.ok(a2 === a && b2 === b && a!.messageId === 10 && b!.messageId === 11, `messageId set in place: ${CHANGED}`)
  // a pubrel (no brokerId) for messageId 11 replaces b with the very object given
  const pubrel = { cmd: 'pubrel', messageId: 11 }
  await m.outgoingUpdate(c, pubrel)
  const [, r] = await queue(m, 'c1')
  assert.equal(r, pubrel, `replaced by the given object: ${CHANGED}`)
  // same brokerId but another counter and the same messageId: no match (the loop goes on), so it rejects
  await assert.rejects(m.outgoingUpdate(c, { ...publish('a', 5), messageId: 10 }), /no such packet/, CHANGED)
  // two candidates: the first wins
  await m.outgoingEnqueue({ clientId: 'c2' }, publish('x', 7))
  await m.outgoingEnqueue({ clientId: 'c2' }, publish('x', 7))
  await m.outgoingUpdate({ id: 'c2' }, { ...publish('x', 7), messageId: 3 })
  assert.deepEqual((await queue(m, 'c2')).map((e) => e.messageId), [3, undefined], CHANGED)
})

test('premise: incoming QoS 2 packets are keyed by String(messageId); retained empties delete', async () => {
  const m = await fresh()
  await m.incomingStorePacket({ id: 'c1' }, { ...publish('i', 1, { qos: 2 }), messageId: 5 })
  const got = await m.incomingGetPacket({ id: 'c1' }, { messageId: '5' as unknown as number })
  assert.equal(got.topic, 'i', `keyed by String(messageId): ${CHANGED}`)
  assert.ok(got instanceof MemoryPersistence.Packet && got.messageId === 5, CHANGED)
  await m.storeRetained({ ...publish('r', 1), retain: true })
  await m.storeRetained({ ...publish('r', 2), payload: Buffer.alloc(0) })
  assert.deepEqual(await m.createRetainedStream('#').toArray(), [], `an empty payload deletes: ${CHANGED}`)
})

test('adapter: dropOutgoingQueue empties one client\'s queue, whatever its message ids, and no other', async () => {
  const m = await fresh()
  await m.outgoingEnqueueCombi([{ clientId: 'c1' }, { clientId: 'c2' }], publish('a', 1))
  await m.outgoingEnqueue({ clientId: 'c1' }, publish('b', 2))
  await m.outgoingEnqueue({ clientId: 'c1' }, publish('c', 3))
  await m.outgoingUpdate({ id: 'c1' }, { ...publish('b', 2), messageId: 1 })
  await m.outgoingUpdate({ id: 'c1' }, { cmd: 'pubrel', messageId: 1 })
  await dropOutgoingQueue(m, 'c1')
  assert.deepEqual(await queue(m, 'c1'), [])
  assert.deepEqual((await queue(m, 'c2')).map((e) => e.topic), ['a'])
})

test('adapter: restoreOutgoingQueue rebuilds entries with exactly their saved fields, as Packets where saved so', async () => {
  const m = await fresh('b2')
  const withId = { ...queuedShape(publish('a', 1)), messageId: 4 }
  const withoutId = { ...queuedShape(publish('b', 2)) }
  const pubrel = { cmd: 'pubrel', messageId: 9 }
  const saved: PersistencePacket[] = [withId, withoutId, pubrel]
  await restoreOutgoingQueue(m, 'c1', saved)
  const live = await queue(m, 'c1')
  assert.deepEqual(live.map((e) => ({ ...e })), saved.map((e) => ({ ...e })))
  assert.deepEqual(live.map((e) => Object.keys(e)), saved.map((e) => Object.keys(e)), 'own keys, nothing added')
  assert.ok(Object.hasOwn(live[1]!, 'messageId') && live[1]!.messageId === undefined)
  // and aedes' calls work on it as on a queue it built itself
  await m.outgoingUpdate({ id: 'c1' }, { ...publish('b', 2), messageId: 5 })
  assert.equal((await queue(m, 'c1'))[1]!.messageId, 5)
  assert.equal(await m.outgoingClearMessageId({ id: 'c1' }, { messageId: 9 }), live[2])
})

test('premise + adapter: getWill returns the object streamWill judges, so restoreWill keeps the saved broker id', async () => {
  const m = await fresh('now')
  const will = publish('w', 0)
  await m.putWill({ id: 'c1' }, will)
  assert.equal(will.brokerId, 'now', `putWill stamps the broker id on the given object: ${CHANGED}`)
  assert.equal(will.clientId, 'c1', CHANGED)
  assert.equal(await m.getWill({ id: 'c1' }), will, `getWill returns the held object: ${CHANGED}`)

  await restoreWill(m, 'c2', { ...publish('w2', 0), brokerId: 'dead', clientId: 'c2' })
  await restoreWill(m, 'c3', { ...publish('w3', 0), brokerId: 'now', clientId: 'c3' })
  assert.equal((await m.getWill({ id: 'c2' }))?.brokerId, 'dead')
  const orphaned = await m.streamWill({ now: Date.now() }).toArray() as PersistencePacket[]
  assert.deepEqual(orphaned.map((w) => w.clientId), ['c2'], `wills of brokers not alive: ${CHANGED}`)
})
