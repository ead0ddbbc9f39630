// `edgeway doctor`: the pure checks, and the command against real configs, ports and directories.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:net'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { checkClock, checkDashboard, checkNodeVersion, checkSerial, type CheckResult } from '../app/doctor.ts'
import { configSchema } from '../app/config/schema.ts'
import { runCli, startGatewayProc } from './helpers/gateway.ts'
import { freePort, tempDir } from './helpers/net.ts'

async function configFor(dir: string, over: Record<string, unknown> = {}): Promise<string> {
  const base = {
    gateway: { id: 'doctor-test', dataDir: join(dir, 'data') },
    mqtt: { tcp: { host: '127.0.0.1', port: await freePort() }, ws: { host: '127.0.0.1', port: await freePort() } },
    http: { host: '127.0.0.1', port: await freePort() },
  }
  const file = join(dir, 'edgeway.yaml')
  writeFileSync(file, stringify({ ...base, ...over }))
  return file
}

async function doctor(file: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; results: CheckResult[]; text: string }> {
  const json = await runCli(['doctor', '--config', file, '--json'], env)
  const text = await runCli(['doctor', '--config', file], env)
  assert.equal(json.code, text.code)
  return { code: json.code, results: JSON.parse(json.stdout) as CheckResult[], text: text.stdout }
}

const byName = (rs: CheckResult[], name: string): CheckResult => {
  const r = rs.find((x) => x.name === name)
  assert.ok(r, `no check "${name}" in ${rs.map((x) => x.name).join(', ')}`)
  return r
}

test('checks: Node.js version, clock, serial', () => {
  assert.equal(checkNodeVersion('20.11.1').ok, true)
  const old = checkNodeVersion('18.19.0')
  assert.equal(old.ok, false)
  assert.match(old.fix ?? '', /NodeSource/)
  const past = checkClock(new Date('2020-01-01T00:00:00Z'), null)
  assert.equal(past.level, 'fail')
  assert.match(past.fix ?? '', /set-ntp/)
  assert.equal(checkClock(new Date('2025-06-01T00:00:00Z'), 'no').level, 'warn')
  assert.equal(checkClock(new Date('2025-06-01T00:00:00Z'), 'yes').level, 'ok')
  const { dir, cleanup } = tempDir('edgeway-dev-')
  try {
    assert.equal(checkSerial(dir).level, 'ok', 'no adapters: nothing to check')
    writeFileSync(join(dir, 'ttyUSB0'), '')
    chmodSync(join(dir, 'ttyUSB0'), 0o660)
    assert.match(checkSerial(dir).detail, /ttyUSB0 readable and writable/)
    const gone = join(dir, 'serial-by-id-board')
    const missing = checkSerial(dir, [join(dir, 'ttyUSB0'), gone])
    assert.equal(missing.level, 'fail')
    assert.match(missing.detail, new RegExp(`${gone} \\(serial\\.ports\\.1\\.path\\)`))
    assert.match(missing.fix ?? '', /by-id/)
    if (process.getuid?.() !== 0) { // root opens anything: the denied case is only observable as another user
      chmodSync(join(dir, 'ttyUSB0'), 0o000)
      const denied = checkSerial(dir)
      assert.equal(denied.level, 'fail')
      assert.match(denied.fix ?? '', /usermod -aG dialout/)
    }
  } finally { cleanup() }
})

test('doctor: a good config passes with exit code 0', async () => {
  const { dir, cleanup } = tempDir('edgeway-doctor-')
  try {
    const file = await configFor(dir)
    const { code, results, text } = await doctor(file)
    assert.equal(code, 0, text)
    assert.ok(results.every((r) => r.ok), text)
    for (const n of ['node', 'config', 'sqlite', 'data dir', 'disk space', 'port mqtt.tcp', 'port mqtt.ws', 'port http', 'serial', 'clock']) byName(results, n)
    assert.match(text, /no problems found|no problems, \d+ warning/)
  } finally { cleanup() }
})

