// Who gets into the dashboard, against the real gateway process: login, session cookie, Origin checks on the
// WebSocket and on form posts, throttling (also of parallel attempts), logout; loopback-only access when no password
// is set; and the Host check against DNS rebinding.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { networkInterfaces } from 'node:os'
import { connect } from 'node:net'
import { startGatewayProc, type GatewayProc, type ConfigOverrides } from './helpers/gateway.ts'
import { setPassword } from './helpers/dashboard.ts'
import { tryUpgrade, httpRequest } from './helpers/http-raw.ts'
import { scaled, waitFor } from './helpers/net.ts'

const PASSWORD = 'a long admin password'
/** Short lockouts for the throttle gateway, long enough that a few requests fit inside one on a slow machine. */
const LOCK_SECONDS = Math.ceil(scaled(3000) / 1000)
let g: GatewayProc
let open: GatewayProc
/** Each throttle test has its own gateway: all test requests come from 127.0.0.1, one throttle key. */
let burst: GatewayProc
let flood: GatewayProc

async function passwordGateway(overrides: ConfigOverrides = {}): Promise<GatewayProc> {
  const gw = await startGatewayProc(overrides, { start: false })
  const r = await setPassword(gw.configFile, PASSWORD)
  assert.equal(r.code, 0, r.stderr)
  await gw.start()
  return gw
}

/** This machine's first non-loopback IPv4 address: the dashboard must treat it as "the network". */
function lanAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  return undefined
}

before(async () => {
  [g, open, burst, flood] = await Promise.all([
    passwordGateway(),
    startGatewayProc({ http: { host: '0.0.0.0' } }),
    passwordGateway({ dashboard: { loginThrottle: { budget: 5, lockSeconds: LOCK_SECONDS } } }),
    passwordGateway(),
  ])
})
after(async () => { await Promise.all([g, open, burst, flood].map((gw) => gw?.cleanup())) })

const url = (p: string, gw = g): string => `http://127.0.0.1:${gw.httpPort}${p}`
const origin = (gw = g): string => `http://127.0.0.1:${gw.httpPort}`

interface LoginResult { status: number; location: string | undefined; cookie: string | undefined; setCookie: string | undefined; retryAfter: string | undefined; body: string }

async function login(password: string, headers: Record<string, string> = { origin: origin() }, gw = g): Promise<LoginResult> {
  const r = await httpRequest(url('/login', gw), { method: 'POST', headers, body: new URLSearchParams({ password }).toString() })
  const setCookie = (r.headers['set-cookie'] as string[] | undefined)?.[0]
  return { status: r.status, location: r.headers.location as string | undefined, setCookie, cookie: setCookie?.split(';')[0], retryAfter: r.headers['retry-after'] as string | undefined, body: r.body }
}

const lockoutLines = (gw: GatewayProc): number => gw.logs.filter((l) => l.msg === 'dashboard login refused: too many failed attempts').length

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

test('five wrong passwords: further logins are refused (429) for the default 30 s, even the right one', async () => {
  // (A successful login earlier reset this address's count.)
  for (let i = 0; i < 5; i++) assert.equal((await login('guess ' + i)).status, 303)
  const blocked = await login(PASSWORD)
  assert.equal(blocked.status, 429)
  assert.equal(blocked.setCookie, undefined)
  assert.ok(Number(blocked.retryAfter) > 25 && Number(blocked.retryAfter) <= 30, `retry-after ${blocked.retryAfter}`)
  await g.waitLog((l) => l.msg === 'dashboard login refused: too many failed attempts')
})

