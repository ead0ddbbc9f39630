// The device page in Debian's Chromium against the real gateway (child process) and MQTT.js devices: registry facts,
// presence and last payload, metadata (units, declared command forms), a command round trip into the history,
// refused actions (no session, foreign Origin), rotate secret, OTA push from an uploaded image, the journal after a
// gateway restart, and remove.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { Browser, Page } from 'playwright-core'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { setPassword } from './helpers/dashboard.ts'
import { connect, connectRefused, end, type MqttClient } from './helpers/mqtt.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { OtaSimNode } from './helpers/ota-node.ts'
import { scaled, waitFor } from './helpers/net.ts'

const PASSWORD = 'device page password'

interface SimDevice { client: MqttClient; commands: string[]; closed: Promise<void>; stop(): Promise<void> }

/** Reports temperature and humidity, answers every command with an echo of its arguments, and "fail" with an error. */
async function startDevice(g: GatewayProc, id: string, secret: string): Promise<SimDevice> {
  const client = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: id, username: id, password: secret })
  const commands: string[] = []
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
  client.on('message', (topic, payload) => {
    if (topic.endsWith('/result')) return
    const { id: cmdId, args } = JSON.parse(payload.toString()) as { id: string; args: unknown }
    commands.push(topic)
    const answer = topic.endsWith('/fail') ? { id: cmdId, error: 'relay stuck' } : { id: cmdId, result: { echo: args, by: id } }
    client.publish(`${topic}/result`, JSON.stringify(answer), { qos: 1 })
  })
  await client.subscribeAsync(`devices/${id}/cmd/#`, { qos: 1 })
  await client.publishAsync(`devices/${id}/state`, JSON.stringify({ firmware: '1.4.2' }), { qos: 1, retain: true })
  let n = 0
  const timer = setInterval(() => {
    n++
    client.publish(`devices/${id}/telemetry`, JSON.stringify({ temperature: 20 + n / 10, humidity: 40 + (n % 10), seq: n }), { qos: 1 })
  }, 250)
  return { client, commands, closed, async stop() { clearInterval(timer); await end(client) } }
}

let g: GatewayProc
let browser: Browser
let page: Page
let secret = ''
let device: SimDevice | null = null
let node: OtaSimNode | null = null

before(async () => {
  g = await startGatewayProc({}, { start: false })
  const r = await setPassword(g.configFile, PASSWORD)
  assert.equal(r.code, 0, r.stderr)
  await g.start()
  browser = await launchBrowser()
  page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage()
  page.on('dialog', (d) => { void d.accept() })
  secret = await addDevice(g, 'sensor-1')
  device = await startDevice(g, 'sensor-1', secret)
})

after(async () => {
  await device?.stop()
  await node?.stop()
  await browser?.close()
  await g?.cleanup()
})

const base = (): string => `http://127.0.0.1:${g.httpPort}`
const mqttUrl = (): string => `mqtt://127.0.0.1:${g.mqttPort}`

async function login(): Promise<void> {
  await page.goto(base() + '/login')
  await page.fill('#password', PASSWORD)
  await page.click('button[type=submit]')
  await page.waitForSelector('body[data-ready="1"]')
}

async function openDevicePage(id: string): Promise<void> {
  await page.goto(`${base()}/device/${id}`)
  await page.waitForSelector('body[data-ready="1"]', { timeout: scaled(10000) })
}

test('the device page shows registry facts, the presence timeline and the last payload', async () => {
  await login()
  // From the device's card on the main page.
  await page.locator('[data-device="sensor-1"] h3 a').click()
  await page.waitForURL(`${base()}/device/sensor-1`)
  await page.waitForSelector('body[data-ready="1"]')
  assert.equal(await page.textContent('#device-id'), 'sensor-1')
  await page.locator('#presence.online').waitFor({ timeout: scaled(5000) })
  await page.locator('#presence-list li').filter({ hasText: /online mqtt/ }).first().waitFor({ timeout: scaled(5000) })
  assert.ok(await page.locator('#timeline .seg.online').count() >= 1, 'an online segment on the timeline')
  await page.locator('#last-payload').filter({ hasText: '"temperature"' }).waitFor({ timeout: scaled(10000) })
  assert.match((await page.textContent('#last-payload'))!, /"humidity": \d+/)
  await page.locator('[data-fact="firmware"]').filter({ hasText: '1.4.2' }).waitFor({ timeout: scaled(10000) })
  await page.locator('#firmware-list li').filter({ hasText: '1.4.2' }).waitFor({ timeout: scaled(5000) })
  assert.equal(await page.textContent('[data-fact="secret"]'), 'set')
  // The payload follows the device (the page polls; the payload is kept in memory between flushes).
  const seqOf = async (): Promise<number> => Number((/"seq": (\d+)/.exec((await page.textContent('#last-payload')) ?? '') ?? [])[1])
  const s1 = await seqOf()
  await waitFor('a newer payload', async () => (await seqOf()) > s1, 10000, 200)
})

