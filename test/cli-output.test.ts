// Terminal output of the CLI: aligned tables with local times (device, client, ota), `config show` as YAML with every
// secret redacted, the connection hint of `device add` / `client add`, the start banner, and the logs: pretty lines
// on a terminal, JSON lines (one object per line, no key twice) when stdout is not one.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { hostname } from 'node:os'
import { parse as parseYaml } from 'yaml'
import mqtt from 'mqtt'
import { startGatewayProc, runCli, EDGEWAY_BIN, type GatewayProc } from './helpers/gateway.ts'
import { freePort, waitFor, scaled } from './helpers/net.ts'
import { createLogger, isPretty } from '../gateway/log.ts'
import { hashPassword } from '../gateway/dashboard/password.ts'
import { OtaStore } from '../gateway/ota/store.ts'

// A zone far from UTC with a half-hour offset: a table or log line in UTC (or any other zone) cannot pass.
const TZ = 'Asia/Kolkata'

/** Epoch ms in TZ as "YYYY-MM-DD HH:MM" (or with seconds), computed independently of the code under test. */
function inTz(ms: number, seconds = false): string {
  const p = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone: TZ, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(ms)).map((x) => [x.type, x.value]))
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}${seconds ? `:${p.second}` : ''}`
}

const cli = (g: GatewayProc, args: string[]) => runCli([...args, '--config', g.configFile], { TZ }, g.dir)

/** Keys that occur twice in one object, at any depth, of a JSON text (JSON.parse keeps the last one silently). */
export function duplicateKeys(json: string): string[] {
  const dups: string[] = []
  const stack: (Set<string> | null)[] = []
  let i = 0
  while (i < json.length) {
    const c = json[i]!
    if (c === '"') {
      let j = i + 1
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1
      const str = JSON.parse(json.slice(i, j + 1)) as string
      let k = j + 1
      while (json[k] === ' ') k++
      const keys = stack[stack.length - 1]
      if (json[k] === ':' && keys) { if (keys.has(str)) dups.push(str); else keys.add(str) }
      i = j + 1
      continue
    }
    if (c === '{') stack.push(new Set())
    else if (c === '[') stack.push(null)
    else if (c === '}' || c === ']') stack.pop()
    i++
  }
  return dups
}

/** Header + rows of a plain table; checks the columns are aligned: each header starts where its cells start. */
function parseTable(out: string, headers: string[]): string[][] {
  const lines = out.trimEnd().split('\n')
  const head = lines[0]!
  assert.match(head, new RegExp(`^${headers.join(' {2,}')}$`), out)
  const starts = headers.map((h) => head.indexOf(h))
  return lines.slice(1).map((l) => {
    assert.doesNotMatch(l, /\s$/, 'no trailing blanks')
    const cells = starts.map((s, n) => l.slice(s, starts[n + 1] ?? l.length))
    for (const [n, cell] of cells.entries()) {
      if (l.length <= starts[n]!) { assert.equal(cell, ''); continue } // empty cells at the end of a row
      assert.ok(n === 0 || l[starts[n]! - 1] === ' ', `column ${headers[n]} aligned in ${JSON.stringify(l)}`)
      assert.ok(cell.length === 0 || cell[0] !== ' ', `column ${headers[n]} aligned in ${JSON.stringify(l)}`)
    }
    return cells.map((x) => x.trim())
  })
}

test('duplicate-key detector finds repeated keys and passes clean lines', () => {
  assert.deepEqual(duplicateKeys('{"pid":1,"upstream":"cloud","upstream":"cloud","msg":"x"}'), ['upstream'])
  assert.deepEqual(duplicateKeys('{"pid":1,"a":{"pid":2,"b":"\\"pid\\":"},"c":[{"pid":3},{"pid":4}]}'), [])
  assert.deepEqual(duplicateKeys('{"a":{"k":1,"k":2}}'), ['k'])
})

test('device list and client list: aligned tables with a header, local times, "never"; --json unchanged', async (t) => {
  const g = await startGatewayProc()
  t.after(async () => { await g.stop(); await g.cleanup() })
  let r = await cli(g, ['device', 'list'])
  assert.equal(r.stdout, 'no devices; add one with `edgeway device add <id>`\n')
  const secret = /^secret: (\S+)$/m.exec((await cli(g, ['device', 'add', 'sensor-1'])).stdout)![1]!
  assert.equal((await cli(g, ['device', 'add', 'a-much-longer-device-id'])).code, 0)
  // sensor-1 reports once: it gets a last-seen time
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'sensor-1', username: 'sensor-1', password: secret, reconnectPeriod: 0 })
  await c.publishAsync('devices/sensor-1/telemetry', '{"t":1}', { qos: 1 })
  await c.endAsync()
  const json = await waitFor('sensor-1 seen', async () => {
    const list = JSON.parse((await cli(g, ['device', 'list', '--json'])).stdout) as { id: string; lastSeen: number | null; online: boolean }[]
    const d = list.find((x) => x.id === 'sensor-1')
    return d !== undefined && d.lastSeen !== null && !d.online && list
  })
  assert.equal(json.length, 2)
  assert.equal(typeof json[0]!.lastSeen === 'number' || json[0]!.lastSeen === null, true, '--json keeps epoch ms')

  r = await cli(g, ['device', 'list'])
  assert.equal(r.code, 0, r.stderr)
  assert.doesNotMatch(r.stdout, /\(index\)|['"│┌]/, r.stdout)
  const rows = parseTable(r.stdout, ['ID', 'ONLINE', 'LINK', 'LAST SEEN', 'FIRMWARE'])
  const byId = new Map(rows.map((x) => [x[0], x]))
  const seen = json.find((d) => d.id === 'sensor-1')!.lastSeen!
  assert.deepEqual(byId.get('sensor-1'), ['sensor-1', 'no', 'mqtt', inTz(seen), '-'])
  assert.deepEqual(byId.get('a-much-longer-device-id'), ['a-much-longer-device-id', 'no', '-', 'never', '-'])

  assert.equal((await cli(g, ['client', 'list'])).stdout, 'no integration clients; add one with `edgeway client add <name> --role observer`\n')
  assert.equal((await cli(g, ['client', 'add', 'home-assistant', '--role', 'observer'])).code, 0)
  assert.equal((await cli(g, ['client', 'add', 'nr', '--role', 'operator'])).code, 0)
  const clients = JSON.parse((await cli(g, ['client', 'list', '--json'])).stdout) as { name: string; role: string; createdAt: number }[]
  assert.equal(typeof clients[0]!.createdAt, 'number')
  r = await cli(g, ['client', 'list'])
  assert.doesNotMatch(r.stdout, /\(index\)|['"│┌]/, r.stdout)
  const crow = parseTable(r.stdout, ['NAME', 'ROLE', 'CREATED'])
  assert.deepEqual(crow.sort(), clients.map((x) => [x.name, x.role, inTz(x.createdAt)]).sort())
})

test('ota status: a header row over aligned jobs, local times', async (t) => {
  const g = await startGatewayProc({}, { start: false })
  t.after(() => g.cleanup())
  assert.equal((await cli(g, ['ota', 'status'])).stdout, 'no OTA jobs\n')
  const store = new OtaStore(g.dataDir)
  store.open()
  const base = { size: 1000, sha256: 'x'.repeat(64), chunkSize: 256, signature: null, reason: null, offset: 0, updatedAt: Date.now(), appliedAt: null, deadlineMs: 120000, deadlineAt: null, reconnected: false, lastHealth: null }
  const a = store.create({ ...base, device: 'esp-1', version: '1.1.0', previousVersion: '1.0.0', state: 'succeeded', offset: 1000, createdAt: Date.UTC(2026, 11, 1, 8, 30) })
  const b = store.create({ ...base, device: 'esp-22', version: '2.0.0-rc.1', previousVersion: null, state: 'rolled_back', reason: 'device came back with 1.0.0', offset: 512, createdAt: Date.UTC(2026, 11, 2, 23, 45) })
  store.close()
  const r = await cli(g, ['ota', 'status'])
  assert.equal(r.code, 0, r.stderr)
  const rows = parseTable(r.stdout, ['JOB', 'CREATED', 'DEVICE', 'VERSION', 'STATE', 'BYTES', 'REASON'])
  assert.deepEqual(rows, [
    [String(b.id), inTz(b.createdAt), 'esp-22', '? -> 2.0.0-rc.1', 'rolled_back', '512/1000', 'device came back with 1.0.0'],
    [String(a.id), inTz(a.createdAt), 'esp-1', '1.0.0 -> 1.1.0', 'succeeded', '1000/1000', ''],
  ])
})

test('config show: YAML, every secret <redacted> at any depth; --json is redacted too', async (t) => {
  const passwordHash = await hashPassword('dashboard-pass-1')
  const g = await startGatewayProc({
    upstreams: [{ name: 'cloud', type: 'mqtt', url: 'mqtts://bob:url-s3cret@broker.example:8883', username: 'bob', password: 'hunter2' }],
    dashboard: { passwordHash },
    xmpp: { enabled: false, component: { domain: 'devices.example.org', secret: 'xmpp-c0mponent' }, client: { jid: 'gw@example.org', password: 'xmpp-passw0rd' } },
    camera: { iceServers: [{ urls: 'turn:turn.example:3478', username: 'cam', credential: 'turn-cred-9' }] },
  }, { start: false })
  t.after(() => g.cleanup())
  const secrets = ['hunter2', 'url-s3cret', passwordHash, passwordHash.split('$').pop()!, 'xmpp-c0mponent', 'xmpp-passw0rd', 'turn-cred-9']
  const r = await cli(g, ['config', 'show'])
  assert.equal(r.code, 0, r.stderr)
  for (const s of secrets) assert.ok(!r.stdout.includes(s), `"${s}" shown:\n${r.stdout}`)
  assert.throws(() => JSON.parse(r.stdout), 'YAML, not JSON')
  type Shown = { gateway: { id: string }; mqtt: { tcp: { port: number } }; upstreams: { name: string; url: string; username: string; password: string }[]; dashboard: { passwordHash: string }; xmpp: { component: { domain: string; secret: string }; client: { jid: string; password: string } }; camera: { iceServers: { username: string; credential: string }[] } }
  for (const shown of [parseYaml(r.stdout) as Shown, JSON.parse((await cli(g, ['config', 'show', '--json'])).stdout) as Shown]) {
    assert.equal(shown.gateway.id, 'test-gw')
    assert.equal(shown.mqtt.tcp.port, g.mqttPort)
    assert.deepEqual(shown.upstreams.map((u) => [u.name, u.username, u.password, u.url]), [['cloud', 'bob', '<redacted>', 'mqtts://bob:<redacted>@broker.example:8883']])
    assert.equal(shown.dashboard.passwordHash, '<redacted>')
    assert.deepEqual(shown.xmpp.component, { domain: 'devices.example.org', secret: '<redacted>' })
    assert.deepEqual(shown.xmpp.client, { jid: 'gw@example.org', password: '<redacted>' })
    assert.equal(shown.camera.iceServers[0]!.username, 'cam')
    assert.equal(shown.camera.iceServers[0]!.credential, '<redacted>')
  }
  const j = await cli(g, ['config', 'show', '--json'])
  for (const s of secrets) assert.ok(!j.stdout.includes(s), `"${s}" shown in --json`)
})

test('device add / client add: the example connects to the listener address (127.0.0.1; hostname for a wildcard)', async (t) => {
  const g = await startGatewayProc({}, { start: false })
  t.after(() => g.cleanup())
  let r = await cli(g, ['device', 'add', 'dev-1'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, new RegExp(`^  mosquitto_pub -h 127\\.0\\.0\\.1 -p ${g.mqttPort} -u dev-1 -P '\\S+' `, 'm'), r.stdout)
  r = await cli(g, ['client', 'add', 'ha', '--role', 'observer'])
  assert.match(r.stdout, new RegExp(`^  mosquitto_sub -h 127\\.0\\.0\\.1 -p ${g.mqttPort} -u ha `, 'm'), r.stdout)

  const w = await startGatewayProc({ mqtt: { tcp: { host: '0.0.0.0' } } }, { start: false })
  t.after(() => w.cleanup())
  const host = hostname().replace(/[.]/g, '\\.')
  r = await cli(w, ['device', 'add', 'dev-1'])
  assert.match(r.stdout, new RegExp(`^  mosquitto_pub -h ${host} -p ${w.mqttPort} -u dev-1 `, 'm'), r.stdout)
  r = await cli(w, ['client', 'add', 'ha', '--role', 'observer'])
  assert.match(r.stdout, new RegExp(`^  mosquitto_sub -h ${host} -p ${w.mqttPort} -u ha `, 'm'), r.stdout)
})

test('pretty formatter: level, message and fields on one line with the local time; err strings inline, stacks below', () => {
  const lines: string[] = []
  const log = createLogger('debug', { format: 'pretty', color: false, out: { write: (s: string) => lines.push(s) } }).child({ upstream: 'cloud' })
  const before = Date.now()
  log.warn({ err: 'connect ECONNREFUSED 127.0.0.1:1', retryInMs: 500 }, 'upstream connect failed')
  log.error({ err: new Error('boom') }, 'worker died')
  const after = Date.now()
  const m = /^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.\d{3}\] WARN: upstream connect failed \{"upstream":"cloud","err":"connect ECONNREFUSED 127\.0\.0\.1:1","retryInMs":500\}\n$/.exec(lines[0]!)
  assert.ok(m, JSON.stringify(lines[0]))
  const local = (ms: number): string => { const d = new Date(ms); const p = (n: number): string => String(n).padStart(2, '0'); return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}` }
  assert.ok([local(before), local(after)].includes(m[1]!), `${m[1]} is local time`)
  assert.doesNotMatch(lines.join(''), /"pid"|"name"|"level"|"time"/)
  assert.match(lines[1]!, /^\[[^\]]+\] ERROR: worker died \{"upstream":"cloud"\}\n {4}err: \{\n[\s\S]*"message": "boom"[\s\S]*Error: boom\n[\s\S]*at /)
  // auto: pretty on a terminal only
  assert.equal(isPretty('auto', true), true)
  assert.equal(isPretty('auto', false), false)
  assert.equal(isPretty(undefined, false), false)
  assert.equal(isPretty('json', true), false)
  assert.equal(isPretty('pretty', false), true)
})

