// Alerts end to end with the gateway as a child process: an MQTT.js device disconnects, /healthz and the dashboard
// header (headless Chromium, logged in) show its offline alert only after the hold time, and both clear after it is
// back for the hold time; a threshold alert appears and clears the same way; a flapping device raises one alert.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { Browser, Page } from 'playwright-core'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { setPassword } from './helpers/dashboard.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { scaled, waitFor } from './helpers/net.ts'

const PASSWORD = 'alerts test password'
const HOLD_S = 3

interface AlertJson { id: string; rule: string; severity: string; since: string; text: string; device?: string }
type HealthJson = { status: string; reasons: string[]; alerts: AlertJson[] }

let g: GatewayProc
let browser: Browser
let page: Page
const clients: MqttClient[] = []
const secrets = new Map<string, string>()

const health = async (): Promise<HealthJson> => (await g.health()) as unknown as HealthJson

async function device(id: string): Promise<MqttClient> {
  const c = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: id, username: id, password: secrets.get(id)! })
  clients.push(c)
  return c
}

before(async () => {
  g = await startGatewayProc({
    alerts: { offlineHoldSeconds: HOLD_S, thresholds: [{ metric: 'temperature', above: 30, hysteresis: 1 }] },
  }, { start: false })
  const r = await setPassword(g.configFile, PASSWORD)
  assert.equal(r.code, 0, r.stderr)
  await g.start()
  for (const id of ['alert-dev', 'flappy', 'hot']) secrets.set(id, await addDevice(g, id))
  browser = await launchBrowser()
  page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage()
  await page.goto(`http://127.0.0.1:${g.httpPort}/`)
  await page.fill('#password', PASSWORD)
  await page.click('button[type=submit]')
  await page.waitForSelector('body[data-ready="1"]')
})

after(async () => {
  await end(...clients)
  await browser?.close()
  await g?.cleanup()
})

