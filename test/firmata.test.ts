// Firmata boards: the real StandardFirmata (from the npm package avrgirl-arduino) runs in the simulated Uno; the
// gateway drives it through johnny-five on our own serial port; an analog pin's readings reach the outbox and an
// upstream, and LED/relay commands from the command router change the simulated pins.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { startGateway, type RunningGateway } from '../app/main.ts'
import { parseConfig } from '../app/config/load.ts'
import { createLogger } from '../gateway/log.ts'
import { toActuatorAction } from '../devices/firmata/commands.ts'
import { buildSimBoard, requireBootloader, standardFirmataHex, startSimBoard } from './helpers/simavr.ts'
import { runCli } from './helpers/gateway.ts'
import { controlCall } from '../gateway/control/client.ts'
import { readFileSync } from 'node:fs'
import { pino } from 'pino'
import { GatewayBus } from '../gateway/events.ts'
import { FirmataLink } from '../devices/firmata/link.ts'
import { startMosquitto } from './helpers/mosquitto.ts'
import { connect, collect, endClient } from './helpers/mqtt.ts'
import { freePort, tempDir, waitFor } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const board = (extra: Record<string, unknown> = {}) => ({ device: 'uno-1', path: '/dev/null', ...extra })

test('firmata config: pins and names are checked with clear messages; commands map onto actuators', () => {
  const cfg = parseConfig({ firmata: { boards: [board({ sensors: [{ type: 'analog', name: 'a0', pin: 'A0' }], actuators: [{ type: 'led', name: 'led', pin: 13 }] })] } }, 'test')
  assert.equal(cfg.firmata.boards[0]!.baudRate, 57600)
  assert.throws(() => parseConfig({ firmata: { boards: [board({ actuators: [{ type: 'led', name: 'led', pin: 1 }] })] } }, 'test'), /pins 0 and 1 carry the serial line/)
  assert.throws(() => parseConfig({ firmata: { boards: [board({ sensors: [{ type: 'analog', name: 'x', pin: 'A7' }] })] } }, 'test'), /analog pin A0\.\.A5/)
  assert.throws(() => parseConfig({ firmata: { boards: [board({ sensors: [{ type: 'button', name: 'b', pin: 7 }], actuators: [{ type: 'relay', name: 'r', pin: 7 }] })] } }, 'test'), /pin 7 is used twice on uno-1/)
  assert.throws(() => parseConfig({ firmata: { boards: [board({ sensors: [{ type: 'analog', name: 'x', pin: 'A0' }], actuators: [{ type: 'led', name: 'x', pin: 13 }] })] } }, 'test'), /name "x" is used twice/)
  assert.throws(() => parseConfig({ firmata: { boards: [board({ sensors: [{ type: 'servo', name: 's', pin: 9 }] })] } }, 'test'), /firmata/)

  const acts = [{ type: 'led' as const, name: 'led', pin: 13 }, { type: 'relay' as const, name: 'pump', pin: 7, relayType: 'NO' as const }]
  assert.deepEqual(toActuatorAction(acts, 'led', true), { ok: true, actuator: acts[0], action: 'on' })
  assert.deepEqual(toActuatorAction(acts, 'pump', { on: false }), { ok: true, actuator: acts[1], action: 'off' })
  assert.deepEqual(toActuatorAction(acts, 'led', 'toggle'), { ok: true, actuator: acts[0], action: 'toggle' })
  assert.match((toActuatorAction(acts, 'fan', true) as { error: string }).error, /unknown command "fan" \(this board's actuators: led, pump\)/)
  assert.match((toActuatorAction(acts, 'led', 'bright') as { error: string }).error, /led needs true\/false/)
})

test('StandardFirmata flashed into the simulated Uno: analog readings reach the upstream, LED and relay commands change the pins, a reflash through the gateway pauses the board, a hung board goes offline', async () => {
  // the gateway's log, printed only when the test fails (TEST_LOG=info prints it live instead)
  const logLines: string[] = []
  const log = process.env.TEST_LOG ? createLogger(process.env.TEST_LOG) : pino({ level: 'info' }, { write: (l: string) => { logLines.push(l) } })
  try { await unoScenario(log, logLines) } catch (err) {
    process.stderr.write(`gateway log (last 80 lines):\n${logLines.slice(-80).join('')}`)
    throw err
  }
})

async function unoScenario(log: ReturnType<typeof createLogger>, logLines: string[]): Promise<void> {
  const hex = standardFirmataHex()
  const boot = requireBootloader()
  const build = buildSimBoard()
  cleanups.push(build.cleanup)
  const path = join(build.dir, 'uart0')
  // An Uno with its bootloader and the sensor-node app; StandardFirmata goes in with `edgeway flash` (no gateway yet).
  const sim = await startSimBoard(build, path, { bootloader: boot, pins: true, adc0mV: 1250, adc1mV: 250 })
  cleanups.push(() => sim.stop())
  const { dir, cleanup } = tempDir()
  cleanups.push(cleanup)
  const flashed = await runCli(['flash', '--port', path, '--board', 'uno', '--baud', '57600', hex], { EDGEWAY_GATEWAY__DATA_DIR: join(dir, 'data') }, dir)
  assert.equal(flashed.code, 0, flashed.stderr)
  assert.match(flashed.stdout, /directly \(no gateway running\).*verified by read-back/)
  const mosq = await startMosquitto()
  cleanups.push(() => mosq.stop())
  const up = await connect(`mqtt://127.0.0.1:${mosq.port}`)
  cleanups.push(() => endClient(up))
  const got = collect(up)
  await up.subscribeAsync('edgeway/#', { qos: 1 })
  const config = parseConfig({
    gateway: { id: 'fm-gw', dataDir: join(dir, 'data') },
    log: { level: 'silent' },
    mqtt: { tcp: { host: '127.0.0.1', port: await freePort() }, ws: { enabled: false } },
    http: { enabled: false },
    upstreams: [{ name: 'ref', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 1000 }],
    firmata: { boards: [{
      device: 'uno-1', path, reportIntervalMs: 200, samplingIntervalMs: 50, reopenMinMs: 200, silenceTimeoutMs: 2000,
      sensors: [{ type: 'analog', name: 'light', pin: 'A0' }, { type: 'thermometer', name: 'temp', pin: 'A1' }, { type: 'button', name: 'door', pin: 2 }],
      actuators: [{ type: 'led', name: 'led', pin: 13 }, { type: 'relay', name: 'pump', pin: 7 }],
    }] },
  }, 'test')
  const gw: RunningGateway = await startGateway(config, log)
  cleanups.push(() => gw.stop())

  interface Telemetry { device: string; link: string; metrics: Record<string, number> }
  const readings = (): Telemetry[] => got.map((p) => JSON.parse(p.payload.toString()) as Telemetry).filter((t) => t.device === 'uno-1' && t.metrics.light !== undefined)
  await waitFor('firmata readings upstream', () => readings().length >= 3, 20000)
  const r = readings().at(-1)!
  assert.equal(r.link, 'firmata')
  assert.ok(Math.abs(r.metrics.light! - 256) <= 2, `1.25 V on A0 reads ~256 of 1023 (${r.metrics.light})`)
  assert.ok(Math.abs(r.metrics.temp! - 25) <= 1, `an LM35 at 250 mV on A1 is ~25 °C (${r.metrics.temp})`)
  assert.equal(r.metrics.door, 0)
  assert.equal(r.metrics.led, 0)
  const dev = gw.registry.get('uno-1')!
  assert.equal(dev.online, true)
  assert.match(dev.firmwareVersion ?? '', /StandardFirmata.* 2\.\d+/)

  // the pin's last reported level since `mark` (the board toggles pin 13 while it boots)
  const pinSince = (mark: number, pin: string): string | undefined => [...sim.stderr().slice(mark).matchAll(new RegExp(`pin ${pin}=(\\d)`, 'g'))].at(-1)?.[1]
  let mark = sim.stderr().length
  const on = await gw.commands.dispatch({ id: 'c1', device: 'uno-1', name: 'led', args: true })
  assert.deepEqual(on, { id: 'c1', device: 'uno-1', name: 'led', ok: true, result: { actuator: 'led', state: 1 } })
  await waitFor('pin 13 (PB5) high on the simulated chip', () => pinSince(mark, 'PB5') === '1', 5000)
  await waitFor('LED state upstream', () => readings().some((t) => t.metrics.led === 1), 5000)
  mark = sim.stderr().length
  const off = await gw.commands.dispatch({ id: 'c2', device: 'uno-1', name: 'led', args: 'off' })
  assert.equal(off.ok, true)
  await waitFor('pin 13 low again', () => pinSince(mark, 'PB5') === '0', 5000)
  mark = sim.stderr().length
  const pump = await gw.commands.dispatch({ id: 'c3', device: 'uno-1', name: 'pump', args: { on: true } })
  assert.equal(pump.ok, true)
  await waitFor('pin 7 (PD7) high: relay closed', () => pinSince(mark, 'PD7') === '1', 5000)
  // The button on pin 2 (PD2): pressed and released on the simulated chip, both states reach the upstream.
  sim.setPin('PD2', 1)
  await waitFor('door=1 upstream', () => readings().some((t) => t.metrics.door === 1), 5000)
  sim.setPin('PD2', 0)
  const pressedAt = readings().findIndex((t) => t.metrics.door === 1)
  await waitFor('door=0 again', () => readings().slice(pressedAt).some((t) => t.metrics.door === 0), 5000)
  const bad = await gw.commands.dispatch({ id: 'c4', device: 'uno-1', name: 'fan', args: true })
  assert.equal(bad.ok, false)
  assert.match(bad.ok ? '' : bad.error, /unknown command "fan"/)

  // Reflash through the running gateway (its control socket): the Firmata link lets go of the port, the flash
  // verifies, the link takes the port back and the board is ready again.
  const progress: unknown[] = []
  const answer = await controlCall(join(dir, 'data'), 'flash', { port: path, board: 'uno', baud: 57600, hex: readFileSync(hex, 'utf8') }, (p) => progress.push(p)) as { device: string; firmware: string; bytes: number }
  assert.equal(answer.device, 'uno-1')
  assert.match(answer.firmware, /StandardFirmata/)
  assert.deepEqual(progress[0], { phase: 'paused', device: 'uno-1' })
  assert.ok(progress.some((p) => (p as { phase: string }).phase === 'verify'))
  const afterFlash = readings().length
  await waitFor('readings after the reflash', () => readings().length >= afterFlash + 3 && gw.registry.get('uno-1')!.online, 20000)

  // Hung: the board stops (SIGSTOP on the simulator) but its port stays open, as a browned-out MCU behind a USB
  // adapter. Silence, an unanswered version query, offline; when it runs again the link reopens and it is back.
  process.kill(sim.pid, 'SIGSTOP')
  try {
    await waitFor('offline after silence', () => gw.registry.get('uno-1')!.online === false, 10000)
    assert.ok(logLines.length === 0 || logLines.some((l) => l.includes('no data from the board for')), 'the silence is the logged reason')
  } finally { process.kill(sim.pid, 'SIGCONT') }
  const m = readings().length
  await waitFor('online again after the hang, with new readings', () => gw.registry.get('uno-1')!.online && readings().length >= m + 3, 20000)

  // Unplugged: offline, and back by itself.
  await sim.stop()
  await waitFor('offline', () => gw.registry.get('uno-1')!.online === false, 10000)
  const sim2 = await startSimBoard(build, path, { hex, bootloader: boot, pins: true, adc0mV: 1250, adc1mV: 250 })
  cleanups.push(() => sim2.stop())
  const n = readings().length
  await waitFor('online again with readings', () => gw.registry.get('uno-1')!.online && readings().length >= n + 3, 20000)
}

test('a port whose board does not speak Firmata: a clear log line, retries, the process keeps running', async () => {
  const build = buildSimBoard({ version: 'not-firmata' })
  cleanups.push(build.cleanup)
  const sim = await startSimBoard(build, join(build.dir, 'uart0')) // the sensor-node firmware, not StandardFirmata
  cleanups.push(() => sim.stop())
  const logs: { msg: string; err?: string }[] = []
  const log = pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as { msg: string }) } })
  const cfg = parseConfig({ firmata: { boards: [{ device: 'wrong', path: sim.path, readyTimeoutMs: 1000, reopenMinMs: 100, reopenMaxMs: 200, sensors: [{ type: 'analog', name: 'a0', pin: 'A0' }] }] } }, 'test').firmata.boards[0]!
  const online: boolean[] = []
  const link = new FirmataLink(cfg, { outbox: { append: (_r, done) => done(null) }, registry: { setOnline: (_d, on) => { online.push(on) }, setFirmware: () => undefined }, bus: new GatewayBus(), log })
  cleanups.push(() => link.stop())
  link.start()
  const warn = await waitFor('refusal logged', () => logs.find((l) => l.msg === 'firmata board not reachable: retrying with backoff'), 5000)
  assert.match(warn.err ?? '', /no Firmata answer within 1000 ms: is StandardFirmata running at 57600 baud\?/)
  await waitFor('retried', () => link.status().reopens >= 2, 10000)
  assert.deepEqual(online, [], 'never marked online')
  assert.equal(logs.filter((l) => l.msg === 'firmata board not reachable: retrying with backoff').length, 1, 'one warning per outage, retries at debug')
})

