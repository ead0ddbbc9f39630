// The Upstream contract (test/contracts/upstream.ts) against every implementation with a real peer: the mqtt upstream
// and Mosquitto, the amqp upstream and RabbitMQ (plus a scripted rhea AMQP 1.0 peer for the outcomes RabbitMQ never
// sends a publisher), the XMPP PubSub upstream and Prosody. Each one reaches its peer through a TCP relay the contract
// holds and cuts; the peers run once per suite.
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import mqtt, { type MqttClient } from 'mqtt'
import type { Message } from 'rhea'
import { upstreamContract, type UpstreamHarness } from './contracts/upstream.ts'
import { TcpProxy } from './contracts/proxy.ts'
import { MqttUpstream } from '../gateway/upstream/mqtt.ts'
import { AmqpUpstream } from '../bridges/amqp/upstream.ts'
import { amqpUpstream } from '../bridges/amqp/config.ts'
import { PubSubUpstream, nodeFor } from '../bridges/xmpp/pubsub.ts'
import { XmppLink } from '../bridges/xmpp/connection.ts'
import { xmppSection } from '../bridges/xmpp/config.ts'
import { NS, pubsubCreate, type XmlNode } from '../bridges/xmpp/stanza.ts'
import { MOSQUITTO, requireBinary } from './helpers/mosquitto.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { amqpConsumer, bodyJson, fakeBroker, type AmqpConsumer, type FakeBroker } from './helpers/amqp.ts'
import { startProsody, type Prosody } from './helpers/prosody.ts'
import { xmppUser, xml, type XmppUser } from './helpers/xmpp.ts'
import { freePort, scaled, tempDir, waitFor, waitForPort } from './helpers/net.ts'

const log = pino({ level: process.env.CONTRACT_LOG ?? 'silent' })
/** The in-flight bound every upstream here is configured with. */
const WINDOW = 8
const connected = (h: UpstreamHarness): Promise<true> => waitFor('upstream link up', () => h.upstream.status().connected || undefined, 15000)

// ---- mqtt: Mosquitto, MQTT 5 (the default) and 3.1.1 ---------------------------------------------------------------

interface MqttHarness extends UpstreamHarness { upstream: MqttUpstream }

const MQTT_REFUSAL = {
  // MQTT 5: Mosquitto answers a publish its ACL denies with PUBACK 0x87 Not authorized: final, dead-lettered.
  5: { expect: 'rejected', why: 'MQTT 5: the broker answers PUBACK 0x87 Not authorized to a publish its ACL denies' },
  // MQTT 3.1.1 has no negative PUBACK: Mosquitto acks a publish its ACL denies and drops it, so the upstream can only
  // settle it accepted (protocolVersion: 4 is for brokers without MQTT 5).
  4: { expect: 'accepted-unseen', why: 'MQTT 3.1.1: the broker PUBACKs a publish its ACL denies' },
} as const

