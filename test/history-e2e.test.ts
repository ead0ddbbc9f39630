// History end to end: the real gateway as a child process, an MQTT.js device publishing readings, the history API
// behind the dashboard login (raw points, rollups, CSV, 400s), a restart after which the history is still there
// (with units from the registry's metadata), and Chromium picking the 24 h range and seeing the points drawn.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Browser } from 'playwright-core'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { setPassword } from './helpers/dashboard.ts'
import { connect, end } from './helpers/mqtt.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { waitFor, scaled } from './helpers/net.ts'
import { openDatabase } from '../gateway/store/sqlite.ts'

const PASSWORD = 'history horse battery'
const DEVICE = 'hist-1'
const N = 60

let g: GatewayProc
let browser: Browser | null = null
let cookie = ''
const t0 = Date.now() - 20 * 60_000   // readings carry their own ts: 20 minutes ago, one every 10 s

before(async () => {
  g = await startGatewayProc({}, { start: false })
  const r = await setPassword(g.configFile, PASSWORD)
  assert.equal(r.code, 0, r.stderr)
  await g.start()
})

after(async () => {
  await browser?.close()
  await g?.cleanup()
})

const base = (): string => `http://127.0.0.1:${g.httpPort}`

async function login(): Promise<string> {
  const r = await fetch(base() + '/login', { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base() }, body: `password=${encodeURIComponent(PASSWORD)}` })
  assert.equal(r.status, 303)
  const set = r.headers.get('set-cookie')
  assert.ok(set, 'session cookie')
  return set.split(';')[0]!
}

async function api(path: string, withCookie = true): Promise<{ status: number; body: string; headers: Headers }> {
  const r = await fetch(base() + path, { headers: withCookie ? { cookie } : {} })
  return { status: r.status, body: await r.text(), headers: r.headers }
}

test('readings published over MQTT are in the history API as raw points, behind the login', async () => {
  const secret = await addDevice(g, DEVICE)
  const c = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: DEVICE, username: DEVICE, password: secret })
  for (let i = 0; i < N; i++) {
    await c.publishAsync(`devices/${DEVICE}/telemetry`, JSON.stringify({ ts: t0 + i * 10_000, temperature: 20 + i / 10, battery: 100 - i, state: 'ok' }), { qos: 1 })
  }
  await end(c)
  const anon = await api(`/api/history/${DEVICE}`, false)
  assert.equal(anon.status, 401, 'no session, no history')
  cookie = await login()
  const temp = await waitFor('all readings in history', async () => {
    const r = await api(`/api/history/${DEVICE}/temperature?from=${t0 - 1000}&to=${Date.now()}`)
    if (r.status !== 200) return false
    const j = JSON.parse(r.body) as { tier: string; t: number[]; v: number[] }
    return j.t.length === N ? j : false
  }, 10000, 100)
  assert.equal(temp.tier, 'raw')
  assert.equal(temp.t[0], t0)
  assert.equal(temp.v[0], 20)
  assert.equal(temp.v[N - 1], 20 + (N - 1) / 10)
  const list = JSON.parse((await api(`/api/history/${DEVICE}`)).body) as { metrics: { metric: string; firstTs: number; lastTs: number; unit: string | null }[] }
  assert.deepEqual(list.metrics.map((m) => m.metric), ['battery', 'temperature'], 'numeric metrics only')
  assert.equal(list.metrics[1]!.firstTs, t0)
  assert.equal(list.metrics[1]!.lastTs, t0 + (N - 1) * 10_000)
  // Few points asked: 1-minute rollups (6 readings each), min/avg/max.
  const roll = JSON.parse((await api(`/api/history/${DEVICE}/battery?from=${t0}&to=${t0 + 10 * 60_000 - 1}&points=10`)).body) as { tier: string; bucketMs: number; min: number[]; max: number[]; avg: number[]; n: number[] }
  assert.equal(roll.tier, 'rollup')
  assert.equal(roll.bucketMs, 60_000)
  assert.equal(roll.n.reduce((a, b) => a + b, 0), 60)
  assert.equal(Math.max(...roll.max), 100)
  assert.equal(Math.min(...roll.min), 100 - (N - 1))
})

test('the API answers bad parameters with precise 400s and unknown series with 404', async () => {
  const bad = await api(`/api/history/${DEVICE}/temperature?from=yesterday`)
  assert.equal(bad.status, 400)
  assert.match(JSON.parse(bad.body).error, /"from" must be a time in ms since the epoch/)
  const order = await api(`/api/history/${DEVICE}/temperature?from=10&to=5`)
  assert.equal(order.status, 400)
  assert.match(JSON.parse(order.body).error, /"from" \(10\) must be before "to" \(5\)/)
  const pts = await api(`/api/history/${DEVICE}/temperature?points=99999`)
  assert.equal(pts.status, 400)
  assert.match(JSON.parse(pts.body).error, /"points" must be an integer from 1 to 10000/)
  assert.equal((await api(`/api/history/${DEVICE}/nope`)).status, 404)
  assert.equal((await api('/api/history/no-such-device')).status, 404)
  assert.equal((await api('/api/history/bad%20id')).status, 400)
})