const chartPoints = async (metric: string): Promise<number> => {
  const c = page.locator(`[data-metric-chart="${metric}"] .hchart[data-state="ready"]`)
  return (await c.count()) === 1 ? Number(await c.getAttribute('data-points')) : 0
}

test('history charts: one per metric, and a range query', async () => {
  await waitFor('temperature history', async () => (await chartPoints('temperature')) > 0, 15000, 200)
  assert.ok((await chartPoints('humidity')) > 0)
  assert.equal(await page.locator('[data-metric-chart]').count(), 2, 'temperature and humidity (seq is not a metric)')
  await page.selectOption('#range', '7d')
  await waitFor('7-day range drawn', async () => {
    const c = page.locator('[data-metric-chart="temperature"] .hchart')
    if ((await c.getAttribute('data-state')) !== 'ready' || (await chartPoints('temperature')) === 0) return false
    // The chart's own CSV link carries the window it queried.
    const q = new URL((await c.locator('.hchart-csv').getAttribute('href'))!, base()).searchParams
    return Math.abs(Number(q.get('to')) - Number(q.get('from')) - 7 * 86400_000) < 5000
  }, 10000, 200)
  await page.selectOption('#range', '24h')
})

test('metadata: a bad shape is refused with the reason; a good one shows units and names and declares command forms', async () => {
  await page.fill('#metadata', JSON.stringify({ metrics: { temperature: { unit: 5 } } }))
  await page.click('#metadata-form button[type=submit]')
  await page.locator('#metadata-status.error').waitFor({ timeout: scaled(5000) })
  assert.match((await page.textContent('#metadata-status'))!, /^metrics\.temperature\.unit: /)
  const metadata = {
    room: 'lab 2',
    metrics: { temperature: { unit: '°C', name: 'Temperature' }, humidity: { unit: '%' } },
    commands: [{ name: 'setLed', args: { on: { type: 'boolean' }, level: { type: 'integer', min: 0, max: 255, default: 7 } } }],
  }
  await page.fill('#metadata', JSON.stringify(metadata))
  await page.click('#metadata-form button[type=submit]')
  await page.locator('#metadata-status.ok').waitFor({ timeout: scaled(5000) })
  const row = page.locator('[data-metric="temperature"]')
  await row.locator('.unit').filter({ hasText: '°C' }).waitFor({ timeout: scaled(5000) })
  assert.equal(await row.locator('th').textContent(), 'Temperature')
  assert.equal(await page.locator('[data-metric="humidity"] .unit').textContent(), '%')
  await page.locator('form[data-command="setLed"]').waitFor({ timeout: scaled(5000) })
  // The history charts read units and names from the same metadata.
  await page.locator('[data-metric-chart="temperature"] .u-legend').filter({ hasText: 'Temperature (°C)' }).waitFor({ timeout: scaled(10000) })
  // Written to the registry: the CLI sees it.
  const shown = JSON.parse((await g.cli(['device', 'show', 'sensor-1'])).stdout) as { metadata: unknown }
  assert.deepEqual(shown.metadata, metadata)
})

test('a command from a declared form and a free-form one round-trip to the device and land in the history', async () => {
  const form = page.locator('form[data-command="setLed"]')
  await form.locator('input[name="on"]').check()
  await form.locator('button[type=submit]').click()
  const okRow = page.locator('#command-history tr.ok').filter({ hasText: 'setLed' }).first()
  await okRow.waitFor({ timeout: scaled(10000) })
  assert.equal(await okRow.locator('.outcome').textContent(), 'ok {"echo":{"on":true,"level":7},"by":"sensor-1"}')
  assert.equal(await okRow.locator('td.code').textContent(), '{"on":true,"level":7}')
  assert.ok(Number(await okRow.locator('td.num').textContent()) >= 0)
  assert.deepEqual(device!.commands, ['devices/sensor-1/cmd/setLed'])
  await page.fill('#free-name', 'fail')
  await page.fill('#free-args', '{"relay":2}')
  await page.click('#free-command button[type=submit]')
  const failRow = page.locator('#command-history tr.failed').filter({ hasText: 'fail' }).first()
  await failRow.waitFor({ timeout: scaled(10000) })
  assert.equal(await failRow.locator('.outcome').textContent(), 'device_error: relay stuck')
  await page.screenshot({ path: artifact('device-page.png'), fullPage: true })
})