interface Run { proc: ChildProcess; out: () => string; err: () => string; stop(): Promise<void> }

/** `edgeway run` on plain pipes (like systemd or the tests), or under `script` (a pseudo-terminal) when tty. */
function runGateway(g: GatewayProc, opts: { tty?: boolean; args?: string[] } = {}): Run {
  const argv = [process.execPath, EDGEWAY_BIN, 'run', '--config', g.configFile, ...(opts.args ?? [])]
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`
  const proc = opts.tty
    ? spawn('script', ['-qec', argv.map(quote).join(' '), '/dev/null'], { cwd: g.dir, env: { ...process.env, TZ }, stdio: ['pipe', 'pipe', 'pipe'], detached: true })
    : spawn(argv[0]!, argv.slice(1), { cwd: g.dir, env: { ...process.env, TZ }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString() })
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  return {
    proc, out: () => out, err: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      // under script: the whole process group (script and the gateway it runs)
      if (opts.tty) process.kill(-proc.pid!, 'SIGTERM')
      else proc.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, scaled(8000)))])
      if (proc.exitCode === null && proc.signalCode === null) { if (opts.tty) process.kill(-proc.pid!, 'SIGKILL'); else proc.kill('SIGKILL'); await exited }
    },
  }
}

test('not a terminal: exactly one JSON object per line, no key twice (upstream, camera source pid); banner says "add a first device" only without devices', async (t) => {
  const closed = await freePort() // nothing listens: the upstream keeps failing (and logging)
  const rtpPort = await freePort()
  const g = await startGatewayProc({
    log: { level: 'debug' },
    upstreams: [{ name: 'cloud', type: 'mqtt', url: `mqtt://127.0.0.1:${closed}`, reconnectMinMs: 200, reconnectMaxMs: 400 }],
    camera: { enabled: true, command: [process.execPath, '-e', 'process.stderr.write("source here\\n"); setInterval(() => {}, 1000)', '{rtpPort}'], rtpPort, bindAddress: '127.0.0.1', stallMs: 1500, restartMinMs: 300, restartMaxMs: 600 },
  }, { start: false })
  t.after(() => g.cleanup())

  let run = runGateway(g)
  t.after(() => run.stop())
  await waitFor('ready', () => run.out().includes('"msg":"edgeway ready"'), 20000)
  await waitFor('banner', () => run.err().includes('is running'))
  assert.match(run.err(), /add a first device/)
  await run.stop()

  assert.equal((await cli(g, ['device', 'add', 'sensor-1'])).code, 0)
  run = runGateway(g)
  await waitFor('ready again', () => run.out().includes('"msg":"edgeway ready"'), 20000)
  await waitFor('banner again', () => run.err().includes('is running'))
  assert.doesNotMatch(run.err(), /add a first device/, 'a device exists')
  const lines = (): string[] => run.out().split('\n').filter(Boolean)
  const has = (msg: string) => (): boolean => lines().some((l) => l.includes(`"msg":"${msg}`))
  await waitFor('upstream failing', has('upstream connect failed'), 10000)
  await waitFor('camera source output', has('camera source"'), 10000)
  await waitFor('camera source stalled', has('camera source stalled'), 10000)
  await run.stop()

  const all = lines()
  assert.ok(all.length >= 8, all.join('\n'))
  assert.ok(!run.out().includes('\x1b['), 'no colour codes')
  const parsed = all.map((l) => {
    assert.match(l, /^\{.*\}$/, 'one JSON object per line')
    assert.deepEqual(duplicateKeys(l), [], `duplicate keys in ${l}`)
    const o = JSON.parse(l) as Record<string, unknown>
    assert.equal(typeof o.time, 'number', 'epoch ms, as before')
    return o
  })
  const pid = run.proc.pid
  assert.ok(parsed.every((o) => o.pid === pid), 'pid is the gateway\'s')
  const up = parsed.find((o) => String(o.msg).startsWith('upstream connect failed'))!
  assert.equal(up.upstream, 'cloud')
  const started = parsed.find((o) => o.msg === 'camera source started')!
  assert.equal(typeof started.sourcePid, 'number')
  assert.notEqual(started.sourcePid, pid)
  assert.ok(parsed.some((o) => o.msg === 'camera source' && o.stderr === 'source here' && o.sourcePid === started.sourcePid))
  assert.ok(parsed.some((o) => o.msg === 'camera source stalled: killing it' && typeof o.sourcePid === 'number'))
})