test('doctor: a port in use is reported with the process and a fix', async () => {
  const { dir, cleanup } = tempDir('edgeway-doctor-')
  const port = await freePort()
  const srv: Server = createServer()
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r))
  try {
    const file = await configFor(dir, { http: { host: '127.0.0.1', port } })
    const { code, results, text } = await doctor(file)
    assert.equal(code, 1)
    const r = byName(results, 'port http')
    assert.equal(r.level, 'fail')
    assert.match(r.detail, new RegExp(`127\\.0\\.0\\.1:${port} is in use by pid ${process.pid}`))
    assert.match(r.fix ?? '', new RegExp(`ss -ltnp 'sport = :${port}'.*http\\.port`))
    assert.match(text, /\[FAIL\] port http/)
  } finally {
    srv.close()
    cleanup()
  }
})

test('doctor: ports held by the running gateway itself are fine', async () => {
  const g = await startGatewayProc()
  try {
    const { results, text } = await doctor(g.configFile)
    for (const n of ['port mqtt.tcp', 'port mqtt.ws', 'port http']) {
      const r = byName(results, n)
      assert.equal(r.level, 'ok', text)
      assert.match(r.detail, /in use by edgeway itself \(pid \d+\)/)
    }
  } finally { await g.cleanup() }
})

test('doctor: an unwritable data dir is reported', async () => {
  const { dir, cleanup } = tempDir('edgeway-doctor-')
  try {
    // A regular file where a directory should be: unwritable even for root (tests may run as root).
    writeFileSync(join(dir, 'not-a-dir'), '')
    const file = await configFor(dir, { gateway: { id: 'doctor-test', dataDir: join(dir, 'not-a-dir', 'data') } })
    const { code, results } = await doctor(file)
    assert.equal(code, 1)
    const r = byName(results, 'data dir')
    assert.equal(r.level, 'fail')
    assert.match(r.detail, /cannot be created/)
    assert.match(r.fix ?? '', /chown edgeway:edgeway/)
    if (process.getuid?.() !== 0) {
      mkdirSync(join(dir, 'ro'))
      chmodSync(join(dir, 'ro'), 0o500)
      const ro = await doctor(await configFor(dir, { gateway: { id: 'doctor-test', dataDir: join(dir, 'ro') } }))
      assert.match(byName(ro.results, 'data dir').detail, /is not writable/)
    }
    // The service's override wins over the file, as for `run`.
    const viaEnv = await doctor(file, { EDGEWAY_GATEWAY__DATA_DIR: join(dir, 'data') })
    assert.equal(byName(viaEnv.results, 'data dir').level, 'ok')
  } finally { cleanup() }
})

test('doctor: a bad config is reported naming the key', async () => {
  const { dir, cleanup } = tempDir('edgeway-doctor-')
  try {
    const file = join(dir, 'bad.yaml')
    writeFileSync(file, 'mqtt:\n  tcp:\n    port: "eighty"\n')
    const { code, results, text } = await doctor(file)
    assert.equal(code, 1)
    const r = byName(results, 'config')
    assert.equal(r.level, 'fail')
    assert.match(r.detail, /mqtt\.tcp\.port/)
    assert.match(r.fix ?? '', /edgeway config check/)
    assert.match(text, /\[FAIL\] config/)
    assert.match(text, /mqtt\.tcp\.port/)
  } finally { cleanup() }
})

test('doctor: a dashboard without a password warns only when the HTTP port listens beyond loopback', () => {
  const base = configSchema.parse({})
  const lan = checkDashboard({ ...base, http: { ...base.http, host: '0.0.0.0' } })
  assert.equal(lan.level, 'warn')
  assert.match(lan.fix ?? '', /edgeway dashboard set-password/)
  assert.equal(checkDashboard({ ...base, http: { ...base.http, host: '127.0.0.1' } }).level, 'ok')
  const withPassword = configSchema.parse({ dashboard: { passwordHash: 'scrypt$16384$8$1$c2FsdA$aGFzaA' } })
  assert.equal(checkDashboard(withPassword).level, 'ok')
  assert.equal(checkDashboard(configSchema.parse({ dashboard: { enabled: false } })).detail, 'dashboard disabled')
})
