// Client mode + XEP-0198 stream management against a real Prosody (mod_smacks), through a small TCP proxy the test
// controls: cutting the gateway's side of the proxy drops the gateway's TCP connection while Prosody still holds its
// side, so the gateway must RESUME (same full JID, no new login) and deliver what it produced during the drop.
// Then Prosody is restarted: resume is impossible, the gateway makes a fresh session and says so.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net'
import { startProsody, type Prosody } from './helpers/prosody.ts'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { xmppUser, xml, type XmppUser } from './helpers/xmpp.ts'
import { freePort, pause } from './helpers/net.ts'

/** gateway <-> proxy <-> Prosody. `cut()` kills the gateway side only and refuses new connections until `restore()`. */
interface Proxy { port: number; cut(): void; restore(): void; close(): Promise<void>; accepted: number }

async function startProxy(target: number): Promise<Proxy> {
  const port = await freePort()
  const sockets = new Set<Socket>()
  const held: Socket[] = []
  let refusing = false
  const server: Server = createServer((down) => {
    sockets.add(down)
    down.on('error', () => undefined).on('close', () => sockets.delete(down))
    if (refusing) { down.destroy(); return }
    px.accepted++
    const up = tcpConnect(target, '127.0.0.1')
    up.on('error', () => down.destroy())
    down.on('close', () => { if (!held.includes(up)) up.destroy() })
    up.on('close', () => down.destroy())
    down.pipe(up)
    up.pipe(down)
  })
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r))
  const px: Proxy = {
    port,
    accepted: 0,
    cut() {
      refusing = true
      for (const s of sockets) {
        // Keep Prosody's side open and silent: it does not learn about the drop from us.
        const up = (s as unknown as { _readableState: { pipes: Socket[] } })._readableState.pipes[0]
        if (up) { held.push(up); s.unpipe(up); up.unpipe(s) }
        s.destroy()
      }
    },
    restore() { refusing = false },
    async close() {
      for (const s of [...sockets, ...held]) s.destroy()
      await new Promise((r) => server.close(r))
    },
  }
  return px
}

let p: Prosody
let px: Proxy
let g: GatewayProc
const users: XmppUser[] = []
const mqtts: MqttClient[] = []
const cleanups: (() => Promise<unknown>)[] = []
const GW = 'gw@localhost'
const bodyOf = (s: { getChildText(n: string): string | null }): string => s.getChildText('body') ?? ''

/** A private Prosody, the proxy in front of it, and a client-mode gateway behind the proxy. */
async function setup(streamManagement: boolean): Promise<{ p: Prosody; px: Proxy; g: GatewayProc }> {
  const p = await startProsody({ streamManagement })
  cleanups.push(() => p.cleanup())
  p.register('gw', 'gwpw')
  const px = await startProxy(p.c2sPort)
  cleanups.push(() => px.close())
  const g = await startGatewayProc({
    xmpp: {
      enabled: true, mode: 'client',
      server: { host: '127.0.0.1', port: px.port },
      client: { jid: `${GW}/edgeway`, password: 'gwpw' },
      allow: [{ jids: ['alice@localhost'] }],
      reconnectMinMs: 200, reconnectMaxMs: 1000,
    },
    alerts: { offlineHoldSeconds: 1 },
  })
  cleanups.push(() => g.cleanup())
  await g.waitLog((l) => l.msg === 'xmpp presence announced')
  return { p, px, g }
}

/** dev1 reporting over MQTT, alice subscribed to the gateway account and seeing "1 of 1 devices online". */
async function deviceAndSubscriber(p: Prosody, g: GatewayProc, fullJid: string): Promise<{ dev: MqttClient; alice: XmppUser }> {
  const secret = await addDevice(g, 'dev1')
  const dev = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'dev1:c', username: 'dev1', password: secret })
  mqtts.push(dev)
  await dev.publishAsync('devices/dev1/telemetry', '{"temperature":20.5}', { qos: 1 })
  const alice = await xmppUser(p, 'alice')
  users.push(alice)
  const f0 = alice.got.length
  await alice.send(xml('presence', { to: GW, type: 'subscribe' }))
  await alice.wait('gateway presence: dev1 online', (s) => s.name === 'presence' && s.attrs.from === fullJid && /1 of 1 devices online/.test(s.getChildText('status') ?? ''), 10000, f0)
  return { dev, alice }
}

before(async () => {
  ({ p, px, g } = await setup(true))
})

after(async () => {
  await Promise.all(users.map((u) => u.stop()))
  await end(...mqtts)
  for (const c of cleanups.reverse()) await c()
})

