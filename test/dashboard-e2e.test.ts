// The dashboard in Debian's Chromium against the real gateway, a real simulated MQTT device and a real Mosquitto
// upstream: login, presence, live chart, command round trip, outbox depth through an upstream outage, add a device.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { Browser, Page } from 'playwright-core'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { setPassword } from './helpers/dashboard.ts'
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { waitFor, scaled } from './helpers/net.ts'

const PASSWORD = 'correct horse battery'

/** A device that reports temperature and humidity and answers every command with an echo of its arguments. */
async function startDevice(g: GatewayProc, id: string, secret: string): Promise<{ client: MqttClient; stop(): Promise<void>; commands: string[] }> {
  const client = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: id, username: id, password: secret })
  const commands: string[] = []
  client.on('message', (topic, payload) => {
    if (topic.endsWith('/result')) return
    const { id: cmdId, args } = JSON.parse(payload.toString()) as { id: string; args: unknown }
    commands.push(topic)
    client.publish(`${topic}/result`, JSON.stringify({ id: cmdId, result: { echo: args, by: id } }), { qos: 1 })
  })
  await client.subscribeAsync(`devices/${id}/cmd/#`, { qos: 1 })
  await client.publishAsync(`devices/${id}/state`, JSON.stringify({ firmware: '1.4.2' }), { qos: 1, retain: true })
  let n = 0
  const timer = setInterval(() => {
    n++
    client.publish(`devices/${id}/telemetry`, JSON.stringify({ temperature: 21 + Math.sin(n / 3) * 2, humidity: 40 + (n % 10), seq: n }), { qos: 1 })
  }, 200)
  return { client, commands, async stop() { clearInterval(timer); await end(client) } }
}

let g: GatewayProc
let mosq: Mosquitto
let browser: Browser
let page: Page
let device: Awaited<ReturnType<typeof startDevice>> | null = null

before(async () => {
  mosq = await startMosquitto()
  g = await startGatewayProc({
    upstreams: [{ name: 'cloud', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 300 }],
  }, { start: false })
  const r = await setPassword(g.configFile, PASSWORD)
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /dashboard password set/)
  await g.start()
  browser = await launchBrowser()
  page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage()
})

after(async () => {
  await device?.stop()
  await browser?.close()
  await g?.cleanup()
  await mosq?.stop()
})

const base = (): string => `http://127.0.0.1:${g.httpPort}`