test('40 parallel logins from one address, 39 wrong and 1 right: only the budget is checked; the lockout refuses the right password until it ends', async () => {
  const o = { origin: origin(burst) }
  // The right one last: the server still sees them in no fixed order.
  const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => login(i === 39 ? PASSWORD : `wrong ${i}`, o, burst)))
  const checked = rs.filter((r) => r.status !== 429)
  assert.ok(checked.length >= 1 && checked.length <= 5, `${checked.length} of 40 attempts were checked; the budget is 5`)
  for (const r of checked) assert.equal(r.status, 303)
  for (const r of rs.filter((x) => x.status === 429)) { assert.ok(Number(r.retryAfter) >= 1, 'retry-after on every refusal'); assert.equal(r.setCookie, undefined) }
  const right = rs[39]!
  const sessions = rs.filter((r) => r.setCookie !== undefined)
  if (right.status === 429) assert.equal(sessions.length, 0, 'no wrong password gets a session')
  else assert.deepEqual(sessions, [right])

  // Locked (again, if the right one got in and reset the count): now the right password is refused too.
  let locked: LoginResult | undefined
  for (let i = 0; i < 6 && !locked; i++) { const r = await login('wrong again', o, burst); if (r.status === 429) locked = r }
  assert.ok(locked, 'locked within the budget')
  const refused = await login(PASSWORD, o, burst)
  assert.equal(refused.status, 429)
  assert.equal(refused.setCookie, undefined)
  assert.ok(Number(refused.retryAfter) >= 1 && Number(refused.retryAfter) <= LOCK_SECONDS, `retry-after ${refused.retryAfter}`)
  assert.match(refused.body, /try again in \d+ s/)
  // A browser (the login form) gets a page that says when, with the way back.
  const page = await httpRequest(url('/login', burst), { method: 'POST', headers: { ...o, accept: 'text/html,application/xhtml+xml,*/*;q=0.8' }, body: `password=${encodeURIComponent(PASSWORD)}` })
  assert.equal(page.status, 429)
  assert.match(page.headers['content-type'] as string, /^text\/html/)
  assert.ok(Number(page.headers['retry-after']) >= 1)
  assert.match(page.body, /Try again in \d+ seconds?/)
  assert.match(page.body, /<a href="\/login">/)
  assert.equal(page.headers['set-cookie'], undefined)
  // One warning per lockout, not one per refused attempt.
  await burst.waitLog((l) => l.msg === 'dashboard login refused: too many failed attempts')
  const refusals = rs.filter((r) => r.status === 429).length + 3
  assert.ok(lockoutLines(burst) <= 2, `${lockoutLines(burst)} lockout warnings for ${refusals} refusals`)

  // Once the lockout is over, the right password gets in (refused attempts while waiting do not count).
  const ok = await waitFor('the lockout to end', async () => { const r = await login(PASSWORD, o, burst); return r.status !== 429 && r }, LOCK_SECONDS * 1000 + 5000, 250)
  assert.equal(ok.status, 303)
  assert.equal(ok.location, '/')
  assert.equal((await httpRequest(url('/', burst), { headers: { cookie: ok.cookie! } })).status, 200)
})

test('100 parallel wrong logins: all but the budget get 429, with one lockout warning', async () => {
  const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => login(`wrong ${i}`, { origin: origin(flood) }, flood)))
  const refused = rs.filter((r) => r.status === 429)
  assert.ok(refused.length >= 95, `${refused.length} of 100 refused`)
  for (const r of rs) assert.ok(r.status === 429 || r.status === 303, String(r.status))
  for (const r of refused) assert.ok(Number(r.retryAfter) > 25 && Number(r.retryAfter) <= 30, `retry-after ${r.retryAfter}`)
  assert.ok(rs.every((r) => r.setCookie === undefined))
  // The checked ones log their failures after the lockout began: once they are in, so is every lockout line.
  await waitFor('the checked attempts logged', () => flood.logs.filter((l) => l.msg === 'dashboard login failed: wrong password').length === 100 - refused.length)
  assert.equal(lockoutLines(flood), 1)
})

test('DNS rebinding: a foreign Host gets 403 on the page, the login, the assets and the WebSocket, also with no password', async () => {
  const port = open.httpPort
  const evil = `evil.example:${port}`
  const page = await httpRequest(url('/', open), { headers: { host: evil } })
  assert.equal(page.status, 403)
  assert.match(page.body, /"evil\.example" is not a name of this gateway.*dashboard\.allowedOrigins/)
  assert.equal((await httpRequest(url('/ui/app.js', open), { headers: { host: evil } })).status, 403)
  assert.equal((await httpRequest(url('/login', open), { headers: { host: evil } })).status, 403)
  assert.equal(await tryUpgrade(url('/ws', open), { host: evil, origin: `http://${evil}` }), 403)
  assert.equal(await tryUpgrade(url('/ws', open), { host: evil }), 403)
  await open.waitLog((l) => l.msg === "dashboard request refused: Host is not one of this gateway's names" && l.host === evil)
  // Its own names still work.
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) {
    assert.equal((await httpRequest(url('/', open), { headers: { host } })).status, 200, host)
    assert.equal(await tryUpgrade(url('/ws', open), { host, origin: `http://${host}` }), 101, host)
  }
  // The Origin is checked against the gateway's names, not against whatever Host the request carries.
  assert.equal(await tryUpgrade(url('/ws', open), { host: `127.0.0.1:${port}`, origin: `http://${evil}` }), 403)
  assert.equal(await tryUpgrade(url('/ws', open), { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port + 1}` }), 403, 'another port is another site')
  // With a password too; a refused Host does not even reach the login throttle.
  const post = await httpRequest(url('/login'), { method: 'POST', headers: { host: `evil.example:${g.httpPort}`, origin: `http://evil.example:${g.httpPort}` }, body: 'password=x' })
  assert.equal(post.status, 403)
  assert.equal(await tryUpgrade(url('/ws'), { host: `evil.example:${g.httpPort}` }), 403)
})

test('a request without a Host header is refused (400)', async () => {
  // HTTP/1.0 may leave Host out; Node's parser demands it only of HTTP/1.1.
  const answer = await new Promise<string>((resolve, reject) => {
    const s = connect(open.httpPort, '127.0.0.1', () => s.end('GET / HTTP/1.0\r\n\r\n'))
    let text = ''
    s.on('data', (d: Buffer) => { text += d.toString() })
    s.on('end', () => resolve(text))
    s.on('error', reject)
  })
  assert.match(answer, /^HTTP\/1\.[01] 400 /)
  assert.match(answer, /a Host header is required/)
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
