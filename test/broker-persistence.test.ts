// SqlitePersistence: the aedes-persistence contract suite, restarts on the same file, and a real
// aedes broker restarted between a persistent client's subscription and its reconnection.
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { Aedes } from 'aedes'
import { connect, connectAsync, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt'
import { SqlitePersistence, MAX_INBOUND_QOS2 } from '../gateway/broker/persistence/store.ts'
import type { PersistencePacket, PersistenceSubscription } from '../gateway/broker/persistence/types.ts'
import { tempDir, waitFor, pause, scaled } from './helpers/net.ts'

const require = createRequire(import.meta.url)

// ---------------------------------------------------------------------------------------------
// 1. The contract suite shipped with aedes-persistence, run the way its own test-directAsync.js runs it.
// ---------------------------------------------------------------------------------------------

interface AbstractSuiteOptions {
  test: typeof test
  persistence: () => SqlitePersistence
  testAsync: boolean
}
const abstractSuite = require('aedes-persistence/abstract.js') as (opts: AbstractSuiteOptions) => void

describe('aedes-persistence contract suite on SqlitePersistence', () => {
  const root = tempDir('edgeway-persist-contract-')
  let n = 0
  after(() => root.cleanup())
  abstractSuite({
    test,
    persistence: () => new SqlitePersistence({ file: join(root.dir, `instance-${++n}.db`) }),
    testAsync: true,
  })
})

// ---------------------------------------------------------------------------------------------
// 2. Restarts on one file
// ---------------------------------------------------------------------------------------------

async function streamed(stream: Readable): Promise<Record<string, unknown>[]> {
  // top level spread: compare fields, not classes (the parent keeps aedes-packet Packet instances)
  return (await stream.toArray() as object[]).map((p) => ({ ...p }))
}

function pkt(fields: PersistencePacket): PersistencePacket {
  return fields
}

async function openAt(file: string, brokerId: string): Promise<SqlitePersistence> {
  const p = new SqlitePersistence({ file })
  await p.setup({ id: brokerId })
  return p
}

/** Everything the restart test can observe through the persistence API. */
async function observe(p: SqlitePersistence): Promise<Record<string, unknown>> {
  const byTopic = async (topic: string): Promise<unknown[]> =>
    (await p.subscriptionsByTopic(topic)).map((s) => ({ ...s }))
      .sort((a, b) => `${a.clientId}\0${a.topic}`.localeCompare(`${b.clientId}\0${b.topic}`))
  const incoming = async (clientId: string, messageId: number): Promise<unknown> =>
    p.incomingGetPacket({ id: clientId }, { messageId }).then((x) => ({ ...x }), (err: Error) => `error: ${err.message}`)
  return {
    retainedAll: await streamed(p.createRetainedStream('#')),
    retainedPlus: await streamed(p.createRetainedStream('sensors/+')),
    retainedCombi: await streamed(p.createRetainedStreamCombi(['sensors/temp', 'cfg/#'])),
    subsDev1: await p.subscriptionsByClient({ id: 'dev1' }),
    subsDev2: await p.subscriptionsByClient({ id: 'dev2' }),
    subsGone: await p.subscriptionsByClient({ id: 'gone' }),
    byTopicTemp: await byTopic('sensors/temp'),
    byTopicCmd: await byTopic('cmd/dev1/reboot'),
    countOffline: await p.countOffline(),
    clientList: await p.getClientList('sensors/temp').toArray(),
    outDev1: await streamed(p.outgoingStream({ id: 'dev1' })),
    outDev2: await streamed(p.outgoingStream({ id: 'dev2' })),
    incoming42: await incoming('dev1', 42),
    incoming43: await incoming('dev1', 43),
    incomingDev3: await incoming('dev3', 7),
    willDev1: { ...await p.getWill({ id: 'dev1' }) },
    willDev2: await p.getWill({ id: 'dev2' }),
    willsAll: await streamed(p.streamWill({})),
  }
}

describe('SqlitePersistence restarts', () => {
  test('everything written comes back after destroy() and a new instance on the same file', async () => {
    const { dir, cleanup } = tempDir('edgeway-persist-restart-')
    try {
      const file = join(dir, 'nested', 'broker.db') // the directory is created on setup
      const p1 = await openAt(file, 'broker-one')

      // retained: stored, overwritten (keeps its place), deleted by an empty payload; MQTT 5
      // properties with a Buffer, a string payload and non-UTF-8 bytes must all round-trip
      const temp = pkt({
        cmd: 'publish', topic: 'sensors/temp', payload: Buffer.from([0xff, 0x00, 0xfe]), qos: 1, retain: true,
        dup: false, brokerId: 'broker-one', brokerCounter: 1,
        properties: { contentType: 'application/octet-stream', correlationData: Buffer.from('corr'),
          userProperties: { site: 'north', tags: ['a', 'b'] } },
      })
      await p1.storeRetained(temp)
      await p1.storeRetained(pkt({ cmd: 'publish', topic: 'sensors/hum', payload: Buffer.from('40'), qos: 0, retain: true, dup: false, brokerId: 'broker-one', brokerCounter: 2 }))
      await p1.storeRetained(pkt({ cmd: 'publish', topic: 'cfg/mode', payload: 'eco', qos: 0, retain: true, dup: false, brokerId: 'broker-one', brokerCounter: 3 }))
      await p1.storeRetained(pkt({ cmd: 'publish', topic: 'sensors/old', payload: Buffer.from('x'), qos: 0, retain: true, dup: false, brokerId: 'broker-one', brokerCounter: 4 }))
      await p1.storeRetained(pkt({ cmd: 'publish', topic: 'sensors/old', payload: Buffer.alloc(0), qos: 0, retain: true, dup: false, brokerId: 'broker-one', brokerCounter: 5 }))
      await p1.storeRetained(pkt({ cmd: 'publish', topic: 'sensors/hum', payload: Buffer.from('41'), qos: 0, retain: true, dup: false, brokerId: 'broker-one', brokerCounter: 6 }))

      // subscriptions: QoS 0/1/2 (QoS 0 is kept per client but not in the topic trie), one replaced,
      // one removed, an MQTT 5 subscription identifier, a second client, a cleaned client
      const dev1Subs: PersistenceSubscription[] = [
        { topic: 'sensors/#', qos: 0, rh: 0, rap: false, nl: false },
        { topic: 'sensors/temp', qos: 1, rh: 0, rap: true, nl: false },
        { topic: 'cmd/dev1/+', qos: 2, rh: 1, rap: false, nl: true, subscriptionIdentifier: 7 },
        { topic: 'tmp/x', qos: 1 },
      ]
      await p1.addSubscriptions({ id: 'dev1' }, dev1Subs)
      await p1.addSubscriptions({ id: 'dev1' }, [{ topic: 'sensors/temp', qos: 2, rh: 2, rap: false, nl: false }])
      await p1.removeSubscriptions({ id: 'dev1' }, ['tmp/x'])
      await p1.addSubscriptions({ id: 'dev2' }, [{ topic: '+/temp', qos: 1, rh: 0, rap: false, nl: false }])
      await p1.addSubscriptions({ id: 'gone' }, [{ topic: 'sensors/temp', qos: 1 }])
      await p1.cleanSubscriptions({ id: 'gone' })

      // outgoing queue of the offline clients: enqueued for two clients at once, a messageId
      // assigned (same brokerId+brokerCounter), a publish replaced by its pubrel (same messageId,
      // other brokerId), one acked (outgoingClearMessageId), one left without messageId
      const q1 = pkt({ cmd: 'publish', topic: 'sensors/temp', payload: Buffer.from('21.5'), qos: 1, retain: false, dup: false, brokerId: 'broker-one', brokerCounter: 10 })
      const q2 = pkt({ cmd: 'publish', topic: 'cmd/dev1/reboot', payload: Buffer.from('now'), qos: 2, retain: false, dup: false, brokerId: 'broker-one', brokerCounter: 11 })
      const q3 = pkt({ cmd: 'publish', topic: 'sensors/temp', payload: 'as a string', qos: 1, retain: false, dup: false, brokerId: 'broker-one', brokerCounter: 12, properties: { messageExpiryInterval: 60 } })
      await p1.outgoingEnqueueCombi([{ clientId: 'dev1' }, { clientId: 'dev2' }], q1)
      await p1.outgoingEnqueue({ clientId: 'dev1' }, q2)
      await p1.outgoingEnqueueCombi([{ clientId: 'dev1' }], q3)
      await p1.outgoingUpdate({ id: 'dev1' }, { ...q1, messageId: 1 })
      await p1.outgoingUpdate({ id: 'dev1' }, { ...q2, messageId: 2 })
      await p1.outgoingUpdate({ id: 'dev1' }, { cmd: 'pubrel', messageId: 2 })
      await p1.outgoingUpdate({ id: 'dev2' }, { ...q1, messageId: 9 })
      await p1.outgoingClearMessageId({ id: 'dev2' }, { messageId: 9 })
      await assert.rejects(p1.outgoingUpdate({ id: 'dev1' }, { ...q1, brokerCounter: 99, messageId: 5 }), /no such packet/)

      // incoming QoS 2: one kept, one released, one client's cleaned
      const in42 = pkt({ cmd: 'publish', topic: 'up/dev1', payload: Buffer.from('qos2'), qos: 2, retain: false, dup: false, messageId: 42 })
      await p1.incomingStorePacket({ id: 'dev1' }, in42)
      await p1.incomingStorePacket({ id: 'dev1' }, { ...in42, messageId: 43 })
      await p1.incomingDelPacket({ id: 'dev1' }, { messageId: 43 })
      await p1.incomingStorePacket({ id: 'dev3' }, { ...in42, messageId: 7 })
      await p1.cleanIncoming({ id: 'dev3' })

      // wills: one kept, one deleted
      await p1.putWill({ id: 'dev1' }, pkt({ cmd: 'publish', topic: 'status/dev1', payload: Buffer.from('offline'), qos: 1, retain: true }))
      await p1.putWill({ id: 'dev2' }, pkt({ cmd: 'publish', topic: 'status/dev2', payload: Buffer.from('offline'), qos: 0, retain: false }))
      await p1.delWill({ id: 'dev2' })

      const before = await observe(p1)
      await p1.destroy()

      const p2 = await openAt(file, 'broker-two')
      const after1 = await observe(p2)
      assert.deepStrictEqual(after1, before, 'the restored state equals the state before the restart')

      // ... and that state is the one written above, field by field
      assert.deepStrictEqual((after1.retainedAll as PersistencePacket[]).map((p) => p.topic), ['sensors/temp', 'sensors/hum', 'cfg/mode'])
      assert.deepStrictEqual((after1.retainedPlus as PersistencePacket[]).map((p) => p.topic), ['sensors/temp', 'sensors/hum'])
      assert.deepStrictEqual((after1.retainedCombi as PersistencePacket[]).map((p) => p.topic), ['sensors/temp', 'cfg/mode'])
      assert.deepStrictEqual(after1.retainedAll, [{ ...temp },
        { cmd: 'publish', topic: 'sensors/hum', payload: Buffer.from('41'), qos: 0, retain: true, dup: false, brokerId: 'broker-one', brokerCounter: 6 },
        { cmd: 'publish', topic: 'cfg/mode', payload: 'eco', qos: 0, retain: true, dup: false, brokerId: 'broker-one', brokerCounter: 3 }])
      const restoredTemp = (after1.retainedAll as PersistencePacket[])[0]
      assert.ok(Buffer.isBuffer(restoredTemp?.payload), 'payload comes back as a Buffer')
      assert.ok(Buffer.isBuffer((restoredTemp?.properties as { correlationData: unknown }).correlationData))

      assert.deepStrictEqual(after1.subsDev1, [
        { topic: 'sensors/#', qos: 0, rh: 0, rap: false, nl: false },
        { topic: 'sensors/temp', qos: 2, rh: 2, rap: false, nl: false },
        { topic: 'cmd/dev1/+', qos: 2, rh: 1, rap: false, nl: true, subscriptionIdentifier: 7 },
      ])
      assert.deepStrictEqual(after1.subsDev2, [{ topic: '+/temp', qos: 1, rh: 0, rap: false, nl: false }])
      assert.deepStrictEqual(after1.subsGone, [])
      assert.deepStrictEqual(after1.byTopicTemp, [
        { clientId: 'dev1', topic: 'sensors/temp', qos: 2, rh: 2, rap: false, nl: false },
        { clientId: 'dev2', topic: '+/temp', qos: 1, rh: 0, rap: false, nl: false },
      ])
      assert.deepStrictEqual(after1.byTopicCmd, [{ clientId: 'dev1', topic: 'cmd/dev1/+', qos: 2, rh: 1, rap: false, nl: true }])
      assert.deepStrictEqual(after1.countOffline, { subsCount: 3, clientsCount: 2 })
      assert.deepStrictEqual(after1.clientList, ['dev1'])

      assert.deepStrictEqual(after1.outDev1, [
        { ...q1, messageId: 1 },
        { cmd: 'pubrel', messageId: 2 },
        { ...q3, messageId: undefined },
      ])
      assert.deepStrictEqual(after1.outDev2, [])

      assert.deepStrictEqual(after1.incoming42, { ...in42, brokerId: undefined, brokerCounter: 0 })
      assert.equal(after1.incoming43, 'error: no such packet')
      assert.equal(after1.incomingDev3, 'error: no such packet')

      const will = { cmd: 'publish', topic: 'status/dev1', payload: Buffer.from('offline'), qos: 1, retain: true, brokerId: 'broker-one', clientId: 'dev1' }
      assert.deepStrictEqual(after1.willDev1, will, 'the will keeps the id of the broker that stored it')
      assert.equal(after1.willDev2, undefined)
      assert.deepStrictEqual(after1.willsAll, [will], 'a will of a broker not alive is streamed for publication')
      assert.deepStrictEqual(await streamed(p2.streamWill({ 'broker-one': Date.now() })), [], 'not while its broker is alive')

      // the restored state keeps being written through: ack dev1's first message, give the
      // third its messageId, release the QoS 2 packet, retire the will, drop a subscription
      assert.equal((await p2.outgoingClearMessageId({ id: 'dev1' }, { messageId: 1 }))?.topic, 'sensors/temp')
      await p2.outgoingUpdate({ id: 'dev1' }, { ...q3, messageId: 3 })
      await p2.incomingDelPacket({ id: 'dev1' }, { messageId: 42 })
      await p2.delWill({ id: 'dev1', })
      await p2.removeSubscriptions({ id: 'dev2' }, ['+/temp'])
      await p2.storeRetained(pkt({ cmd: 'publish', topic: 'sensors/temp', payload: Buffer.alloc(0), qos: 0, retain: true, dup: false }))
      const before2 = await observe(p2)
      await p2.destroy()

      const p3 = await openAt(file, 'broker-three')
      const after2 = await observe(p3)
      assert.deepStrictEqual(after2, before2)
      assert.deepStrictEqual(after2.outDev1, [{ cmd: 'pubrel', messageId: 2 }, { ...q3, messageId: 3 }])
      assert.deepStrictEqual((after2.retainedAll as PersistencePacket[]).map((p) => p.topic), ['sensors/hum', 'cfg/mode'])
      assert.deepStrictEqual(after2.countOffline, { subsCount: 2, clientsCount: 1 })
      assert.equal(after2.incoming42, 'error: no such packet')
      assert.deepStrictEqual(after2.willsAll, [])
      await p3.destroy()
    } finally {
      cleanup()
    }
  })

  test('writes are on disk when the method resolves, not at destroy()', async () => {
    const { dir, cleanup } = tempDir('edgeway-persist-crash-')
    try {
      const file = join(dir, 'broker.db')
      const live = await openAt(file, 'broker-one')
      await live.addSubscriptions({ id: 'dev1' }, [{ topic: 'a/#', qos: 1 }])
      await live.outgoingEnqueue({ clientId: 'dev1' }, pkt({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('1'), qos: 1, brokerId: 'broker-one', brokerCounter: 1 }))
      await live.storeRetained(pkt({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('r'), qos: 0, retain: true }))
      // a second instance opens the file while the first one is still running (never destroyed
      // before this read), as after a crash
      const other = await openAt(file, 'broker-two')
      assert.deepStrictEqual(await other.subscriptionsByClient({ id: 'dev1' }), [{ topic: 'a/#', qos: 1, rh: undefined, rap: undefined, nl: undefined }])
      assert.deepStrictEqual((await streamed(other.outgoingStream({ id: 'dev1' }))).map((p) => p.payload), [Buffer.from('1')])
      assert.deepStrictEqual((await streamed(other.createRetainedStream('#'))).map((p) => p.payload), [Buffer.from('r')])
      await other.destroy()
      await live.destroy()
    } finally {
      cleanup()
    }
  })

  test('methods refuse to run before setup() and after destroy()', async () => {
    const { dir, cleanup } = tempDir('edgeway-persist-life-')
    try {
      const p = new SqlitePersistence({ file: join(dir, 'broker.db') })
      await assert.rejects(p.addSubscriptions({ id: 'x' }, [{ topic: 't', qos: 1 }]), /not set up/)
      assert.deepStrictEqual(await p.subscriptionsByClient({ id: 'x' }), [], 'a refused write leaves memory untouched')
      await p.setup({ id: 'b' })
      await assert.rejects(p.setup({ id: 'b' }), /setup\(\) called twice/)
      await p.destroy()
      await assert.rejects(p.storeRetained(pkt({ topic: 't', payload: Buffer.from('x') })), /not set up/)
      assert.throws(() => new SqlitePersistence({ file: '' }), /options.file/)
    } finally {
      cleanup()
    }
  })
})

// ---------------------------------------------------------------------------------------------
// 3. End to end: a real aedes broker restarted between subscription and reconnection
// ---------------------------------------------------------------------------------------------

interface RunningBroker {
  broker: Aedes
  persistence: SqlitePersistence
  url: string
  stop(): Promise<void>
}

async function startBroker(file: string): Promise<RunningBroker> {
  const persistence = new SqlitePersistence({ file })
  const broker = new Aedes({ persistence })
  await broker.listen()
  const server: Server = createServer((socket) => { broker.handle(socket) })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  let stopped = false
  return {
    broker,
    persistence,
    url: `mqtt://127.0.0.1:${port}`,
    async stop() {
      if (stopped) return
      stopped = true
      await new Promise<void>((resolve) => broker.close(() => resolve()))
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await persistence.destroy() // aedes' close() does not destroy its persistence
    },
  }
}

function disconnected(b: RunningBroker, clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const onDisconnect = (client: { id: string }): void => {
      if (client.id !== clientId) return
      b.broker.off('clientDisconnect', onDisconnect)
      resolve()
    }
    b.broker.on('clientDisconnect', onDisconnect)
  })
}

