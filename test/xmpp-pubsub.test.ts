// Telemetry to PubSub (XEP-0060) through the outbox against a real Prosody: readings land on the device's node,
// a Prosody outage (before and in the middle of a stream) loses nothing; no PubSub service and a wrong component
// secret give clear errors without a crash.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startProsody, type Prosody } from './helpers/prosody.ts'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { simulateDevice } from './helpers/load.ts'
import { waitFor, pause } from './helpers/net.ts'
import { xmppUser, xml, type XmppUser } from './helpers/xmpp.ts'

let p: Prosody
let reader: XmppUser
const gateways: GatewayProc[] = []

function xmppConfig(extra: Record<string, unknown> = {}, pubsub: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    mqtt: { openBroker: true },
    xmpp: {
      enabled: true,
      server: { host: '127.0.0.1', port: p.componentPort },
      component: { domain: p.componentDomain, secret: p.secret },
      reconnectMinMs: 100,
      reconnectMaxMs: 1000,
      pubsub: { enabled: true, service: 'pubsub.localhost', maxItems: 100000, ...pubsub },
      ...extra,
    },
  }
}

/** One gateway at a time: Prosody accepts one connection per component domain. */
async function gateway(overrides: Record<string, unknown>): Promise<GatewayProc> {
  for (const old of gateways.splice(0)) await old.cleanup()
  const g = await startGatewayProc(overrides)
  gateways.push(g)
  return g
}

/** Item ids on a node (the readings' message ids); [] when the node does not exist. */
async function items(node: string): Promise<string[]> {
  // Prosody restarts in these tests: log in again when the old session is gone.
  if (!reader.online()) { await reader.stop(); reader = await xmppUser(p, 'reader', 'readerpw', false) }
  const r = await reader.iq(xml('iq', { type: 'get', to: 'pubsub.localhost' }, xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }, xml('items', { node }))), 30000)
  if (r.attrs.type === 'error') return []
  return (r.getChild('pubsub')?.getChild('items')?.getChildren('item') ?? []).map((i) => i.attrs.id!)
}

const sent = async (g: GatewayProc): Promise<number> => g.metric('edgeway_messages_out_total', { upstream: 'xmpp' })

before(async () => {
  p = await startProsody({ pubsub: true, pubsubStorage: 'sql' })
  reader = await xmppUser(p, 'reader')
})

after(async () => {
  await reader?.stop()
  for (const g of gateways) await g.cleanup()
  await p?.cleanup()
})

test('readings land on the device node with their message ids; a backlog from a Prosody outage drains with 0 lost', async () => {
  const g = await gateway(xmppConfig())
  await g.waitLog((l) => l.msg === 'pubsub upstream ready')
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  // First a few live readings: the node is created on the first publish.
  const live = simulateDevice(url, 'p1', { max: 20, window: 1 })
  await waitFor('20 live readings published', async () => (await sent(g)) >= 20, 15000)
  await live.stop()
  const first = await items('edgeway/test-gw/p1')
  assert.equal(first.length, 20)
  assert.ok(first.includes('test-gw:p1:1') && first.includes('test-gw:p1:20'), first.join(','))
  await g.waitLog((l) => l.msg === 'pubsub node created' && l.node === 'edgeway/test-gw/p1')

  // Prosody down: readings pile up in the outbox; back up: the backlog drains.
  await p.stop()
  await waitFor('upstream down', async () => (await g.health()).upstreams.find((u) => u.name === 'xmpp')?.connected === false, 10000)
  // Modest counts: Prosody's SQL item store takes ~60 publishes/s here (memory: ~2,500/s; see scripts/bench/xmpp).
  const N = 300
  const sim = simulateDevice(url, 'p1', { max: N, window: 32, startSeq: 1000 })
  await waitFor(`${N} readings acked by the gateway`, () => sim.acked.size >= N, 30000)
  await sim.stop()
  assert.equal(await sent(g), 20, 'nothing published while Prosody is down')
  await p.start()
  const t0 = performance.now()
  await waitFor('backlog drained', async () => (await sent(g)) >= 20 + N, 60000, 100)
    .catch(async (err: Error) => { throw new Error(`${err.message}: sent ${await sent(g)}; health ${JSON.stringify((await g.health()).upstreams)}\n${g.logs.slice(-12).map((l) => JSON.stringify(l)).join('\n')}`) })
  const secs = (performance.now() - t0 - 0) / 1000
  const all = new Set(await items('edgeway/test-gw/p1'))
  const missing = [...sim.acked].filter((n) => !all.has(`test-gw:p1:${n + 21 - 1000}`))
  assert.deepEqual(missing, [], 'every acked reading is on the node')
  assert.equal(all.size, 20 + N)
  console.log(`pubsub backlog drain after the outage: ${N} readings in ${secs.toFixed(2)} s (incl. reconnect) = ${(N / secs).toFixed(0)} readings/s`)
})

test('Prosody restarted in the middle of a stream: 0 readings lost (outbox replay, same item ids)', async () => {
  const g = await gateway(xmppConfig())
  await g.waitLog((l) => l.msg === 'pubsub upstream ready')
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const sim = simulateDevice(url, 'p2', { window: 1, intervalMs: 2, max: 400 })
  await waitFor('streaming', async () => (await sent(g)) >= 100, 20000)
  await p.stop()
  await pause(700)
  await p.start()
  await waitFor('device done', () => sim.acked.size >= 400, 60000)
  await waitFor('all published', async () => (await sent(g)) >= 400, 60000, 100)
  const all = new Set(await items('edgeway/test-gw/p2'))
  const missing = Array.from({ length: 400 }, (_, i) => `test-gw:p2:${i + 1}`).filter((id) => !all.has(id))
  assert.deepEqual(missing, [])
  await g.waitLog((l) => l.msg === 'xmpp link down: reconnecting with backoff')
  await sim.stop()
})

test('no PubSub service: the upstream says so in health and the log, stays down, and keeps the readings', async () => {
  const g = await gateway(xmppConfig({}, { service: 'nopubsub.localhost' }))
  const line = await g.waitLog((l) => l.msg === 'xmpp pubsub disabled: no PubSub service')
  assert.equal(line.service, 'nopubsub.localhost')
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'p3', { max: 10, window: 1 })
  await waitFor('acked', () => sim.acked.size >= 10, 10000)
  await sim.stop()
  const h = await g.health()
  const u = h.upstreams.find((x) => x.name === 'xmpp') as unknown as { connected: boolean; lastError: string | null; lag: number }
  assert.equal(u.connected, false)
  assert.match(u.lastError ?? '', /no PubSub service at nopubsub\.localhost/)
  await waitFor('lag counted', async () => ((await g.health()).upstreams.find((x) => x.name === 'xmpp')?.lag ?? 0) >= 10, 10000)
})

test('wrong component secret: a clear error, retried with backoff, no crash', async () => {
  const g = await gateway({ ...xmppConfig(), xmpp: { ...(xmppConfig().xmpp as object), component: { domain: p.componentDomain, secret: 'wrong' } } })
  const line = await g.waitLog((l) => l.msg === 'xmpp connect failed: retrying with backoff')
  assert.match(String(line.err), /refused the component secret for devices\.localhost .*check xmpp\.component\.secret/)
  await pause(1500)
  assert.equal(g.proc.exitCode, null, 'still running')
  assert.equal((await g.http('/healthz')).status < 600, true)
  const h = await g.health()
  assert.equal(h.upstreams.find((x) => x.name === 'xmpp')?.connected, false)
})