test('on a terminal: pretty lines with local times (no JSON); --log-format json keeps JSON lines there', async (t) => {
  const g = await startGatewayProc({}, { start: false })
  t.after(() => g.cleanup())
  // eslint-disable-next-line no-control-regex
  const plain = (s: string): string => s.replace(/\x1b\[[0-9;]*m/g, '').replace(/\r/g, '')

  let run = runGateway(g, { tty: true })
  t.after(() => run.stop())
  const line = await waitFor('pretty ready line', () => plain(run.out()).split('\n').find((l) => / INFO: edgeway ready /.test(l)), 20000)
  const now = Date.now()
  await run.stop()
  const m = /^\[(\d{4}-\d\d-\d\d \d\d:\d\d):\d\d\.\d{3}\] INFO: edgeway ready \{"gateway":"test-gw",/.exec(line)
  assert.ok(m, line)
  assert.ok([inTz(now - 60_000), inTz(now)].includes(m[1]!), `${m[1]} is the local time in ${TZ} (${inTz(now)})`)
  assert.match(run.out(), /\x1b\[/, 'coloured on a terminal')
  assert.doesNotMatch(plain(run.out()), /^\{"level"/m)
  assert.match(plain(run.out()), /add a first device/)

  run = runGateway(g, { tty: true, args: ['--log-format', 'json'] })
  await waitFor('json ready line', () => plain(run.out()).includes('"msg":"edgeway ready"'), 20000)
  await run.stop()
  const json = plain(run.out()).split('\n').filter((l) => l.startsWith('{'))
  assert.ok(json.length >= 1)
  for (const l of json) { JSON.parse(l); assert.deepEqual(duplicateKeys(l), []) }
})