test('a short TCP drop: the gateway resumes its XEP-0198 session and the alert made during the drop arrives once', async () => {
  const enabled = await g.waitLog((l) => l.msg === 'xmpp stream management enabled (XEP-0198)')
  assert.equal(enabled.resumable, true, 'Prosody 0.12 (mod_smacks) offers resumable stream management')
  const connected = g.logs.filter((l) => l.msg === 'xmpp connected')
  assert.equal(connected.length, 1)
  const fullJid = String(connected[0]!.jid)
  assert.match(fullJid, /^gw@localhost\/edgeway/)

  const { dev, alice } = await deviceAndSubscriber(p, g, fullJid)

  // Drop the gateway's TCP connection; Prosody's side of the proxy stays open.
  const fCut = alice.got.length
  const logsAtCut = g.logs.length
  px.cut()
  await g.waitLog((l) => l.msg === 'xmpp link down: reconnecting with backoff')
  // During the drop the device goes away: the bridge makes an offline alert while it has no stream.
  dev.stream.destroy()
  await pause(800)
  assert.equal(alice.got.slice(fCut).filter((s) => s.name === 'message' && /dev1 went offline/.test(bodyOf(s))).length, 0, 'no alert can arrive during the drop')

  px.restore()
  const resumed = await g.waitLog((l) => l.msg === 'xmpp stream resumed (XEP-0198)', 15000)
  assert.equal(resumed.jid, fullJid, 'the same full JID after the resume')
  const alert = await alice.wait('offline alert after the resume', (s) => s.name === 'message' && /dev1 went offline/.test(bodyOf(s)), 10000, fCut)
  assert.equal(alert.attrs.from, fullJid)
  await alice.wait('gateway status: dev1 offline', (s) => s.name === 'presence' && s.attrs.from === fullJid && /0 of 1 devices online/.test(s.getChildText('status') ?? ''), 10000, fCut)
  await pause(1500)
  const alerts = alice.got.slice(fCut).filter((s) => s.name === 'message' && /dev1 went offline/.test(bodyOf(s)))
  assert.equal(alerts.length, 1, 'the alert arrives exactly once')
  // Resumed, not logged in again: no new session, and Prosody never told alice the gateway went unavailable.
  const since = g.logs.slice(logsAtCut)
  assert.equal(since.filter((l) => l.msg === 'xmpp connected').length, 0, 'no fresh login')
  assert.equal(since.filter((l) => l.msg === 'xmpp stream resume failed: starting a fresh session').length, 0)
  const unavail = alice.got.slice(fCut).filter((s) => s.name === 'presence' && s.attrs.from?.startsWith(`${GW}/`) && s.attrs.type === 'unavailable')
  assert.equal(unavail.length, 0, `no unavailable presence for the gateway: ${unavail.join(' ')} / all: ${alice.presencesFrom(GW).join(' ')}`)
  assert.ok(g.proc.exitCode === null, 'gateway still running')
})

test('resume impossible (Prosody restarted): a fresh session with a clear log line, and the gateway works on', async () => {
  const logsAt = g.logs.length
  await p.stop()
  await g.waitLog((l) => l.msg === 'xmpp link down: reconnecting with backoff' && g.logs.indexOf(l) >= logsAt)
  await p.start()
  const failed = await g.waitLog((l) => l.msg === 'xmpp stream resume failed: starting a fresh session' && g.logs.indexOf(l) >= logsAt, 20000)
  assert.equal(typeof failed.previd, 'string')
  const fresh = await g.waitLog((l) => l.msg === 'xmpp connected' && g.logs.indexOf(l) >= logsAt, 15000)
  assert.match(String(fresh.jid), /^gw@localhost\/edgeway/)
  await g.waitLog((l) => l.msg === 'xmpp stream management enabled (XEP-0198)' && g.logs.indexOf(l) >= logsAt)
  assert.equal(g.logs.slice(logsAt).filter((l) => l.msg === 'xmpp stream resumed (XEP-0198)').length, 0)
  // The fresh session serves chat again (alice logs in anew: the restart ended her session too).
  const alice = await xmppUser(p, 'alice', 'alicepw', false)
  users.push(alice)
  assert.match(await alice.ask(GW, 'list'), /dev1/)
  assert.ok(g.proc.exitCode === null, 'gateway still running')
})

test('a server without stream management: the gateway says so, logs in afresh after a drop, and the alert made during the drop still arrives', async () => {
  const x = await setup(false)
  await x.g.waitLog((l) => l.msg === 'xmpp server offers no stream management (XEP-0198): a drop starts a fresh session, stanzas in flight may be lost')
  const fullJid = String((await x.g.waitLog((l) => l.msg === 'xmpp connected')).jid)
  const { dev, alice } = await deviceAndSubscriber(x.p, x.g, fullJid)
  const fCut = alice.got.length
  const logsAtCut = x.g.logs.length
  x.px.cut()
  await x.g.waitLog((l) => l.msg === 'xmpp link down: reconnecting with backoff')
  dev.stream.destroy()
  await pause(500)
  x.px.restore()
  await x.g.waitLog((l) => l.msg === 'xmpp connected' && x.g.logs.indexOf(l) >= logsAtCut, 25000)
  assert.equal(x.g.logs.slice(logsAtCut).filter((l) => /resum/.test(l.msg)).length, 0, 'nothing to resume without SM')
  // The alert was queued by the link while it was down and sent on the fresh session.
  await alice.wait('offline alert after the fresh login', (s) => s.name === 'message' && /dev1 went offline/.test(bodyOf(s)), 10000, fCut)
  await pause(500)
  assert.equal(alice.got.slice(fCut).filter((s) => s.name === 'message' && /dev1 went offline/.test(bodyOf(s))).length, 1)
  assert.ok(x.g.proc.exitCode === null, 'gateway still running')
})
