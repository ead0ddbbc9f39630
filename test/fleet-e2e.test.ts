// `edgeway fleet` end to end: a real RabbitMQ, three real gateways (child processes) with amqp upstreams sending their
// lifecycle to /exchange/amq.topic/status.<id>, the fleet as a child process, and its page in Chromium. One gateway is
// SIGKILLed (shown stale, then dead), one restarted (death, then back with a birth and a new bootId), a command from
// the page reaches a simulated MQTT device on a chosen gateway and its result is shown; a message one gateway sends
// in another's name is refused; a restarted fleet shows the fleet from its store at once.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import mqtt from 'mqtt'
import rhea from 'rhea'
import type { Browser, Page } from 'playwright-core'
import { startGatewayProc, EDGEWAY_BIN, ROOT, type GatewayProc, type LogLine } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { connectAmqp, amqpSender } from './helpers/amqp.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { freePort, tempDir, scaled, waitFor, pause } from './helpers/net.ts'
import { endClient } from './helpers/mqtt.ts'
import { httpRequest } from './helpers/http-raw.ts'
import { hashPassword } from '../gateway/dashboard/password.ts'

const HEARTBEAT = 1
const TTL_MS = 3 * HEARTBEAT * 1000
const PASSWORD = 'fleet-operator-pw'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) { try { await c() } catch { /* keep cleaning */ } } })

interface FleetProc { port: number; logs: LogLine[]; proc: ChildProcess; start(): Promise<void>; stop(): Promise<void>; waitLog(pred: (l: LogLine) => boolean, ms?: number): Promise<LogLine> }