test('set-password stored only a scrypt hash in the config file', async () => {
  const { readFileSync } = await import('node:fs')
  const text = readFileSync(g.configFile, 'utf8')
  assert.match(text, /passwordHash: "?scrypt\$16384\$8\$1\$/)
  assert.ok(!text.includes(PASSWORD))
})

test('login fails with a wrong password and succeeds with the right one', async () => {
  await page.goto(base() + '/')
  assert.match(page.url(), /\/login$/)
  await page.fill('#password', 'not the password')
  await page.click('button[type=submit]')
  await page.waitForURL(/\/login\?failed=1$/)
  assert.equal(await page.isVisible('#failed'), true)
  await page.screenshot({ path: artifact('dashboard-login-failed.png') })
  assert.equal((await page.context().cookies()).length, 0)
  await page.fill('#password', PASSWORD)
  await page.click('button[type=submit]')
  await page.waitForURL(base() + '/')
  await page.waitForSelector('body[data-ready="1"]')
  const cookie = (await page.context().cookies()).find((c) => c.name === 'edgeway_session')
  assert.ok(cookie, 'session cookie set')
  assert.equal(cookie.httpOnly, true)
  assert.equal(cookie.sameSite, 'Strict')
  assert.equal(await page.textContent('#conn'), 'live')
})

test('a simulated device appears with presence, firmware and a live chart', async () => {
  const secret = await addDevice(g, 'sensor-1')
  device = await startDevice(g, 'sensor-1', secret)
  const card = page.locator('[data-device="sensor-1"]')
  await card.locator('.presence.online').waitFor({ timeout: scaled(10000) })
  assert.equal(await card.locator('.presence').textContent(), 'online')
  // Firmware comes from the retained state message (registry poll every 5 s).
  await waitFor('firmware shown', async () => (await card.locator('.meta').textContent())?.includes('fw 1.4.2'), 12000, 200)
  assert.match((await card.locator('.meta').textContent())!, /^mqtt · fw 1\.4\.2 · seen/)
  const points = async (): Promise<number> => Number(await card.getAttribute('data-points'))
  await waitFor('chart has points', async () => (await points()) >= 3, 10000, 100)
  const p1 = await points()
  await waitFor('chart grows', async () => (await points()) > p1 + 2, 10000, 100)
  assert.equal(await card.locator('canvas').count(), 1, 'one uPlot canvas')
  assert.match((await card.locator('.values').textContent())!, /temperature \d+\.\d+ · humidity \d+/)
  const legend = await card.locator('.u-legend').textContent()
  assert.ok(legend?.includes('temperature') && legend.includes('humidity'), `legend: ${legend}`)
})

test('a newly opened page shows the recent history at once', async () => {
  const p2 = await page.context().newPage()
  await p2.goto(base() + '/')
  await p2.waitForSelector('body[data-ready="1"]')
  const n = Number(await p2.locator('[data-device="sensor-1"]').getAttribute('data-points'))
  assert.ok(n >= 5, `history points on first render: ${n}`)
  await p2.close()
})

test('a command round-trips to the device and its result is shown', async () => {
  await page.locator('[data-device="sensor-1"] button').click()
  assert.equal(await page.inputValue('#command-device'), 'sensor-1')
  await page.fill('#command-name', 'set_led')
  await page.fill('#command-args', '{"on":true}')
  await page.click('#command-form button[type=submit]')
  const li = page.locator('#results li').first()
  await li.locator('.outcome').filter({ hasText: /^ok / }).waitFor({ timeout: scaled(10000) })
  assert.equal(await li.locator('.outcome').textContent(), 'ok {"echo":{"on":true},"by":"sensor-1"}')
  assert.deepEqual(device!.commands, ['devices/sensor-1/cmd/set_led'])
  // An unknown device gets the router's answer, not silence.
  await page.evaluate(() => { const s = document.getElementById('command-device') as HTMLSelectElement; s.append(new Option('ghost', 'ghost')); s.value = 'ghost' })
  await page.fill('#command-name', 'reboot')
  await page.fill('#command-args', '')
  await page.click('#command-form button[type=submit]')
  await page.locator('#results li.failed').first().waitFor({ timeout: scaled(5000) })
  assert.match((await page.locator('#results li').first().locator('.outcome').textContent())!, /^unknown_device: unknown device "ghost"/)
})

test('outbox depth rises while the upstream is down and falls when it returns', async () => {
  await page.locator('[data-upstream="cloud"] .state.up').waitFor({ timeout: scaled(10000) })
  const depth = async (): Promise<number> => Number(((await page.textContent('#outbox-depth')) ?? '').replace(/,/g, ''))
  await mosq.stop()
  await page.locator('[data-upstream="cloud"] .state.down').waitFor({ timeout: scaled(10000) })
  await waitFor('depth rises', async () => (await depth()) >= 10, 15000, 200)
  assert.equal(await page.textContent('#health'), 'degraded')
  assert.match((await page.textContent('#reasons'))!, /upstream "cloud" down/)
  await page.screenshot({ path: artifact('dashboard-upstream-down.png'), fullPage: true })
  await mosq.start()
  await page.locator('[data-upstream="cloud"] .state.up').waitFor({ timeout: scaled(15000) })
  // Readings keep arriving, so "falls" means: back to the live trickle.
  await waitFor('depth falls', async () => (await depth()) <= 5, 15000, 200)
})

test('add a device: its credentials are shown once and work', async () => {
  await page.fill('#add-id', 'sensor-2')
  await page.click('#add-form button[type=submit]')
  await page.waitForSelector('#new-device-secret')
  const secret = (await page.textContent('#new-device-secret'))!
  assert.match(secret, /^[A-Za-z0-9_-]{20,}$/)
  assert.match((await page.textContent('#credentials pre'))!, new RegExp(`-p ${g.mqttPort} -u sensor-2 -P '${secret}'`))
  await page.locator('[data-device="sensor-2"] .presence.offline').waitFor({ timeout: scaled(5000) })
  const c = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'sensor-2', username: 'sensor-2', password: secret })
  await page.locator('[data-device="sensor-2"] .presence.online').waitFor({ timeout: scaled(5000) })
  await end(c)
  await page.locator('[data-device="sensor-2"] .presence.offline').waitFor({ timeout: scaled(5000) })
  // The filter hides the devices whose id does not match.
  await page.fill('#device-filter', 'sor-2')
  assert.equal(await page.isVisible('[data-device="sensor-1"]'), false)
  assert.equal(await page.isVisible('[data-device="sensor-2"]'), true)
  await page.fill('#device-filter', '')
  assert.equal(await page.isVisible('[data-device="sensor-1"]'), true)
  // A duplicate id is refused with the registry's message.
  await page.click('#credentials button')
  await page.fill('#add-id', 'sensor-2')
  await page.click('#add-form button[type=submit]')
  await page.locator('#credentials .error').waitFor({ timeout: scaled(5000) })
  assert.equal(await page.textContent('#credentials .error'), 'device "sensor-2" already exists')
})

