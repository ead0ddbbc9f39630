// Registry: integration clients next to devices (one namespace), their secrets, and unknown ids costing a full check.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { createServer, type Server } from 'node:net'
import { Registry, RegistryError } from '../gateway/registry/registry.ts'
import { controlSocketPath } from '../gateway/control/client.ts'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { tempDir } from './helpers/net.ts'

const tmp = tempDir('edgeway-registry-')
after(() => tmp.cleanup())
let n = 0
function openRegistry(): Registry {
  const r = new Registry(join(tmp.dir, `registry-${n++}.db`))
  r.open()
  return r
}

test('devices and clients share one namespace, refused both ways with the reason', async () => {
  const r = openRegistry()
  try {
    await r.add('sensor-1')
    await assert.rejects(r.addClient('sensor-1', 'observer'), (e: unknown) => e instanceof RegistryError && /"sensor-1" is already a device/.test(e.message))
    await r.addClient('ha', 'observer')
    await assert.rejects(r.add('ha'), (e: unknown) => e instanceof RegistryError && /"ha" is already an integration client/.test(e.message))
    await assert.rejects(r.addClient('ha', 'operator'), /client "ha" already exists/)
    await assert.rejects(r.addClient('bad name', 'observer'), /invalid client name "bad name"/)
    assert.equal(r.get('ha'), undefined)
    assert.equal(r.getClient('sensor-1'), undefined)
    // presence from the broker never turns a client into a device row
    r.setOnline('ha', true, 'mqtt')
    assert.equal(r.get('ha'), undefined)
    r.setOnline('anon-1', true, 'mqtt')
    assert.equal(r.get('anon-1')?.online, true, 'unknown devices are still recorded')
  } finally { r.close() }
})

test('client lifecycle: add, list, verify, rotate, remove', async () => {
  const r = openRegistry()
  try {
    const s1 = await r.addClient('node-red', 'operator')
    const s2 = await r.addClient('ha', 'observer')
    assert.deepEqual(r.listClients().map((c) => [c.name, c.role]), [['ha', 'observer'], ['node-red', 'operator']])
    const c = r.getClient('ha')!
    assert.equal(typeof c.createdAt, 'number')
    assert.deepEqual(Object.keys(c).sort(), ['createdAt', 'name', 'role'], 'no hash leaves the registry')
    assert.equal(await r.verifyClient('ha', s2), true)
    assert.equal(await r.verifyClient('ha', s2), true, 'cached')
    assert.equal(await r.verifyClient('ha', s1), false, "another client's secret")
    assert.equal(await r.verify('ha', s2), false, 'a client is not a device')
    const s3 = await r.rotateClientSecret('ha')
    assert.notEqual(s3, s2)
    assert.equal(await r.verifyClient('ha', s2), false, 'the old secret stops working, cache or not')
    assert.equal(await r.verifyClient('ha', s3), true)
    await assert.rejects(r.rotateClientSecret('nobody'), /no client "nobody"/)
    assert.equal(r.removeClient('ha'), true)
    assert.equal(r.removeClient('ha'), false)
    assert.equal(await r.verifyClient('ha', s3), false, 'removed')
  } finally { r.close() }
})

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
async function timed(fn: () => Promise<boolean>): Promise<number> {
  const t = process.hrtime.bigint()
  assert.equal(await fn(), false)
  return Number(process.hrtime.bigint() - t) / 1e6
}