async function startFleetProc(rmqPort: number): Promise<FleetProc> {
  const { dir, cleanup } = tempDir('edgeway-fleet-')
  cleanups.push(cleanup)
  const port = await freePort()
  mkdirSync(join(dir, 'data'), { recursive: true })
  const file = join(dir, 'fleet.yaml')
  writeFileSync(file, stringify({
    log: { level: 'info' },
    fleet: {
      amqp: { host: '127.0.0.1', port: rmqPort, username: 'guest', password: 'guest', reconnectMinMs: 100, reconnectMaxMs: 500 },
      statusAddress: '/exchange/amq.topic/status.*',
      commandAddress: '/queue/cmd.{gateway}',
      replyAddress: '/queue/fleet-replies',
      commandTimeoutSeconds: 10 * Math.max(1, Number(process.env.TEST_TIME_SCALE ?? 1)),
      dataDir: join(dir, 'data'),
      http: { host: '127.0.0.1', port },
      dashboard: { passwordHash: await hashPassword(PASSWORD) },
    },
  }))
  const f: FleetProc = {
    port, logs: [], proc: undefined as unknown as ChildProcess,
    async start() {
      f.logs.length = 0
      const p = spawn(process.execPath, [EDGEWAY_BIN, 'fleet', '--config', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
      f.proc = p
      let buf = '', err = ''
      p.stdout!.on('data', (d: Buffer) => {
        buf += d.toString()
        let i
        while ((i = buf.indexOf('\n')) >= 0) { const line = buf.slice(0, i); buf = buf.slice(i + 1); try { f.logs.push(JSON.parse(line) as LogLine) } catch { f.logs.push({ level: 30, msg: line }) } }
      })
      p.stderr!.on('data', (d: Buffer) => { err += d.toString() })
      await Promise.race([
        f.waitLog((l) => l.msg === 'fleet: broker connected', 20000),
        new Promise((_r, reject) => p.once('exit', (code) => reject(new Error(`fleet exited with ${code}: ${err}`)))),
      ])
    },
    async stop() {
      const p = f.proc
      if (!p || p.exitCode !== null || p.signalCode !== null) return
      const done = new Promise((r) => p.once('exit', r))
      p.kill('SIGTERM')
      await done
    },
    async waitLog(pred, ms = 10000) {
      const deadline = Date.now() + scaled(ms)
      for (;;) {
        const hit = f.logs.find(pred)
        if (hit) return hit
        if (Date.now() > deadline) throw new Error(`fleet log line not seen; last:\n${f.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`)
        await pause(25)
      }
    },
  }
  cleanups.push(() => { try { f.proc?.kill('SIGKILL') } catch { /* gone */ } })
  await f.start()
  return f
}

let rmq: RabbitMq
let fleet: FleetProc
const gws = new Map<string, GatewayProc>()
let browser: Browser
let page: Page

before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
  // The fleet first: its status queue is bound at attach, so it hears the gateways' first births.
  fleet = await startFleetProc(rmq.port)
  await Promise.all(['gw1', 'gw2', 'gw3'].map(async (id) => {
    const g = await startGatewayProc({
      gateway: { id },
      mqtt: { openBroker: true },
      upstreams: [{ name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest', address: '/queue/tele', commandAddress: '/queue/cmd.{gateway}', statusAddress: '/exchange/amq.topic/status.{gateway}', heartbeatSeconds: HEARTBEAT, reconnectMinMs: 100, reconnectMaxMs: 500 }],
    })
    cleanups.push(() => g.cleanup())
    gws.set(id, g)
  }))
  browser = await launchBrowser()
  cleanups.push(() => browser.close())
  page = await browser.newPage()
})

const rowState = (id: string): Promise<string | null> => page.locator(`#gateways tr[data-gateway="${id}"]`).getAttribute('data-state', { timeout: scaled(1000) }).catch(() => null)
const waitState = (id: string, state: string, ms: number): Promise<true> => waitFor(`${id} shown ${state}`, async () => (await rowState(id)) === state || undefined, ms, 100)

test('the fleet page: login, every gateway online, a command round trip to an MQTT device on a chosen gateway', async () => {
  // Host check (DNS rebinding) as on the gateway's dashboard.
  const foreign = await httpRequest(`http://127.0.0.1:${fleet.port}/`, { headers: { host: 'evil.example' } })
  assert.equal(foreign.status, 403)
  const anon = await fetch(`http://127.0.0.1:${fleet.port}/`, { redirect: 'manual' })
  assert.equal(anon.status, 303, 'the page needs a login')

  await page.goto(`http://127.0.0.1:${fleet.port}/`)
  assert.match(page.url(), /\/login$/)
  await page.fill('#password', PASSWORD)
  await Promise.all([page.waitForURL(`http://127.0.0.1:${fleet.port}/`), page.click('button[type=submit]')])
  for (const id of ['gw1', 'gw2', 'gw3']) await waitState(id, 'online', 15000)
  assert.equal((await page.textContent('#count-online'))?.trim(), '3 online')

  // A simulated device on gw2 only; the command goes to gw2 through its command queue.
  const g2 = gws.get('gw2')!
  const dev = mqtt.connect(`mqtt://127.0.0.1:${g2.mqttPort}`, { clientId: 'valve-7', reconnectPeriod: 0 })
  cleanups.push(() => endClient(dev))
  await new Promise<void>((resolve) => dev.once('connect', () => resolve()))
  const seen: string[] = []
  dev.on('message', (topic, payload) => {
    const cmd = JSON.parse(payload.toString()) as { id: string; args: unknown }
    seen.push(`${topic.split('/')[3]}:${JSON.stringify(cmd.args)}`)
    dev.publish(`${topic}/result`, JSON.stringify({ id: cmd.id, result: { echo: cmd.args, from: 'valve-7' } }), { qos: 1 })
  })
  await dev.subscribeAsync('devices/valve-7/cmd/+', { qos: 1 })
  await page.click('#gateways tr[data-gateway="gw2"]')
  await waitFor('valve-7 listed online under gw2', async () => (await page.locator('#devices tr[data-device="valve-7"] .presence').textContent({ timeout: scaled(500) }).catch(() => null)) === 'online' || undefined, 15000, 100)
  await waitFor('gw2 row counts the device', async () => /^1\/\d+$/.test((await page.locator('#gateways tr[data-gateway="gw2"] td.devices').textContent({ timeout: scaled(500) }).catch(() => '')) ?? '') || undefined, 10000, 100)
  await page.click('#devices tr[data-device="valve-7"]')
  await page.fill('#cmd-name', 'open')
  await page.fill('#cmd-args', '{"percent":40}')
  await page.click('#command button[type=submit]')
  const result = page.locator('#results li').first()
  await waitFor('the command result on the page', async () => (await result.getAttribute('class')) !== 'waiting' || undefined, 15000, 100)
  assert.equal(await result.getAttribute('class'), 'ok', await result.textContent() ?? '')
  assert.match((await result.locator('.outcome').textContent()) ?? '', /"echo":\{"percent":40\}.*"from":"valve-7"/)
  assert.deepEqual(seen, ['open:{"percent":40}'])
  // A device that gw1 does not have: the gateway's own error comes back and is shown.
  await page.click('#gateways tr[data-gateway="gw1"]')
  await page.fill('#cmd-device', 'valve-7')
  await page.click('#command button[type=submit]')
  await waitFor('the error result', async () => (await result.getAttribute('class')) === 'failed' || undefined, 15000, 100)
  assert.match((await result.locator('.outcome').textContent()) ?? '', /unknown_device/)
  assert.deepEqual(seen, ['open:{"percent":40}'], 'gw1 never reached gw2\'s device')
  await page.screenshot({ path: artifact('fleet-e2e.png'), fullPage: true })
})

test('a message in another gateway\'s name is refused; the real gateway stays as it was', async () => {
  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  // Routed as gw3 (its routing key), claiming gw1 in properties and body, with a death to "kill" it.
  const s = await amqpSender(conn, '/exchange/amq.topic/status.gw3')
  const body = { schema: 1, kind: 'death', gateway: 'gw1', at: new Date().toISOString(), bootId: 'forged', reason: 'shutdown' }
  await s.send({ subject: 'death', content_type: 'application/json', application_properties: { gateway: 'gw1', kind: 'death', schema: 1 }, body: rhea.message.data_section(Buffer.from(JSON.stringify(body))) })
  const refused = await fleet.waitLog((l) => l.msg === 'fleet: status message refused' && l.gateway === 'gw1', 10000)
  assert.equal(refused.reason, 'spoofed')
  await new Promise((r) => setTimeout(r, scaled(1500)))
  assert.equal(await rowState('gw1'), 'online')
})

test('SIGKILL: stale after one ttl, dead after two more; a restarted gateway comes back with a birth', async () => {
  const g1 = gws.get('gw1')!, g3 = gws.get('gw3')!
  await g1.kill()
  const killedAt = Date.now()
  await waitState('gw1', 'stale', TTL_MS + 4000)
  const staleAt = Date.now()
  assert.ok(staleAt - killedAt >= TTL_MS - 1500, `stale only after its ttl (${staleAt - killedAt} ms)`)
  await waitState('gw1', 'dead', 2 * TTL_MS + 4000)
  const deadAt = Date.now()
  assert.ok(deadAt - staleAt >= 2 * TTL_MS - 1500, `dead only after 2 ttls of stale (${deadAt - staleAt} ms)`)
  assert.equal(await rowState('gw2'), 'online')

  // gw3: a clean stop sends its death (dead at once), the new process's birth brings it back with a new bootId.
  const bootBefore = (await fleet.waitLog((l) => l.msg === 'fleet: gateway state' && l.gateway === 'gw3')).gateway
  assert.equal(bootBefore, 'gw3')
  await g3.stop()
  await waitState('gw3', 'dead', 5000)
  await g3.start()
  await waitState('gw3', 'online', 15000)
  await waitFor('gw3 counted as restarted', async () => (await page.locator('#gateways tr[data-gateway="gw3"] td.restarts').textContent({ timeout: scaled(500) }).catch(() => null)) === '1' || undefined, 10000, 100)
  await fleet.waitLog((l) => l.msg === 'fleet: gateway state' && l.gateway === 'gw3' && /restarted \(birth/.test(String(l.why)), 10000)
  assert.match((await page.textContent('#events')) ?? '', /gw3: dead → online \(restarted \(birth with a new bootId\)\)/)
})

test('a restarted fleet shows the last known fleet at once', async () => {
  await fleet.stop()
  await fleet.start()
  const loaded = await fleet.waitLog((l) => l.msg === 'fleet: last-known state loaded')
  assert.equal(loaded.gateways, 3)
  // Sessions live in memory (as on the gateway): log in again; the page lists all three from the store, gw1 still dead.
  await page.goto(`http://127.0.0.1:${fleet.port}/`)
  assert.match(page.url(), /\/login$/)
  await page.fill('#password', PASSWORD)
  await Promise.all([page.waitForURL(`http://127.0.0.1:${fleet.port}/`), page.click('button[type=submit]')])
  for (const id of ['gw1', 'gw2', 'gw3']) assert.ok(await page.locator(`#gateways tr[data-gateway="${id}"]`).count() === 1 || await waitFor(`${id} listed`, async () => (await page.locator(`#gateways tr[data-gateway="${id}"]`).count()) === 1 || undefined, 5000))
  await waitState('gw1', 'dead', 5000)
  await waitState('gw2', 'online', 10000)
})