test('refusals appear live in the list', async () => {
  const { connectRefused } = await import('./helpers/mqtt.ts')
  await connectRefused(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'intruder', username: 'sensor-1', password: 'wrong' })
  const item = page.locator('#refusals li').filter({ hasText: 'bad_credentials' }).first()
  await item.waitFor({ timeout: scaled(5000) })
  assert.match((await item.textContent())!, /bad_credentials sensor-1: wrong or missing secret for device "sensor-1"/)
})

test('bad messages on the socket get an error reply and the socket stays usable', async () => {
  const replies = await page.evaluate(async () => {
    const ws = new WebSocket(`ws://${location.host}/ws`)
    const got: { type: string; error?: string }[] = []
    ws.onmessage = (e) => got.push(JSON.parse(e.data as string) as { type: string })
    await new Promise((r) => { ws.onopen = r })
    ws.send('not json')
    ws.send('[1,2]')
    ws.send(JSON.stringify({ type: 'nope' }))
    ws.send(JSON.stringify({ type: 'command', ref: 7 }))
    const deadline = Date.now() + 5000
    while (got.filter((m) => m.type === 'error' || m.type === 'commandResult').length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    ws.close()
    return got.filter((m) => m.type === 'error' || m.type === 'commandResult')
  })
  assert.deepEqual(replies.map((m) => m.type), ['error', 'error', 'error', 'commandResult'])
  assert.match(replies[0]!.error!, /expected a JSON object/)
  assert.match(replies[2]!.error!, /unknown message type "nope"/)
  // the log line travels over the gateway's stdout, the replies over the socket: either may arrive first
  await g.waitLog((l) => l.msg === 'dashboard message refused: unknown type')
  // Larger than the 64 KiB message limit: that socket is closed (1009), the page's own socket is not.
  const code = await page.evaluate(async () => {
    const ws = new WebSocket(`ws://${location.host}/ws`)
    await new Promise((r) => { ws.onopen = r })
    ws.send(JSON.stringify({ type: 'command', pad: 'x'.repeat(70 * 1024) }))
    return await new Promise<number>((r) => { ws.onclose = (e) => r(e.code) })
  })
  assert.ok(code === 1009 || code === 1006, `close code ${code}`)
  await g.waitLog((l) => l.msg === 'dashboard socket closed on bad input' && /Max payload size exceeded/.test(String(l.err)))
  assert.equal(await page.textContent('#conn'), 'live')
})

test('screenshots: desktop and phone', async () => {
  await page.screenshot({ path: artifact('dashboard-desktop.png'), fullPage: true })
  await page.emulateMedia({ colorScheme: 'dark' })
  await page.screenshot({ path: artifact('dashboard-desktop-dark.png') })
  await page.emulateMedia({ colorScheme: 'light' })
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
  await phone.context().addCookies(await page.context().cookies())
  await phone.goto(base() + '/')
  await phone.waitForSelector('body[data-ready="1"]')
  await phone.locator('[data-device="sensor-1"] canvas').waitFor()
  // Nothing wider than the phone: no sideways scrolling.
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`)
  await phone.screenshot({ path: artifact('dashboard-phone.png'), fullPage: true })
  await phone.close()
})

test('logout ends the session and closes the socket', async () => {
  await page.click('#logout button')
  await page.waitForURL(/\/login$/)
  await page.goto(base() + '/')
  assert.match(page.url(), /\/login$/)
})

test('gateway restart: the page notices, reconnects, and asks for the login again (sessions live in memory)', async () => {
  await page.fill('#password', PASSWORD)
  await page.click('button[type=submit]')
  await page.waitForSelector('body[data-ready="1"]')
  await device?.stop()
  device = null
  await g.stop()
  await page.locator('#conn.down').waitFor({ timeout: scaled(5000) })
  await g.start()
  await page.waitForURL(/\/login$/, { timeout: scaled(15000) })
})