test('an unknown id (or a row without a secret) costs a scrypt check like a wrong secret', async () => {
  const r = openRegistry()
  try {
    await r.add('dev')
    await r.addClient('cli', 'observer')
    r.setOnline('secretless', true, 'mqtt')
    // the dummy hash is computed on first need: not part of the measurement
    await r.verify('nobody', 'x')
    const wrong: number[] = [], unknown: number[] = []
    // interleaved, so that a burst of load on the machine hits both series alike; medians ignore stragglers
    for (let i = 0; i < 7; i++) {
      wrong.push(await timed(() => r.verify('dev', 'wrong')))
      unknown.push(await timed(() => r.verify('nobody', 'wrong')))
      wrong.push(await timed(() => r.verifyClient('cli', 'wrong')))
      unknown.push(await timed(() => r.verifyClient('nobody', 'wrong')))
      unknown.push(await timed(() => r.verify('secretless', 'wrong')))
    }
    const [w, u] = [median(wrong), median(unknown)]
    // without the dummy check an unknown id answers in microseconds, scrypt takes tens of milliseconds
    assert.ok(u >= w * 0.5, `unknown ids: median ${u.toFixed(2)} ms, wrong secrets: median ${w.toFixed(2)} ms`)
  } finally { r.close() }
})

// ---- the CLI, against a temp config (no gateway running unless a fake control socket says otherwise) ----

let g: GatewayProc | undefined
after(async () => { await g?.cleanup() })

const secretOf = (stdout: string): string => /^secret: (\S+)$/m.exec(stdout)?.[1] ?? assert.fail(`no secret in: ${stdout}`)

function registryOf(gw: GatewayProc): Registry {
  const r = new Registry(join(gw.dataDir, 'registry.db'))
  r.open()
  return r
}

/** A stand-in for the gateway's control socket: records requests, answers with `answer(method)`. */
async function fakeControl(dataDir: string, answer: (method: string) => { result: unknown } | { error: string }): Promise<{ server: Server; calls: { method: string; params: unknown }[] }> {
  const calls: { method: string; params: unknown }[] = []
  const server = createServer((s) => {
    let buf = ''
    s.setEncoding('utf8')
    s.on('data', (d: string) => {
      buf += d
      const i = buf.indexOf('\n')
      if (i < 0) return
      const req = JSON.parse(buf.slice(0, i)) as { id: number; method: string; params: unknown }
      calls.push({ method: req.method, params: req.params })
      s.end(JSON.stringify({ id: req.id, ...answer(req.method) }) + '\n')
    })
  })
  await new Promise<void>((resolve) => server.listen(controlSocketPath(dataDir), resolve))
  return { server, calls }
}
const closeServer = (s: Server): Promise<void> => new Promise((resolve) => s.close(() => resolve()))

test('CLI: client add/list/show/rotate-secret/remove, roles from the config, one namespace with devices', async () => {
  g = await startGatewayProc({ roles: { 'own-space': { rules: [{ allow: 'both', topic: 'clients/%u/#' }] } } }, { start: false })

  const added = await g.cli(['client', 'add', 'ha', '--role', 'observer'])
  assert.equal(added.code, 0, added.stderr)
  const secret = secretOf(added.stdout)
  assert.match(added.stdout, /^role: observer$/m)
  assert.ok(added.stdout.includes(`mosquitto_sub -h 127.0.0.1 -p ${g.mqttPort} -u ha -P '${secret}' -t 'devices/+/telemetry' -v`), added.stdout)

  const own = await g.cli(['client', 'add', 'script-1', '--role', 'own-space'])
  assert.equal(own.code, 0, own.stderr)
  assert.match(own.stdout, /-t 'clients\/script-1\/#' -v/, 'the example uses a filter the role allows')

  const badRole = await g.cli(['client', 'add', 'tg', '--role', 'admin'])
  assert.equal(badRole.code, 1)
  assert.match(badRole.stderr, /unknown role "admin"; known roles: observer, operator, own-space/)

  const clash = await g.cli(['device', 'add', 'ha'])
  assert.equal(clash.code, 1)
  assert.match(clash.stderr, /"ha" is already an integration client/)
  assert.equal((await g.cli(['device', 'add', 'sensor-1'])).code, 0)
  const clash2 = await g.cli(['client', 'add', 'sensor-1', '--role', 'operator'])
  assert.equal(clash2.code, 1)
  assert.match(clash2.stderr, /"sensor-1" is already a device/)

  const list = await g.cli(['client', 'list', '--json'])
  assert.equal(list.code, 0, list.stderr)
  assert.deepEqual((JSON.parse(list.stdout) as { name: string; role: string }[]).map((c) => [c.name, c.role]), [['ha', 'observer'], ['script-1', 'own-space']])
  const show = await g.cli(['client', 'show', 'ha'])
  assert.equal((JSON.parse(show.stdout) as { role: string }).role, 'observer')
  assert.equal((await g.cli(['client', 'show', 'nope'])).code, 1)

  // no gateway running: the registry change is all, nothing extra printed
  const rotated = await g.cli(['client', 'rotate-secret', 'ha'])
  assert.equal(rotated.code, 0, rotated.stderr)
  assert.equal(rotated.stderr, '')
  const fresh = secretOf(rotated.stdout)
  assert.notEqual(fresh, secret)
  const reg = registryOf(g)
  try {
    assert.equal(await reg.verifyClient('ha', fresh), true, 'the printed secret is the stored one')
    assert.equal(await reg.verifyClient('ha', secret), false)
  } finally { reg.close() }

  const removed = await g.cli(['client', 'remove', 'script-1'])
  assert.equal(removed.code, 0, removed.stderr)
  assert.equal(removed.stdout, 'removed script-1\n')
  assert.equal(removed.stderr, '')
  assert.equal((await g.cli(['client', 'remove', 'script-1'])).code, 1)
})