test('a board given by USB identity: looked up at every reopen, a clear message while it is absent, then its port is used', async () => {
  const cfgs = parseConfig({ firmata: { boards: [{ device: 'by-usb', usb: { vendorId: '0x2341', productId: '43', serialNumber: 'F1' }, sensors: [{ type: 'analog', name: 'a0', pin: 'A0' }] }] } }, 'test').firmata.boards
  assert.equal(cfgs[0]!.path, 'usb:2341:0043:F1')
  assert.throws(() => parseConfig({ firmata: { boards: [{ device: 'x' }] } }, 'test'), /either path or usb/)
  assert.throws(() => parseConfig({ firmata: { boards: [{ device: 'x', path: '/dev/ttyACM0', usb: { vendorId: '2341', productId: '0043' } }] } }, 'test'), /either path or usb/)
  // A board that answers but not with Firmata: enough to see which port the link opened.
  const build = buildSimBoard({ version: 'not-firmata' })
  cleanups.push(build.cleanup)
  const sim = await startSimBoard(build, join(build.dir, 'uart0'))
  cleanups.push(() => sim.stop())
  const logs: { msg: string; err?: string }[] = []
  const log = pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as { msg: string }) } })
  let plugged = false
  const listPorts = async () => [{ path: '/dev/ttyS0' }, ...(plugged ? [{ path: sim.path, vendorId: '2341', productId: '0043', serialNumber: 'F1' }] : [])]
  const cfg = { ...cfgs[0]!, readyTimeoutMs: 800, reopenMinMs: 100, reopenMaxMs: 200 }
  const link = new FirmataLink(cfg, { outbox: { append: (_r, done) => done(null) }, registry: { setOnline: () => undefined, setFirmware: () => undefined }, bus: new GatewayBus(), log, listPorts })
  cleanups.push(() => link.stop())
  link.start()
  const absent = await waitFor('absence logged', () => logs.find((l) => l.msg === 'firmata board not reachable: retrying with backoff'), 5000)
  assert.match(absent.err ?? '', /no USB serial device 2341:0043 serial F1 plugged in/)
  assert.equal(link.devicePath, null)
  plugged = true
  await waitFor('the resolved port opened (the board there does not speak Firmata)', () => logs.some((l) => /no Firmata answer within 800 ms/.test(l.err ?? '')), 10000)
  assert.equal(link.devicePath, sim.path)
})

