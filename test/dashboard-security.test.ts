// Who gets into the dashboard, against the real gateway process: login, session cookie, Origin checks on the
// WebSocket and on form posts, throttling, logout; and loopback-only access when no password is set.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { networkInterfaces } from 'node:os'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { setPassword } from './helpers/dashboard.ts'
import { tryUpgrade, httpRequest } from './helpers/http-raw.ts'

const PASSWORD = 'a long admin password'
let g: GatewayProc
let open: GatewayProc

/** This machine's first non-loopback IPv4 address: the dashboard must treat it as "the network". */
function lanAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  return undefined
}

before(async () => {
  g = await startGatewayProc({}, { start: false })
  const r = await setPassword(g.configFile, PASSWORD)
  assert.equal(r.code, 0, r.stderr)
  open = await startGatewayProc({ http: { host: '0.0.0.0' } })
  await g.start()
})
after(async () => { await g?.cleanup(); await open?.cleanup() })

const url = (p: string, gw = g): string => `http://127.0.0.1:${gw.httpPort}${p}`
const origin = (gw = g): string => `http://127.0.0.1:${gw.httpPort}`

async function login(password: string, headers: Record<string, string> = { origin: origin() }): Promise<{ status: number; location: string | undefined; cookie: string | undefined; setCookie: string | undefined }> {
  const r = await httpRequest(url('/login'), { method: 'POST', headers, body: new URLSearchParams({ password }).toString() })
  const setCookie = (r.headers['set-cookie'] as string[] | undefined)?.[0]
  return { status: r.status, location: r.headers.location as string | undefined, setCookie, cookie: setCookie?.split(';')[0] }
}

test('without a session: the page redirects to the login, the WebSocket is refused with 401', async () => {
  const page = await httpRequest(url('/'))
  assert.equal(page.status, 303)
  assert.equal(page.headers.location, '/login')
  assert.equal(await tryUpgrade(url('/ws'), { origin: origin() }), 401)
  assert.equal(await tryUpgrade(url('/ws'), { origin: origin(), cookie: 'edgeway_session=forged-token' }), 401)
  await g.waitLog((l) => l.msg === 'dashboard websocket refused: login required')
  // Assets are not secret (the login page needs them); health and metrics stay as they were.
  assert.equal((await httpRequest(url('/ui/app.js'))).status, 200)
  assert.equal((await httpRequest(url('/healthz'))).status, 200)
  // Unknown upgrade paths and asset paths that try to climb out get 404.
  assert.equal(await tryUpgrade(url('/nope')), 404)
  assert.equal((await httpRequest(url('/ui/../../package.json'))).status, 404)
  assert.equal((await httpRequest(url('/ui/%2e%2e/%2e%2e/package.json'))).status, 404)
  assert.equal((await httpRequest(url('/ui/%E0%A4%A'))).status, 404, 'a malformed escape is not a server error')
})

test('login: a wrong password gets no cookie; the right one gets an HttpOnly SameSite=Strict session', async () => {
  const bad = await login('wrong password')
  assert.equal(bad.status, 303)
  assert.equal(bad.location, '/login?failed=1')
  assert.equal(bad.setCookie, undefined)
  await g.waitLog((l) => l.msg === 'dashboard login failed: wrong password')
  const ok = await login(PASSWORD)
  assert.equal(ok.status, 303)
  assert.equal(ok.location, '/')
  assert.match(ok.setCookie!, /^edgeway_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=43200$/)
  const page = await httpRequest(url('/'), { headers: { cookie: ok.cookie! } })
  assert.equal(page.status, 200)
  assert.match(page.headers['content-security-policy'] as string, /default-src 'self'/)
  assert.equal(await tryUpgrade(url('/ws'), { origin: origin(), cookie: ok.cookie! }), 101)
})

test('cross-site: a foreign Origin cannot open the WebSocket or post a login, even with the cookie', async () => {
  const ok = await login(PASSWORD)
  assert.equal(await tryUpgrade(url('/ws'), { origin: 'http://evil.example', cookie: ok.cookie! }), 403)
  await g.waitLog((l) => l.msg === 'dashboard websocket refused: foreign Origin')
  const cross = await login(PASSWORD, { origin: 'http://evil.example' })
  assert.equal(cross.status, 403)
  assert.equal(cross.setCookie, undefined)
  // Commands travel only over this socket, so nothing else needs a CSRF token; the page route takes no POST.
  assert.equal((await httpRequest(url('/'), { method: 'POST', headers: { cookie: ok.cookie!, origin: 'http://evil.example' }, body: 'x=1' })).status, 405)
})

test('logout ends the session: the old cookie no longer opens the WebSocket', async () => {
  const ok = await login(PASSWORD)
  const out = await httpRequest(url('/logout'), { method: 'POST', headers: { cookie: ok.cookie!, origin: origin() }, body: '' })
  assert.equal(out.status, 303)
  assert.match((out.headers['set-cookie'] as string[])[0]!, /Max-Age=0/)
  assert.equal(await tryUpgrade(url('/ws'), { origin: origin(), cookie: ok.cookie! }), 401)
})

test('five wrong passwords in a minute: further logins are refused (429), even the right one', async () => {
  // (A successful login earlier reset this address's count.)
  for (let i = 0; i < 5; i++) assert.equal((await login('guess ' + i)).status, 303)
  const blocked = await login(PASSWORD)
  assert.equal(blocked.status, 429)
  assert.equal(blocked.setCookie, undefined)
  await g.waitLog((l) => l.msg === 'dashboard login refused: too many failed attempts')
})

test('without a password: loopback only, with a loud log line', async () => {
  const warn = open.logs.find((l) => /DASHBOARD HAS NO PASSWORD/.test(l.msg))
  assert.ok(warn, 'loud log line')
  assert.equal(warn.level, 40)
  assert.equal((await httpRequest(url('/', open))).status, 200)
  assert.equal(await tryUpgrade(url('/ws', open), { origin: origin(open) }), 101)
  assert.equal((await httpRequest(url('/login', open))).headers.location, '/')
  const lan = lanAddress()
  assert.ok(lan, 'this test needs a non-loopback IPv4 address on the machine')
  const far = `http://${lan}:${open.httpPort}`
  const page = await httpRequest(`${far}/`)
  assert.equal(page.status, 403)
  assert.match(page.body, /edgeway dashboard set-password/)
  assert.equal(await tryUpgrade(`${far}/ws`, { origin: far }), 403)
  assert.equal((await httpRequest(`${far}/ui/app.js`)).status, 403)
  assert.equal((await httpRequest(`${far}/login`, { method: 'POST', headers: { origin: far }, body: 'password=x' })).status, 403)
  // /healthz keeps working from anywhere, as before.
  assert.equal((await httpRequest(`${far}/healthz`)).status, 200)
})
