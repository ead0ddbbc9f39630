// Pure parts of the dashboard: coalescing under backpressure, sessions and cookies, access decisions, Host and
// Origin checks, the chart history rings, and editing the password hash into a YAML file.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync, statSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { LiveQueue, mergeReadings, mergeLists, type Sink } from '../gateway/dashboard/live-queue.ts'
import { Sessions, parseCookies, sessionCookie, clearedCookie, decideAccess, isLoopback, originAllowed, checkHost, hostPolicy } from '../gateway/dashboard/access.ts'
import { History } from '../gateway/dashboard/history.ts'
import { writePasswordHash, passwordProblem, hashPassword, hashSnippet } from '../gateway/dashboard/password.ts'
import { assetFile } from '../gateway/dashboard/assets.ts'
import { verifySecret } from '../gateway/registry/secrets.ts'
import { loadConfig } from '../app/config/load.ts'
import { tempDir } from './helpers/net.ts'

/** A socket whose buffer the test fills and drains by hand. */
function sink(): Sink & { sent: object[]; bufferedAmount: number } {
  const s = { sent: [] as object[], bufferedAmount: 0, send(text: string) { s.sent.push(JSON.parse(text) as object) } }
  return s
}

test('live queue: sends straight through while the socket keeps up', () => {
  const s = sink()
  const q = new LiveQueue(s, { highWater: 1000, maxUnkeyed: 10 })
  for (let i = 0; i < 5; i++) assert.equal(q.push({ type: 'reading', device: 'a', v: i }, 'r:a'), 'sent')
  assert.equal(s.sent.length, 5)
  assert.equal(q.size, 0)
  assert.ok(q.sentBytes > 0)
})

test('live queue: a slow socket gets the latest value per series, in first-queued order, and nothing is lost that must arrive', () => {
  const s = sink()
  const q = new LiveQueue(s, { highWater: 1000, maxUnkeyed: 10 })
  s.bufferedAmount = 5000
  assert.equal(q.push({ type: 'reading', device: 'a', metrics: { t: 1, h: 5 } }, 'r:a', mergeReadings), 'queued')
  assert.equal(q.push({ type: 'status', depth: 1 }, 'status'), 'queued')
  assert.equal(q.push({ type: 'commandResult', ref: 1 }), 'queued')
  for (let i = 2; i <= 100; i++) assert.equal(q.push({ type: 'reading', device: 'a', metrics: { t: i } }, 'r:a', mergeReadings), 'coalesced')
  assert.equal(q.push({ type: 'status', depth: 9 }, 'status'), 'coalesced')
  assert.equal(q.push({ type: 'commandResult', ref: 2 }), 'queued')
  assert.equal(q.size, 4, 'two series and two results wait, not 104 messages')
  assert.equal(q.flush(), 4, 'still congested: nothing sent')
  assert.equal(s.sent.length, 0)
  s.bufferedAmount = 0
  assert.equal(q.flush(), 0)
  assert.deepEqual(s.sent, [
    { type: 'reading', device: 'a', metrics: { t: 100, h: 5 } },
    { type: 'status', depth: 9 },
    { type: 'commandResult', ref: 1 },
    { type: 'commandResult', ref: 2 },
  ])
  assert.equal(q.coalesced, 100)
})

test('live queue: while anything waits, new messages queue behind it (no overtaking)', () => {
  const s = sink()
  const q = new LiveQueue(s, { highWater: 1000, maxUnkeyed: 10 })
  s.bufferedAmount = 2000
  q.push({ n: 1 })
  s.bufferedAmount = 0
  assert.equal(q.push({ n: 2 }), 'queued')
  q.flush()
  assert.deepEqual(s.sent, [{ n: 1 }, { n: 2 }])
})

test('live queue: flush stops again as soon as the socket is congested', () => {
  const s: Sink & { sent: string[] } = { sent: [], get bufferedAmount() { return this.sent.length >= 2 ? 5000 : 0 }, send(t: string) { this.sent.push(t) } }
  const q = new LiveQueue(s, { highWater: 1000, maxUnkeyed: 10 })
  s.sent.push('x', 'y')
  q.push({ n: 1 }, 'a'); q.push({ n: 2 }, 'b')
  s.sent.length = 0
  assert.equal(q.flush(), 0)
  assert.equal(s.sent.length, 2)
})