test('a device offline: nothing before the hold time; then /healthz degraded and the header alert; both clear after it is back', async () => {
  const dev = await device('alert-dev')
  await dev.publishAsync('devices/alert-dev/telemetry', JSON.stringify({ temperature: 21 }), { qos: 1 })
  assert.equal((await health()).status, 'ok')
  assert.equal(await page.isHidden('#alerts'), true, 'no alert indicator while all is well')
  const t0 = Date.now()
  await end(dev)
  await g.waitLog((l) => l.msg === 'mqtt client disconnected' && l.clientId === 'alert-dev')
  // Well inside the hold time: still ok (unless this machine is so slow that the hold time has already passed).
  const early = await health()
  if (Date.now() - t0 < HOLD_S * 1000 - 500) {
    assert.equal(early.status, 'ok', early.reasons.join('; '))
    assert.deepEqual(early.alerts, [])
  }
  const h = await waitFor('offline alert on /healthz', async () => { const x = await health(); return x.alerts.length > 0 && x }, HOLD_S * 1000 + 10000, 100)
  const raisedAfter = Date.now() - t0
  assert.ok(raisedAfter >= HOLD_S * 1000 - 100, `raised after ${raisedAfter} ms, hold is ${HOLD_S} s`)
  assert.equal(h.status, 'degraded', 'an alert degrades, never fails')
  assert.deepEqual(h.alerts.map((a) => [a.id, a.rule, a.severity, a.device]), [['device_offline:alert-dev', 'device_offline', 'warning', 'alert-dev']])
  assert.match(h.alerts[0]!.text, /^alert-dev went offline \(/)
  assert.ok(h.reasons.includes(h.alerts[0]!.text), h.reasons.join('; '))
  assert.ok(Math.abs(Date.parse(h.alerts[0]!.since) - t0) < scaled(2000), 'since = when it went offline')
  assert.equal(await g.metric('edgeway_alerts_active', { rule: 'device_offline' }), 1)
  assert.equal(await g.metric('edgeway_alerts_raised_total', { rule: 'device_offline' }), 1)

  // The dashboard header: the indicator with the count, the list with the text.
  await page.locator('#alerts').waitFor({ state: 'visible', timeout: scaled(5000) })
  assert.equal(await page.textContent('#alerts-count'), '1 alert')
  await waitFor('health pill degraded with the alert as a reason', async () => (await page.textContent('#health')) === 'degraded' && /alert-dev went offline/.test((await page.textContent('#reasons')) ?? ''), 3000, 50)
  await page.click('#alerts summary')
  const item = page.locator('#alert-list li[data-alert="device_offline:alert-dev"]')
  await item.waitFor({ state: 'visible', timeout: scaled(2000) })
  assert.match((await item.textContent())!, /alert-dev went offline/)
  await page.screenshot({ path: artifact('alerts-header.png') })

  // Back: cleared only once it has been online for the hold time.
  const t1 = Date.now()
  await device('alert-dev')
  await waitFor('cleared on /healthz', async () => (await health()).status === 'ok', HOLD_S * 1000 + 10000, 100)
  assert.ok(Date.now() - t1 >= HOLD_S * 1000 - 100, 'not before the hold time online')
  assert.deepEqual((await health()).alerts, [])
  await page.locator('#alerts').waitFor({ state: 'hidden', timeout: scaled(5000) })
  assert.equal(await g.metric('edgeway_alerts_active', { rule: 'device_offline' }), 0)
  const lines = g.logs.filter((l) => (l.msg === 'alert raised' || l.msg === 'alert cleared') && l.alert === 'device_offline:alert-dev')
  assert.deepEqual(lines.map((l) => l.msg), ['alert raised', 'alert cleared'], 'each transition logged once')
})

test('a threshold (with hysteresis) appears in the header and clears', async () => {
  const hot = await device('hot')
  await hot.publishAsync('devices/hot/telemetry', JSON.stringify({ temperature: 31.5 }), { qos: 1 })
  const item = page.locator('#alert-list li[data-alert="threshold:hot:temperature>30"]')
  await waitFor('threshold alert in the list', async () => (await item.count()) === 1, 10000, 100)
  assert.match((await item.textContent())!, /hot: temperature = 31\.5 is above 30/)
  assert.equal(await page.isVisible('#alerts'), true)
  assert.equal((await health()).alerts.find((a) => a.rule === 'threshold')?.device, 'hot')
  await hot.publishAsync('devices/hot/telemetry', JSON.stringify({ temperature: 29.5 }), { qos: 1 })
  await new Promise((r) => setTimeout(r, scaled(1000)))
  assert.equal(await item.count(), 1, 'inside the limit but not past the hysteresis band: still active')
  await hot.publishAsync('devices/hot/telemetry', JSON.stringify({ temperature: 28 }), { qos: 1 })
  await page.locator('#alerts').waitFor({ state: 'hidden', timeout: scaled(5000) })
  assert.deepEqual((await health()).alerts, [])
})

test('a flapping device (connects and drops every 300 ms) raises one alert and logs it once', async () => {
  const from = g.logs.length
  const stopAt = Date.now() + (HOLD_S + 2) * 1000
  while (Date.now() < stopAt) {
    const c = await device('flappy')
    await new Promise((r) => setTimeout(r, 150))
    c.stream.destroy()
    await new Promise((r) => setTimeout(r, 150))
  }
  const h = await waitFor('flapping alert', async () => { const x = await health(); return x.alerts.some((a) => a.device === 'flappy') && x }, 10000, 100)
  assert.match(h.alerts.find((a) => a.device === 'flappy')!.text, /^flappy went offline \d+ times in \d+ s \(flapping; last: /)
  const raised = g.logs.slice(from).filter((l) => l.msg === 'alert raised' && l.device === 'flappy')
  assert.equal(raised.length, 1)
  assert.equal(await g.metric('edgeway_alerts_raised_total', { rule: 'device_offline' }), 2, 'alert-dev once, flappy once')
})

test('removing a device (CLI) clears its active alert, once, and nothing comes back', async () => {
  assert.ok((await health()).alerts.some((a) => a.id === 'device_offline:flappy'))
  const r = await g.cli(['device', 'remove', 'flappy'])
  assert.equal(r.code, 0, r.stderr)
  await waitFor('alert cleared by the removal', async () => !(await health()).alerts.some((a) => a.device === 'flappy'), 15000, 200)
  const cleared = g.logs.filter((l) => l.msg === 'alert cleared' && l.device === 'flappy')
  assert.deepEqual(cleared.map((l) => l.text), ['flappy was removed'], JSON.stringify(g.logs.filter((l) => /^alert/.test(l.msg))))
  const h = await health()
  assert.equal(h.status, 'ok', h.reasons.join('; '))
})