test('CLI: remove and rotate-secret ask a running gateway to drop live connections; a failure there is only a warning', async () => {
  g ??= await startGatewayProc({}, { start: false })
  for (const [kind, id] of [['client', 'tg'], ['device', 'dev-9']] as const) {
    const add = kind === 'client' ? ['client', 'add', id, '--role', 'observer'] : ['device', 'add', id]
    assert.equal((await g.cli(add)).code, 0)
  }

  let fake = await fakeControl(g.dataDir, () => ({ result: { disconnected: 2 } }))
  try {
    const r = await g.cli(['client', 'rotate-secret', 'tg'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^disconnected 2 live connections$/m)
    const d = await g.cli(['device', 'remove', 'dev-9'])
    assert.equal(d.code, 0, d.stderr)
    assert.match(d.stdout, /^removed dev-9\ndisconnected 2 live connections\n$/)
    assert.deepEqual(fake.calls, [
      { method: 'access.revoke', params: { kind: 'client', id: 'tg' } },
      { method: 'access.revoke', params: { kind: 'device', id: 'dev-9' } },
    ])
  } finally { await closeServer(fake.server) }

  fake = await fakeControl(g.dataDir, (m) => ({ error: `unknown control method "${m}"` }))
  try {
    const r = await g.cli(['client', 'remove', 'tg'])
    assert.equal(r.code, 0, 'the registry change is done: exit 0')
    assert.equal(r.stdout, 'removed tg\n')
    assert.match(r.stderr, /warning: could not ask the running gateway to disconnect client "tg" \(unknown control method "access.revoke"\)/)
    assert.equal(fake.calls.length, 1)
  } finally { await closeServer(fake.server) }
  assert.equal((await g.cli(['client', 'show', 'tg'])).code, 1, 'removed all the same')
})

test('the running gateway\'s registry (live state NORMAL) still registers, rotates and removes devices and clients', async () => {
  const { dir, cleanup } = tempDir('edgeway-reg-live-')
  try {
    const r = new Registry(join(dir, 'registry.db'), { liveState: 'NORMAL' })
    r.open()
    const secret = await r.add('live-1')
    assert.equal(await r.verify('live-1', secret), true)
    r.setOnline('live-1', true, 'mqtt')
    const fresh = await r.rotateSecret('live-1')
    assert.equal(await r.verify('live-1', fresh), true)
    const cs = await r.addClient('live-ha', 'observer')
    assert.equal(await r.verifyClient('live-ha', cs), true)
    assert.equal(r.remove('live-1'), true)
    assert.equal(r.removeClient('live-ha'), true)
    r.close()
  } finally { cleanup() }
})