test('on a phone the page fits the screen', async () => {
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
  await phone.context().addCookies(await page.context().cookies())
  await phone.goto(`${base()}/device/sensor-1`)
  await phone.waitForSelector('body[data-ready="1"]')
  await phone.locator('#command-history tr.ok').first().waitFor({ timeout: scaled(5000) })
  // Against the device width: a mobile browser widens its layout viewport to fit content that overflows.
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - 390)
  await phone.screenshot({ path: artifact('device-page-phone.png'), fullPage: true })
  await phone.close()
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`)
})

test('actions without a session, or with a foreign Origin, are refused and change nothing', async () => {
  const cookie = (await page.context().cookies()).find((c) => c.name === 'edgeway_session')!
  const headers = { 'content-type': 'application/json' }
  const post = (path: string, h: Record<string, string>, method = 'POST'): Promise<Response> => fetch(base() + path, { method, headers: { ...headers, ...h }, body: method === 'DELETE' ? undefined : '{}' })
  assert.equal((await post('/api/devices/sensor-1/rotate-secret', {})).status, 401)
  assert.equal((await post('/api/devices/sensor-1', {}, 'DELETE')).status, 401)
  assert.equal((await fetch(base() + '/api/devices/sensor-1')).status, 401, 'no reading without a session either')
  const session = { cookie: `edgeway_session=${cookie.value}` }
  assert.equal((await post('/api/devices/sensor-1/rotate-secret', { ...session, origin: 'http://evil.example' })).status, 403)
  assert.equal((await post('/api/devices/sensor-1', { ...session, origin: 'http://evil.example' }, 'DELETE')).status, 403)
  assert.equal((await post('/api/devices/sensor-1/metadata', { ...session, origin: `http://127.0.0.1:${g.httpPort + 1}` }, 'PUT')).status, 403, 'another port is another site')
  // A form post (a "simple" content type, no preflight) is not accepted as an action either.
  const form = await fetch(base() + '/api/devices/sensor-1/rotate-secret', { method: 'POST', headers: { ...session, origin: base(), 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' })
  assert.equal(form.status, 415)
  // The registry is unchanged: the old secret still logs in, and the device is still connected.
  const probe = await connect(mqttUrl(), { clientId: 'sensor-1:probe', username: 'sensor-1', password: secret })
  await end(probe)
  assert.equal(device!.client.connected, true)
  await g.waitLog((l) => l.msg === 'dashboard action refused: foreign Origin')
})

test('rotate secret: shown once, the live connection closes, the old secret is refused and the new one accepted', async () => {
  await page.click('#rotate')
  await page.waitForSelector('#new-secret', { timeout: scaled(10000) })
  const fresh = (await page.textContent('#new-secret'))!
  assert.match(fresh, /^[A-Za-z0-9_-]{20,}$/)
  assert.notEqual(fresh, secret)
  assert.match((await page.textContent('#secret-box'))!, /1 live connection was closed/)
  await Promise.race([device!.closed, new Promise((_r, reject) => setTimeout(() => reject(new Error('device connection not closed')), scaled(5000)))])
  const refused = await connectRefused(mqttUrl(), { clientId: 'sensor-1', username: 'sensor-1', password: secret })
  assert.equal(refused.code, 4, 'bad user name or password')
  await device!.stop()
  secret = fresh
  device = await startDevice(g, 'sensor-1', secret)
  // Hidden on request, and not in the page again after a reload.
  await page.click('#secret-box button')
  assert.equal(await page.isVisible('#secret-box'), false)
  await page.locator('#admin-list li').filter({ hasText: 'rotate-secret by admin' }).waitFor({ timeout: scaled(5000) })
  await page.reload()
  await page.waitForSelector('body[data-ready="1"]')
  assert.ok(!(await page.content()).includes(fresh), 'the secret is not served again')
  assert.ok(!(await g.http('/api/devices/sensor-1')).body.includes(fresh))
})

test('OTA push from an uploaded image: progress, then the new version', async () => {
  const nodeSecret = await addDevice(g, 'node-1')
  node = new OtaSimNode({ url: mqttUrl(), device: 'node-1', secret: nodeSecret, version: '1.0.0', rebootMs: 100, holdReboot: true })
  await node.start()
  await openDevicePage('node-1')
  const image = randomBytes(48 * 1024)
  await page.setInputFiles('#ota-file', { name: 'fw-1.1.0.bin', mimeType: 'application/octet-stream', buffer: image })
  await page.fill('#ota-version', '1.1.0')
  await page.fill('#ota-deadline', '30')
  await page.click('#ota-form button[type=submit]')
  await page.locator('#ota-status.ok').waitFor({ timeout: scaled(10000) })
  assert.match((await page.textContent('#ota-status'))!, /^job \d+ announced: 1\.1\.0, 49152 bytes$/)
  // Held in its reboot: the page shows the job applied, all bytes through, until the node comes back.
  await page.locator('#ota-active-label').filter({ hasText: /^job \d+: 1\.1\.0 applied 100%$/ }).waitFor({ timeout: scaled(15000) })
  assert.equal(await page.locator('#ota-progress').evaluate((p: HTMLProgressElement) => [p.value, p.max].join('/')), '49152/49152')
  await page.locator('#ota-jobs tr[data-state="applied"]').waitFor({ timeout: scaled(5000) })
  // (the page can show "applied" before the node has gone into its held reboot: powerOn() only ends a hold)
  await waitFor('node held in its reboot', () => node!.holding, 10000, 20)
  node.powerOn()
  await page.locator('#ota-jobs tr[data-state="succeeded"]').waitFor({ timeout: scaled(30000) })
  assert.equal(await page.isVisible('#ota-active'), false)
  assert.match((await page.locator('#ota-jobs tr').first().textContent())!, /1\.0\.0 → 1\.1\.0/)
  await page.locator('[data-fact="firmware"]').filter({ hasText: '1.1.0' }).waitFor({ timeout: scaled(10000) })
  assert.equal(node.version, '1.1.0')
  // The journal has the job's states (announced ... succeeded) and the push by the operator.
  const body = JSON.parse((await page.evaluate(async () => (await fetch(location.pathname.replace('/device/', '/api/devices/'))).text()))) as { journal: { ota: { data: { state: string } }[]; admin: { data: { action: string } }[] } }
  const states = body.journal.ota.map((e) => e.data.state).reverse()
  // (the first chunk can be served before the push reports "announced": then the journal starts at "downloading")
  assert.ok(['announced,downloading,applied,succeeded', 'downloading,applied,succeeded'].includes(states.join(',')), `states: ${states.join(',')}`)
  assert.ok(body.journal.admin.some((e) => e.data.action === 'ota-push'))
  // The upload was removed once the OTA service had its own copy.
  const { readdirSync } = await import('node:fs')
  assert.deepEqual(readdirSync(`${g.dataDir}/uploads`), [])
})

test('the journal survives a gateway restart', async () => {
  await device?.stop()
  device = null
  await node?.stop()
  node = null
  await g.stop()
  await g.start()
  await login()
  await openDevicePage('sensor-1')
  // Presence before the restart, and the offline it ended with.
  await page.locator('#presence-list li').first().waitFor()
  const presence = await page.locator('#presence-list li').allTextContents()
  assert.ok(presence.filter((t) => /online mqtt/.test(t)).length >= 2, `presence: ${presence.join(' | ')}`)
  assert.ok(presence.some((t) => /offline mqtt/.test(t)), `presence: ${presence.join(' | ')}`)
  assert.equal(await page.locator('#command-history tr.ok').filter({ hasText: 'setLed' }).count(), 1)
  assert.equal(await page.locator('#command-history tr.failed').filter({ hasText: 'relay stuck' }).count(), 1)
  assert.match((await page.textContent('#last-payload'))!, /"temperature"/)
  assert.ok(await page.locator('#admin-list li').filter({ hasText: 'rotate-secret' }).count() === 1)
  assert.equal(await page.locator('#presence.offline').count(), 1)
  // History from before the restart is charted.
  await waitFor('history after the restart', async () => (await chartPoints('temperature')) > 0, 15000, 200)
})

test('remove: the live connection closes, the login is refused, the page says so', async () => {
  device = await startDevice(g, 'sensor-1', secret)
  await page.locator('#presence.online').waitFor({ timeout: scaled(5000) })
  await page.click('#remove')
  await page.locator('#gone').filter({ hasText: 'sensor-1 was removed (1 connection closed)' }).waitFor({ timeout: scaled(10000) })
  await Promise.race([device.closed, new Promise((_r, reject) => setTimeout(() => reject(new Error('device connection not closed')), scaled(5000)))])
  const refused = await connectRefused(mqttUrl(), { clientId: 'sensor-1', username: 'sensor-1', password: secret })
  assert.ok(refused.code === 5 || refused.code === 4, `connack ${refused.code}`)
  assert.equal((await g.cli(['device', 'show', 'sensor-1'])).code === 0, false, 'gone from the registry')
  await openDevicePageGone()
})

async function openDevicePageGone(): Promise<void> {
  await page.goto(`${base()}/device/sensor-1`)
  await page.locator('#gone').filter({ hasText: 'no device "sensor-1"' }).waitFor({ timeout: scaled(5000) })
}