test('live queue: too many unkeyed messages waiting is an overflow (the caller closes the socket)', () => {
  const s = sink()
  const q = new LiveQueue(s, { highWater: 10, maxUnkeyed: 3 })
  s.bufferedAmount = 100
  for (let i = 0; i < 3; i++) assert.equal(q.push({ i }), 'queued')
  assert.equal(q.push({ i: 3 }), 'overflow')
  // Keyed series still coalesce: they cannot overflow.
  for (let i = 0; i < 1000; i++) q.push({ i }, 'k')
  assert.equal(q.size, 4)
})

test('mergeLists keeps the newest items up to the cap', () => {
  const m = mergeLists('items', 3)
  assert.deepEqual(m({ type: 'refusals', items: [1, 2] }, { type: 'refusals', items: [3, 4] }), { type: 'refusals', items: [2, 3, 4] })
})

test('sessions: create, look up, expire, revoke; tokens are random and long', () => {
  let now = 1000
  const s = new Sessions(60_000, () => now)
  const a = s.create('admin')
  const b = s.create('admin')
  assert.notEqual(a.token, b.token)
  assert.match(a.token, /^[A-Za-z0-9_-]{43}$/)
  assert.equal(s.get(a.token)?.user, 'admin')
  assert.equal(s.get('forged'), undefined)
  assert.equal(s.get(undefined), undefined)
  s.revoke(a.token)
  assert.equal(s.get(a.token), undefined)
  now += 60_000
  assert.equal(s.get(b.token), undefined, 'expired')
  assert.equal(s.size, 0)
})

test('sessions: bounded; the oldest goes first', () => {
  const s = new Sessions(60_000, Date.now, 3)
  const first = s.create('admin')
  for (let i = 0; i < 3; i++) s.create('admin')
  assert.equal(s.size, 3)
  assert.equal(s.get(first.token), undefined)
})

test('cookies: parsing and the session cookie attributes', () => {
  assert.deepEqual(parseCookies('a=1; edgeway_session=abc%3D; b'), { a: '1', edgeway_session: 'abc=' })
  assert.deepEqual(parseCookies(undefined), {})
  assert.deepEqual(parseCookies('x=1; x=2'), { x: '1' }, 'first wins, as browsers send the most specific first')
  assert.deepEqual(parseCookies('bad=%E0%A4%A'), { bad: '%E0%A4%A' })
  const c = sessionCookie('tok', 3600, false)
  assert.equal(c, 'edgeway_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600')
  assert.match(sessionCookie('tok', 10, true), /; Secure$/)
  assert.match(clearedCookie(), /^edgeway_session=; .*Max-Age=0$/)
})

test('access: loopback-only without a password, login required with one', () => {
  const session = { token: 't', user: 'admin', expires: Infinity }
  assert.deepEqual(decideAccess({ passwordSet: false, remoteAddress: '127.0.0.1', session: undefined }), { ok: true, user: 'local', session: null })
  assert.equal(decideAccess({ passwordSet: false, remoteAddress: '::ffff:127.0.0.5', session: undefined }).ok, true)
  assert.equal(decideAccess({ passwordSet: false, remoteAddress: '::1', session: undefined }).ok, true)
  const far = decideAccess({ passwordSet: false, remoteAddress: '192.0.2.7', session: undefined })
  assert.ok(!far.ok && far.status === 403 && /set-password/.test(far.reason))
  // A session does not open a password-less dashboard to the network.
  assert.equal(decideAccess({ passwordSet: false, remoteAddress: '192.0.2.7', session }).ok, false)
  const anon = decideAccess({ passwordSet: true, remoteAddress: '127.0.0.1', session: undefined })
  assert.ok(!anon.ok && anon.status === 401, 'loopback gets no free pass once a password is set')
  assert.deepEqual(decideAccess({ passwordSet: true, remoteAddress: '192.0.2.7', session }), { ok: true, user: 'admin', session })
  assert.equal(isLoopback(undefined), false)
  assert.equal(isLoopback('127.0.0.1.evil'), false)
})