/** The contract against a private Mosquitto, the upstream speaking `protocolVersion`. */
function mosquittoContract(protocolVersion: 4 | 5): void {
  let mosq: { port: number; proc: ChildProcess; cleanup(): void } | null = null
  let sub: MqttClient | null = null
  const mqttArrivals: { topic: string; id: string }[] = []

  upstreamContract<MqttHarness>(`mqtt upstream -> Mosquitto 2 (MQTT ${protocolVersion === 5 ? '5' : '3.1.1'}, QoS 1)`, {
    async start() {
      requireBinary(MOSQUITTO, 'mosquitto')
      const port = await freePort()
      const { dir, cleanup } = tempDir('edgeway-ct-mosq-')
      // A device named "refused" may not publish: Mosquitto logs "Denied PUBLISH" and drops it.
      // max_queued_messages bounded, not 0: with 0, Mosquitto 2.0.11 drops the link after each denial (mqtt-upstream-v5.test.ts).
      writeFileSync(join(dir, 'acl'), 'topic deny ct/+/refused/#\ntopic readwrite #\n')
      writeFileSync(join(dir, 'mosquitto.conf'), [
        `listener ${port} 127.0.0.1`, 'allow_anonymous true', `acl_file ${join(dir, 'acl')}`, 'persistence false',
        'max_inflight_messages 0', 'max_queued_messages 100000', ...(process.getuid?.() === 0 ? ['user root'] : []), 'log_dest stderr', 'log_type error',
      ].join('\n') + '\n')
      const proc = spawn(MOSQUITTO, ['-c', join(dir, 'mosquitto.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
      mosq = { port, proc, cleanup }
      process.once('exit', () => { try { proc.kill('SIGKILL') } catch { /* gone */ } })
      await waitForPort(port)
      sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0 })
      sub.on('message', (topic, payload) => { mqttArrivals.push({ topic, id: String((JSON.parse(payload.toString()) as { id: string }).id) }) })
      await sub.subscribeAsync('ct/#', { qos: 1 })
    },
    async stop() {
      await sub?.endAsync(true)
      if (mosq) { const p = mosq.proc; const gone = new Promise((r) => p.once('exit', r)); p.kill('SIGKILL'); await gone; mosq.cleanup() }
    },
    async make(gw, name) {
      const proxy = await TcpProxy.start(mosq!.port)
      const upstream = new MqttUpstream({
        name, type: 'mqtt', enabled: true, url: `mqtt://127.0.0.1:${proxy.port}`, topicPrefix: `ct/${gw}/`, qos: 1, protocolVersion,
        maxInflight: WINDOW, reconnectMinMs: 100, reconnectMaxMs: 1000,
      }, gw, log)
      const h: MqttHarness = {
        upstream, window: WINDOW, proxy,
        arrived: () => mqttArrivals.filter((m) => m.topic.startsWith(`ct/${gw}/`)).map((m) => m.id),
        prepare: async () => { await connected(h) },
        close: async () => { await upstream.close(); await proxy.close() },
      }
      return h
    },
    globalOrder: true,
    refusal: {
      ...MQTT_REFUSAL[protocolVersion],
      device: () => 'refused',
      refuse: async () => { /* the ACL denies ct/+/refused/# from the start */ },
    },
  })
}
mosquittoContract(5)
mosquittoContract(4)

// ---- amqp: RabbitMQ ---------------------------------------------------------------------------------------------

interface AmqpHarness extends UpstreamHarness { upstream: AmqpUpstream; consume(device: string): Promise<void> }
let rabbit: RabbitMq | null = null
const consumers: AmqpConsumer[] = []

upstreamContract<AmqpHarness>('amqp upstream -> RabbitMQ 3.10 (AMQP 1.0, a queue per device)', {
  async start() { rabbit = await startRabbitMq() },
  async stop() {
    for (const c of consumers.splice(0)) await c.close()
    await rabbit?.cleanup()
  },
  async make(gw, name) {
    const proxy = await TcpProxy.start(rabbit!.port)
    const upstream = new AmqpUpstream(amqpUpstream.parse({
      name, type: 'amqp', host: '127.0.0.1', port: proxy.port, username: 'guest', password: 'guest',
      address: '/queue/ct-{device}', maxInflight: WINDOW, reconnectMinMs: 100, reconnectMaxMs: 1000,
    }), gw, log)
    const mineC: AmqpConsumer[] = []
    const h: AmqpHarness = {
      upstream, window: WINDOW, proxy,
      // Arrival order across the per-device queues: the consumers' messages merged by the time they came in.
      arrived: () => mineC.flatMap((c) => c.messages.map((m, i) => ({ id: String(m.message.message_id), at: m.at, i })))
        .sort((x, y) => x.at - y.at || x.i - y.i).map((m) => m.id),
      async consume(device) {
        const c = await amqpConsumer(rabbit!.port, `/queue/ct-${device}`)
        mineC.push(c)
        consumers.push(c)
      },
      async prepare(devices) {
        for (const d of devices) await h.consume(d)
        await connected(h)
      },
      close: async () => { await upstream.close(); await proxy.close() },
    }
    return h
  },
  // One sender link per device queue, flushed link by link: order holds per device only.
  globalOrder: false,
  refusal: {
    // A queue at its max-length with overflow reject-publish nacks the publish; RabbitMQ 3.10's AMQP 1.0 plugin has no
    // rejected outcome for publishers and drops the connection instead (seen here: accepted, then disconnected). So
    // the row is never settled: the forwarder releases it with the link, and it goes again after each reconnect.
    expect: 'link-drop',
    why: 'RabbitMQ 3.10 ends the connection on a nacked publish (queue full, reject-publish)',
    device: (gw) => `${gw}-full`,
    // Every reconnect resends the refused row with the others in flight, and the crash of the session takes them
    // all: one full queue stalls every device on this upstream until it has room (seen: 10 link drops in 20 s and
    // no other row accepted). Nothing is lost; they all go once the queue takes readings again.
    holdsOthers: 'other devices wait too: each drop takes their unsettled rows',
    async refuse(_h, device) {
      const r = await rabbit!.ctl(['set_policy', `ct-full-${device}`, `^ct-${device}$`, '{"max-length":0,"overflow":"reject-publish"}', '--apply-to', 'queues'])
      if (r.code !== 0) throw new Error(`set_policy failed: ${r.out}`)
    },
    async allow(h, device) {
      const r = await rabbit!.ctl(['clear_policy', `ct-full-${device}`])
      if (r.code !== 0) throw new Error(`clear_policy failed: ${r.out}`)
      await h.consume(device)
    },
  },
})

// ---- amqp: a scripted rhea peer (outcomes RabbitMQ never sends) ---------------------------------------------------

interface FakeHarness extends UpstreamHarness { upstream: AmqpUpstream }
let fake: FakeBroker | null = null
/** Devices whose readings the scripted peer rejects (amqp:not-allowed). */
const rejecting = new Set<string>()

upstreamContract<FakeHarness>('amqp upstream -> a scripted rhea AMQP 1.0 peer (rejected outcome)', {
  async start() {
    fake = await fakeBroker(await freePort(), (m: Message) => {
      const device = String(bodyJson(m).device)
      return rejecting.has(device) ? { outcome: 'reject', condition: 'amqp:not-allowed', description: `${device} may not publish` } : { outcome: 'accept' }
    })
  },
  async stop() { await fake?.close() },
  async make(gw, name) {
    const proxy = await TcpProxy.start(fake!.port)
    const upstream = new AmqpUpstream(amqpUpstream.parse({
      name, type: 'amqp', host: '127.0.0.1', port: proxy.port, sasl: 'ANONYMOUS', address: 'ct/{device}',
      maxInflight: WINDOW, reconnectMinMs: 100, reconnectMaxMs: 1000,
    }), gw, log)
    const h: FakeHarness = {
      upstream, window: WINDOW, proxy,
      // The peer settles each transfer as it takes it: what it received is what arrived.
      arrived: () => fake!.received.map((m) => String(m.message_id)).filter((id) => id.startsWith(`${gw}:`)),
      prepare: async () => { await connected(h) },
      close: async () => { await upstream.close(); await proxy.close() },
    }
    return h
  },
  globalOrder: false,
  refusal: {
    expect: 'rejected',
    why: 'AMQP 1.0 rejected is final: dead-letter table',
    device: (gw) => `${gw}-bad`,
    refuse: async (_h, device) => { rejecting.add(device) },
  },
})

// ---- XMPP PubSub: Prosody ---------------------------------------------------------------------------------------

interface PubSubHarness extends UpstreamHarness { upstream: PubSubUpstream; link: XmppLink; node(device: string): string }
let prosody: Prosody | null = null
let reader: XmppUser | null = null
const SERVICE = 'pubsub.localhost'

const iq = (type: 'get' | 'set', ...children: XmlNode[]): XmlNode => ({ name: 'iq', attrs: { type, to: SERVICE }, children })
const node = (name: string, attrs: Record<string, string>, ...children: XmlNode[]): XmlNode => ({ name, attrs, children })
/** Owner request: a node's affiliations (XEP-0060 8.9.2), in order (Prosody stops at the first that fails). */
const affiliations = (n: string, list: [string, string][]): XmlNode =>
  iq('set', node('pubsub', { xmlns: `${NS.pubsub}#owner` }, node('affiliations', { node: n }, ...list.map(([jid, affiliation]) => node('affiliation', { jid, affiliation })))))

upstreamContract<PubSubHarness>('xmpp PubSub upstream -> Prosody 0.12 (XEP-0060, a node per device)', {
  async start() {
    prosody = await startProsody({ pubsub: true, pubsubStorage: 'memory' })
    reader = await xmppUser(prosody, 'reader')
  },
  async stop() {
    await reader?.stop()
    await prosody?.cleanup()
  },
  async make(gw, name) {
    const p = prosody!
    const proxy = await TcpProxy.start(p.componentPort)
    const cfg = xmppSection.parse({
      enabled: true, server: { host: '127.0.0.1', port: proxy.port }, component: { domain: p.componentDomain, secret: p.secret },
      reconnectMinMs: 100, reconnectMaxMs: 1000,
      pubsub: { enabled: true, service: SERVICE, upstream: name, node: 'ct/{gateway}/{device}', maxInflight: WINDOW, iqTimeoutMs: scaled(30000) },
    })
    const link = new XmppLink(cfg, log)
    const upstream = new PubSubUpstream(cfg, link, gw, log)
    // What the XMPP bridge does (bridges/xmpp/bridge.ts): the stream's state drives the upstream's link.
    link.on('online', () => upstream.linkUp())
    link.on('offline', (reason) => upstream.linkDown(reason))
    link.start()
    const prefix = `ct/${gw}/`
    const h: PubSubHarness = {
      upstream, window: WINDOW, proxy, link,
      node: (device) => nodeFor(cfg.pubsub.node, gw, device),
      // The reader's event notifications, in the order Prosody sent them (a republished item id shows up again).
      arrived: () => reader!.got.filter((s) => s.name === 'message' && s.attrs.from === SERVICE).flatMap((s) => {
        const items = s.getChild('event', `${NS.pubsub}#event`)?.getChild('items')
        if (!items?.attrs.node?.startsWith(prefix)) return []
        return items.getChildren('item').map((i) => i.attrs.id!)
      }),
      // Nodes are created (by the gateway's component, as the upstream itself would on the first publish) and the
      // reader subscribes before any reading goes out, so every publish is seen as a notification.
      async prepare(devices) {
        await connected(h)
        for (const d of devices) {
          await link.request(pubsubCreate(SERVICE, h.node(d), 1000), scaled(10000))
          const r = await reader!.iq(xml('iq', { type: 'set', to: SERVICE }, xml('pubsub', { xmlns: NS.pubsub }, xml('subscribe', { node: h.node(d), jid: `${reader!.jid}/test` }))))
          if (r.attrs.type !== 'result') throw new Error(`subscribe to ${h.node(d)} failed: ${r.toString()}`)
        }
      },
      close: async () => { await upstream.close(); await link.stop(); await proxy.close() },
    }
    return h
  },
  // One stream, publishes answered in order by one server process.
  globalOrder: true,
  refusal: {
    // Prosody answers a publish by an outcast with <forbidden/> of type auth: not one of the conditions the upstream
    // treats as final (bridges/xmpp/stanza.ts publishErrorOutcome), so it is released and offered again until the
    // node's owner lets the gateway publish.
    expect: 'released',
    why: 'XMPP forbidden (type auth) is retried, not dead-lettered',
    device: (gw) => `${gw}-locked`,
    async refuse(h, device) {
      await h.prepare([device])
      // The reader becomes an owner first (so it can undo this), then the gateway's component an outcast.
      await h.link.request(affiliations(h.node(device), [[reader!.jid, 'owner'], [prosody!.componentDomain, 'outcast']]), scaled(10000))
    },
    async allow(h, device) {
      const r = await reader!.iq(xml('iq', { type: 'set', to: SERVICE }, xml('pubsub', { xmlns: `${NS.pubsub}#owner` },
        xml('affiliations', { node: h.node(device) }, xml('affiliation', { jid: prosody!.componentDomain, affiliation: 'none' })))))
      if (r.attrs.type !== 'result') throw new Error(`lifting the outcast failed: ${r.toString()}`)
    },
  },
})