test('a persistent session and a retained message survive a broker restart', { timeout: scaled(30000) }, async () => {
  const { dir, cleanup } = tempDir('edgeway-persist-e2e-')
  const file = join(dir, 'broker.db')
  const clients: MqttClient[] = []
  const brokers: RunningBroker[] = []
  const topic = 'devices/dev1/cmd'
  try {
    const b1 = await startBroker(file)
    brokers.push(b1)

    // dev1: persistent session, subscribes at QoS 1 and goes away
    const dev1 = await connectAsync(b1.url, { clientId: 'dev1', clean: false, reconnectPeriod: 0 })
    clients.push(dev1)
    const granted = await dev1.subscribeAsync(topic, { qos: 1 })
    assert.equal(granted[0]?.qos, 1)
    const gone = disconnected(b1, 'dev1')
    await dev1.endAsync()
    await gone

    // while dev1 is offline: a retained message and a QoS 1 message to its topic (PUBACK comes
    // after the broker queued them for dev1)
    const pub = await connectAsync(b1.url, { clientId: 'publisher', clean: true, reconnectPeriod: 0 })
    clients.push(pub)
    await pub.publishAsync(topic, 'retained: reboot at 02:00', { qos: 1, retain: true })
    await pub.publishAsync(topic, 'queued: reboot now', { qos: 1 })
    await pub.endAsync()
    assert.equal((await b1.persistence.outgoingStream({ id: 'dev1' }).toArray()).length, 2, 'both messages queued for dev1')

    await b1.stop()

    // a NEW broker with a NEW persistence on the same file (and another port)
    const b2 = await startBroker(file)
    brokers.push(b2)
    assert.notEqual(b2.broker.id, b1.broker.id)

    const received: IPublishPacket[] = []
    const dev1again = connect(b2.url, { clientId: 'dev1', clean: false, reconnectPeriod: 0 })
    clients.push(dev1again)
    dev1again.on('message', (_topic, _payload, packet) => { received.push(packet) })
    const connack = await new Promise<IConnackPacket>((resolve, reject) => {
      dev1again.once('connect', resolve)
      dev1again.once('error', reject)
    })
    assert.equal(connack.sessionPresent, true, 'the broker remembers the session of dev1')

    await waitFor('the queued messages to reach dev1', () => received.length >= 2)
    assert.deepStrictEqual(received.map((p) => [p.topic, p.payload.toString(), p.qos]), [
      [topic, 'retained: reboot at 02:00', 1],
      [topic, 'queued: reboot now', 1],
    ], 'dev1 receives what was queued before the restart, in order, at QoS 1')
    // PUBACKs from dev1 empty the queue, in memory and on disk
    await waitFor('the queue of dev1 to be acked', async () =>
      (await b2.persistence.outgoingStream({ id: 'dev1' }).toArray()).length === 0)
    assert.deepStrictEqual(await b2.persistence.subscriptionsByClient({ id: 'dev1' }),
      [{ topic, qos: 1, rh: undefined, rap: undefined, nl: undefined }], 'an MQTT 3.1.1 subscription has no rh/rap/nl')

    // a fresh subscriber gets the retained message, flagged as retained
    const fresh = await connectAsync(b2.url, { clientId: 'fresh', clean: true, reconnectPeriod: 0 })
    clients.push(fresh)
    const retained = new Promise<[string, Buffer, IPublishPacket]>((resolve) => {
      fresh.once('message', (t, payload, packet) => resolve([t, payload, packet]))
    })
    await fresh.subscribeAsync(topic, { qos: 1 })
    const [rTopic, rPayload, rPacket] = await retained
    assert.equal(rTopic, topic)
    assert.equal(rPayload.toString(), 'retained: reboot at 02:00')
    assert.equal(rPacket.retain, true)

    await pause(200)
    assert.equal(received.length, 2, 'no duplicate deliveries to dev1')
    await dev1again.endAsync()
    await fresh.endAsync()

    // and the acked queue stays empty across one more restart
    await b2.stop()
    const b3 = await startBroker(file)
    brokers.push(b3)
    assert.deepStrictEqual(await b3.persistence.outgoingStream({ id: 'dev1' }).toArray(), [])
    assert.equal((await b3.persistence.createRetainedStream(topic).toArray()).length, 1)
  } finally {
    for (const c of clients) c.end(true)
    for (const b of brokers) await b.stop()
    cleanup()
  }
})