/** A machine called "gw-1" with a LAN address, a link-local IPv6 one, and a reverse proxy in front. */
const policy = hostPolicy(
  { hostnames: ['GW-1'], addresses: ['127.0.0.1', '::1', '192.168.7.20', 'fe80::1c2:3ff:fe44:5566%eth0', '2001:DB8::7'] },
  ['https://gw.example.com'])

test('host check (DNS rebinding): only loopback, the machine\'s names and addresses, and allowedOrigins hosts, any port', () => {
  for (const h of ['localhost', 'localhost:8080', 'LOCALHOST:8080', 'localhost.:80', 'app.localhost:3000', '127.0.0.1:8080', '127.3.4.5', '[::1]:8080',
    'gw-1:8080', 'gw-1.local:8080', '192.168.7.20:8080', '[fe80::1c2:3ff:fe44:5566]:8080', '[2001:db8::7]', '[2001:db8:0:0:0:0:0:7]:1', 'gw.example.com', 'gw.example.com:443']) {
    assert.deepEqual(checkHost(h, policy).ok, true, h)
  }
  const evil = checkHost('evil.example:8080', policy)
  assert.ok(!evil.ok && evil.status === 403)
  assert.match(evil.reason, /"evil\.example" is not a name of this gateway.*dashboard\.allowedOrigins/)
  for (const h of ['evil.example', 'localhost.evil.example', '127.0.0.1.evil.example', 'gw-1.evil.example', 'example.com', '10.0.0.1:8080', '0.0.0.0:8080', '[::]:8080', '[2001:db8::8]']) {
    const r = checkHost(h, policy)
    assert.ok(!r.ok && r.status === 403, h)
  }
  // Nothing a URL parser could read as userinfo, a path or a second host.
  for (const h of ['127.0.0.1@evil.example', 'evil.example#@127.0.0.1', 'evil.example/127.0.0.1', '127.0.0.1 evil.example', 'localhost:80:80', '[::1', '']) {
    const r = checkHost(h, policy)
    assert.ok(!r.ok && r.status === 400, JSON.stringify(h))
  }
  const missing = checkHost(undefined, policy)
  assert.ok(!missing.ok && missing.status === 400)
  // Without the machine's names (before start) only loopback is served.
  const bare = hostPolicy({ hostnames: [], addresses: [] }, [])
  assert.equal(checkHost('localhost:1', bare).ok, true)
  assert.equal(checkHost('gw-1:1', bare).ok, false)
})

test('origin check: an own name on the very host and port the request went to, or a configured origin; no Origin is not a browser', () => {
  assert.equal(originAllowed('http://127.0.0.1:8080', '127.0.0.1:8080', policy), true)
  assert.equal(originAllowed('https://gw-1:8080', 'gw-1:8080', policy), true)
  assert.equal(originAllowed('http://[::1]:8080', '[::1]:8080', policy), true)
  assert.equal(originAllowed('https://gw-1', 'gw-1:443', policy), true, 'default port')
  assert.equal(originAllowed(undefined, 'gw-1:8080', policy), true)
  assert.equal(originAllowed('https://gw.example.com', 'localhost:8080', policy), true, 'configured (reverse proxy)')
  // A rebinding page sends its own name as Origin and as Host: equal, but not this gateway's.
  assert.equal(originAllowed('http://evil.example:8080', 'evil.example:8080', policy), false)
  assert.equal(originAllowed('http://evil.example:8080', '127.0.0.1:8080', policy), false)
  // Another port of this machine is another site; so is another of its names.
  assert.equal(originAllowed('http://127.0.0.1:3000', '127.0.0.1:8080', policy), false)
  assert.equal(originAllowed('http://localhost:8080', '127.0.0.1:8080', policy), false)
  assert.equal(originAllowed('http://gw.example.com', 'localhost:8080', policy), false, 'a configured origin is matched exactly (scheme too)')
  for (const o of ['null', 'file://', 'ftp://127.0.0.1:8080', 'http://127.0.0.1:8080/', 'http://u@127.0.0.1:8080', 'garbage']) {
    assert.equal(originAllowed(o, '127.0.0.1:8080', policy), false, o)
  }
  assert.equal(originAllowed('http://127.0.0.1:8080', undefined, policy), false)
})