test('CSV export: header row and one line per reading, all metrics', async () => {
  const r = await api(`/api/history/${DEVICE}.csv?from=${t0}&to=${Date.now()}`)
  assert.equal(r.status, 200)
  assert.match(r.headers.get('content-type') ?? '', /^text\/csv/)
  assert.equal(r.headers.get('x-edgeway-tier'), 'raw')
  const lines = r.body.trim().split('\n')
  assert.equal(lines[0], 'time,ts_ms,battery,temperature')
  assert.equal(lines.length, N + 1)
  assert.equal(lines[1], `${new Date(t0).toISOString()},${t0},100,20`)
})

test('history points are counted in /metrics', async () => {
  const n = await waitFor('points counted', async () => { const v = await g.metric('edgeway_history_points_total'); return v >= 2 * N ? v : false }, 15000, 250)
  assert.equal(n, 2 * N)
})

test('after a restart the history is still there, with units and names from the device metadata', async () => {
  assert.equal(await g.stop(), 0)
  // The metadata editor is another feature; here the registry row gets it directly while the gateway is down.
  const db = openDatabase(join(g.dataDir, 'registry.db'))
  db.prepare('UPDATE devices SET metadata = ? WHERE id = ?').run(JSON.stringify({ metrics: { temperature: { unit: '°C', name: 'Temperature' }, battery: { unit: '%' } } }), DEVICE)
  db.close()
  await g.start()
  cookie = await login()
  const r = JSON.parse((await api(`/api/history/${DEVICE}/temperature?from=${t0 - 1000}&to=${Date.now()}`)).body) as { tier: string; t: number[]; unit: string; name: string }
  assert.equal(r.t.length, N)
  assert.equal(r.unit, '°C')
  assert.equal(r.name, 'Temperature')
  const list = JSON.parse((await api(`/api/history/${DEVICE}`)).body) as { metrics: { metric: string; unit: string | null; name: string | null }[] }
  assert.deepEqual(list.metrics.map((m) => [m.metric, m.unit, m.name]), [['battery', '%', null], ['temperature', '°C', 'Temperature']])
})

test('the dashboard draws the 24 h history after the restart', async () => {
  browser = await launchBrowser()
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage()
  await page.goto(base() + '/')
  await page.fill('#password', PASSWORD)
  await page.click('button[type=submit]')
  await page.waitForSelector('body[data-ready="1"]')
  const card = page.locator(`[data-device="${DEVICE}"]`)
  await card.waitFor()
  // After a restart the live chart has nothing (the in-memory history is gone); the 24 h range reads history.db.
  await page.click('#ranges button[data-range="24h"]')
  const chart = card.locator('.hchart[data-state="ready"]')
  await chart.waitFor({ timeout: scaled(10000) })
  assert.equal(await chart.getAttribute('data-tier'), 'raw')
  assert.equal(Number(await chart.getAttribute('data-points')), 2 * N)
  // Two units, two y-axes; the legend has the display names and units.
  const legend = (await chart.locator('.u-legend').textContent()) ?? ''
  assert.ok(legend.includes('Temperature (°C)') && legend.includes('battery (%)'), legend)
  // x ticks are local times with the date under the first tick of a day
  const ticks = (await chart.getAttribute('data-xticks')) ?? ''
  assert.match(ticks, /^\d\d:\d\d\n\S+/, `the first tick has a date: ${ticks}`)
  assert.ok(ticks.split(' | ').length >= 3, ticks)
  // Points drawn: the first series' stroke colour (#2f7ed8) is on the canvas.
  const coloured = await chart.locator('canvas').evaluate((c: HTMLCanvasElement) => {
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
    let n = 0
    for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i]! - 0x2f) < 24 && Math.abs(d[i + 1]! - 0x7e) < 24 && Math.abs(d[i + 2]! - 0xd8) < 24 && d[i + 3]! > 128) n++
    return n
  })
  assert.ok(coloured > 50, `pixels of the first series: ${coloured}`)
  await page.screenshot({ path: artifact('history-24h.png') })
  // The CSV link exports the chart's range.
  assert.match((await chart.locator('.hchart-csv').getAttribute('href')) ?? '', new RegExp(`^/api/history/${DEVICE}\\.csv\\?from=\\d+&to=\\d+$`))
  // Drag to zoom: a narrower window, loaded again; reset brings the 24 h back.
  const box = (await chart.locator('.u-over').boundingBox())!
  await page.mouse.move(box.x + box.width * 0.95, box.y + box.height / 2)
  await page.mouse.down()
  await page.mouse.move(box.x + box.width * 0.99, box.y + box.height / 2, { steps: 5 })
  await page.mouse.up()
  await waitFor('zoomed in', async () => !(await chart.locator('.hchart-reset').isHidden()) && (await card.locator('.hchart').getAttribute('data-state')) === 'ready', 10000, 100)
  const zoomedPoints = Number(await card.locator('.hchart').getAttribute('data-points'))
  assert.ok(zoomedPoints < 2 * N, `zoomed window has fewer points: ${zoomedPoints}`)
  await card.locator('.hchart-reset').click()
  await waitFor('reset', async () => Number(await card.locator('.hchart[data-state="ready"]').getAttribute('data-points').catch(() => '0')) === 2 * N, 10000, 100)
})