test('inbound QoS 2 awaiting PUBREL is bounded per client (aedes 1.2.0 maxInflightInbound; aedes 2.0 has none); PUBREL, cleanIncoming and a restart keep the count', async () => {
  const dir = tempDir('edgeway-persist-qos2-')
  try {
    const file = join(dir.dir, 'broker.db')
    let p = await openAt(file, 'b1')
    const client = { id: 'flood' }
    const q2 = (messageId: number): PersistencePacket => pkt({ cmd: 'publish', topic: 'devices/x/telemetry', payload: Buffer.from('{}'), qos: 2, messageId, dup: false, retain: false })
    for (let i = 1; i <= MAX_INBOUND_QOS2; i++) await p.incomingStorePacket(client, q2(i))
    await p.incomingStorePacket(client, q2(5)) // a retransmission takes no new slot
    await assert.rejects(p.incomingStorePacket(client, q2(MAX_INBOUND_QOS2 + 1)), /awaiting PUBREL/)
    await p.incomingStorePacket({ id: 'other' }, q2(1))
    await p.incomingDelPacket(client, q2(1))
    await p.incomingStorePacket(client, q2(MAX_INBOUND_QOS2 + 1))
    await p.destroy()
    p = await openAt(file, 'b2')
    assert.equal(p.incomingCount('flood'), MAX_INBOUND_QOS2)
    await assert.rejects(p.incomingStorePacket(client, q2(MAX_INBOUND_QOS2 + 2)), /awaiting PUBREL/)
    await p.cleanIncoming(client)
    assert.equal(p.incomingCount('flood'), 0)
    await p.incomingStorePacket(client, q2(MAX_INBOUND_QOS2 + 2))
    // a whole socket read is handled concurrently: the bound holds for calls that are all in flight at once
    await p.cleanIncoming(client)
    const all = await Promise.allSettled(Array.from({ length: MAX_INBOUND_QOS2 + 50 }, (_, i) => p.incomingStorePacket(client, q2(i + 1))))
    assert.equal(all.filter((r) => r.status === 'rejected').length, 50)
    assert.equal(p.incomingCount('flood'), MAX_INBOUND_QOS2)
    await p.destroy()
  } finally { dir.cleanup() }
})