test('history: ring per metric keeps the newest points in order; strings and booleans only in latest', () => {
  const h = new History(3)
  for (let i = 1; i <= 5; i++) h.add('d', i * 1000, { t: i, s: 'on', b: true })
  h.add('d', 6000, { h: 50 })
  assert.deepEqual(h.snapshot(), { d: { t: [[3, 4, 5], [3, 4, 5]], h: [[6], [50]] } })
  assert.deepEqual(h.latest(), { d: { ts: 6000, metrics: { t: 5, s: 'on', b: true, h: 50 } } })
})

test('history: bounded series per device and overall; NaN and Infinity are skipped', () => {
  const h = new History(10, 5, 2)
  h.add('a', 1, { x: 1, y: 2, z: 3, n: Number.NaN })
  h.add('b', 1, { x: 1, y: 2 })
  h.add('c', 1, { x: 1, y: Infinity, w: 2 })
  const snap = h.snapshot()
  assert.deepEqual(Object.keys(snap.a!), ['x', 'y'])
  assert.deepEqual(Object.keys(snap.c!), ['x'], 'the fifth series is the last one allowed')
})

test('password: hash written into the YAML keeps comments and mode; the config loads and the hash verifies', async () => {
  const { dir, cleanup } = tempDir()
  try {
    const file = join(dir, 'edgeway.yaml')
    writeFileSync(file, '# my gateway\ngateway:\n  id: gw-1 # stable\nhttp:\n  port: 9000\n')
    chmodSync(file, 0o640)
    const hash = await hashPassword('s3cret-password')
    writePasswordHash(file, hash)
    const text = readFileSync(file, 'utf8')
    assert.match(text, /^# my gateway\n/)
    assert.match(text, /id: gw-1 # stable/)
    assert.equal(statSync(file).mode & 0o777, 0o640)
    const c = loadConfig(file, {})
    assert.equal(c.dashboard.passwordHash, hash)
    assert.equal(await verifySecret('s3cret-password', hash), true)
    assert.equal(await verifySecret('wrong', hash), false)
    // Again: replaced, not duplicated.
    const hash2 = await hashPassword('another-password')
    writePasswordHash(file, hash2)
    assert.equal(loadConfig(file, {}).dashboard.passwordHash, hash2)
    assert.equal(readFileSync(file, 'utf8').match(/passwordHash/g)!.length, 1)
    // An empty file gets the snippet.
    const empty = join(dir, 'empty.yaml')
    writeFileSync(empty, '')
    writePasswordHash(empty, hash)
    assert.equal(readFileSync(empty, 'utf8'), hashSnippet(hash))
    // Broken YAML is refused, not overwritten.
    const broken = join(dir, 'broken.yaml')
    writeFileSync(broken, 'gateway: [\n')
    assert.throws(() => writePasswordHash(broken, hash), /YAML syntax/)
    assert.equal(readFileSync(broken, 'utf8'), 'gateway: [\n')
  } finally { cleanup() }
})

test('password: too short is refused; a malformed hash in the config is a config error naming the key', () => {
  assert.match(passwordProblem('short')!, /at least 8/)
  assert.equal(passwordProblem('long enough'), null)
  const { dir, cleanup } = tempDir()
  try {
    const file = join(dir, 'c.yaml')
    writeFileSync(file, 'dashboard:\n  passwordHash: hunter2\n')
    assert.throws(() => loadConfig(file, {}), /dashboard\.passwordHash: an scrypt hash as written by `edgeway dashboard set-password`/)
  } finally { cleanup() }
})

test('assets: paths stay inside public/ and uPlot\'s dist/; anything else is not found', () => {
  const dirs = { publicDir: '/app/gateway/dashboard/public', vendorDir: '/app/node_modules/uplot/dist' }
  assert.equal(assetFile(dirs, 'app.js'), '/app/gateway/dashboard/public/app.js')
  assert.equal(assetFile(dirs, 'vendor/uPlot.esm.js'), '/app/node_modules/uplot/dist/uPlot.esm.js')
  assert.equal(assetFile(dirs, 'camera.js'), '/app/gateway/dashboard/public/camera.js')
  for (const bad of ['../package.json', '%2e%2e/package.json', 'a/../../x', '.hidden', 'vendor/../../../etc/passwd', '%E0%A4%A', '', 'a//b', '/etc/passwd', 'a\\..\\b']) {
    assert.equal(assetFile(dirs, bad), null, bad)
  }
})
