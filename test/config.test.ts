import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig, envOverrides, ConfigError } from '../app/config/load.ts'
import { hostname } from 'node:os'
import { jsonSchema, defaultGatewayId } from '../app/config/schema.ts'
import { runCli } from './helpers/gateway.ts'
import { tempDir } from './helpers/net.ts'

test('no file: every key has a default', () => {
  const c = loadConfig(undefined, {})
  assert.equal(c.mqtt.tcp.port, 1883)
  assert.equal(c.mqtt.ws.enabled, true)
  assert.equal(c.http.port, 8080)
  assert.equal(c.gateway.dataDir, './data')
  assert.equal(c.mqtt.allowAnonymous, false)
  assert.equal(c.mqtt.openBroker, false)
  assert.equal(c.outbox.synchronous, 'FULL')
  assert.deepEqual(c.upstreams, [])
})

test('EDGEWAY_* overrides nest on __ and camelCase the segments', () => {
  assert.deepEqual(envOverrides({ EDGEWAY_MQTT__TCP__PORT: '1884', EDGEWAY_GATEWAY__DATA_DIR: '/var/lib/x', PATH: '/bin' }),
    { mqtt: { tcp: { port: 1884 } }, gateway: { dataDir: '/var/lib/x' } })
  const { dir, cleanup } = tempDir()
  try {
    const f = join(dir, 'e.yaml')
    writeFileSync(f, 'mqtt:\n  tcp:\n    port: 2000\n    host: 127.0.0.1\n')
    const c = loadConfig(f, { EDGEWAY_MQTT__TCP__PORT: '2001' })
    assert.equal(c.mqtt.tcp.port, 2001, 'env wins over the file')
    assert.equal(c.mqtt.tcp.host, '127.0.0.1', 'the rest of the file stays')
  } finally { cleanup() }
})

test('errors name the key and what was wrong', () => {
  const { dir, cleanup } = tempDir()
  try {
    const f = join(dir, 'bad.yaml')
    writeFileSync(f, 'mqtt:\n  tcp:\n    port: 70000\n  colour: blue\noutbox:\n  synchronous: SOMETIMES\nupstreams:\n  - name: a\n    type: mqtt\n    url: http://x\n')
    assert.throws(() => loadConfig(f, {}), (e: unknown) => {
      assert.ok(e instanceof ConfigError)
      const m = e.message
      assert.match(m, /mqtt\.tcp\.port: .*(<=|65535)/)
      assert.match(m, /mqtt: unknown key "colour"/)
      assert.match(m, /outbox\.synchronous: /)
      assert.match(m, /upstreams\.0\.url: an mqtt:\/\//)
      return true
    })
    writeFileSync(f, 'mqtt: [1, 2\n')
    assert.throws(() => loadConfig(f, {}), /YAML syntax/)
    writeFileSync(f, 'mqtt:\n  tls:\n    enabled: true\n')
    assert.throws(() => loadConfig(f, {}), /mqtt\.tls: "cert" and "key" are required/)
    assert.throws(() => loadConfig(f, { EDGEWAY_HTTP__PORT: 'eighty' }), /http\.port: .*number/)
  } finally { cleanup() }
})

test('the committed JSON schema (for editor completion) is the one the code generates', async () => {
  const { readFileSync } = await import('node:fs')
  const committed = JSON.parse(readFileSync(new URL('../gateway/config/edgeway.schema.json', import.meta.url), 'utf8')) as unknown
  const fresh = JSON.parse(JSON.stringify(jsonSchema())) as unknown
  assert.deepEqual(committed, fresh, 'run `npm run schema` and commit the result')
})

test('the JSON schema carries no machine-specific default: gateway.id defaults to the host name only at parse time', async () => {
  const name = hostname()
  type IdSchema = { properties: { gateway: { properties: { id: Record<string, unknown> } } } }
  const fromCode = jsonSchema() as IdSchema
  const cli = await runCli(['config', 'schema'])
  assert.equal(cli.code, 0, cli.stderr)
  const { readFileSync } = await import('node:fs')
  const committed = readFileSync(new URL('../gateway/config/edgeway.schema.json', import.meta.url), 'utf8')
  for (const [what, text] of [['jsonSchema()', JSON.stringify(fromCode)], ['edgeway config schema', cli.stdout], ['edgeway.schema.json', committed]] as const) {
    const s = JSON.parse(text) as IdSchema
    const id = s.properties.gateway.properties.id
    assert.equal('default' in id, false, `${what}: gateway.id has no default`)
    assert.equal(id.type, 'string', what)
    assert.match(String(id.description), /host name/, `${what}: the description says what the default is`)
    assert.equal(text.includes(JSON.stringify(name)), false, `${what} contains the host name ${JSON.stringify(name)}`)
    if (defaultGatewayId() !== 'edgeway') assert.equal(text.includes(JSON.stringify(defaultGatewayId())), false, `${what} contains the default id ${JSON.stringify(defaultGatewayId())}`)
  }
  // The runtime default is unchanged: this machine's host name (sanitised), and an explicit id wins.
  assert.equal(loadConfig(undefined, {}).gateway.id, defaultGatewayId())
  assert.equal(defaultGatewayId(), name.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'edgeway')
  assert.equal(loadConfig(undefined, { EDGEWAY_GATEWAY__ID: 'gw-7' }).gateway.id, 'gw-7')
})

test('JSON schema comes from the same definition', () => {
  const s = jsonSchema() as { properties: Record<string, { properties?: Record<string, unknown> }> }
  assert.ok(s.properties.mqtt?.properties?.tcp, 'mqtt.tcp in schema')
  assert.ok(s.properties.upstreams, 'upstreams in schema')
  assert.ok(s.properties.outbox?.properties?.maxBytes)
})

test('edgeway config check: exit 0 on a good file, non-zero naming the key on a bad one', async () => {
  const { dir, cleanup } = tempDir()
  try {
    const good = join(dir, 'good.yaml')
    writeFileSync(good, 'mqtt:\n  tcp:\n    port: 1884\n')
    const ok = await runCli(['config', 'check', good])
    assert.equal(ok.code, 0, ok.stderr)
    assert.match(ok.stdout, /ok/)
    const bad = join(dir, 'bad.yaml')
    writeFileSync(bad, 'http:\n  port: -1\n')
    const r = await runCli(['config', 'check', bad])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /http\.port/)
    // and `run` refuses to start with it, naming the key
    const run = await runCli(['run', '--config', bad])
    assert.notEqual(run.code, 0)
    assert.match(run.stderr, /http\.port/)
  } finally { cleanup() }
})

test('a port already in use: the gateway exits non-zero and says which listener and why', async () => {
  const { createServer } = await import('node:net')
  const { freePort } = await import('./helpers/net.ts')
  const port = await freePort()
  const blocker = createServer().listen(port, '127.0.0.1')
  await new Promise((r) => blocker.once('listening', r))
  const { dir, cleanup } = tempDir()
  try {
    const f = join(dir, 'e.yaml')
    writeFileSync(f, `gateway:\n  dataDir: ${dir}/data\nmqtt:\n  tcp: { host: 127.0.0.1, port: ${port} }\n  ws: { enabled: false }\nhttp: { enabled: false }\n`)
    const r = await runCli(['run', '--config', f])
    assert.equal(r.code, 1)
    assert.match(r.stdout + r.stderr, new RegExp(`cannot listen for mqtt tcp on 127.0.0.1:${port}: address already in use`))
  } finally { blocker.close(); cleanup() }
})
