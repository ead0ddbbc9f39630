// Serial ports configured by USB identity: pure matching of SerialPort.list() entries, the config rules, and a link
// that finds the simulated board by its identity and follows it to a new device path after a replug.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { pino } from 'pino'
import { matchUsbPort, usbLabel, type PortInfo } from '../devices/serial/usb.ts'
import { parseConfig } from '../app/config/load.ts'
import { GatewayBus } from '../gateway/events.ts'
import { SerialLink } from '../devices/serial/link.ts'
import { buildSimBoard, startSimBoard, type SimBoard } from './helpers/simavr.ts'
import { waitFor } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const uno = (path: string, serialNumber = '75833353035351F0E1B1'): PortInfo => ({ path, vendorId: '2341', productId: '0043', serialNumber, manufacturer: 'Arduino' })

test('USB identity: one match wins, ids compare as hex, a missing or ambiguous board says what is there', () => {
  const ports: PortInfo[] = [{ path: '/dev/ttyS0' }, uno('/dev/ttyACM0'), { path: '/dev/ttyUSB0', vendorId: '1a86', productId: '7523' }]
  assert.deepEqual(matchUsbPort(ports, { vendorId: '0x2341', productId: '43' }), { ok: true, path: '/dev/ttyACM0' })
  assert.deepEqual(matchUsbPort(ports, { vendorId: '1A86', productId: '7523' }), { ok: true, path: '/dev/ttyUSB0' })
  const none = matchUsbPort(ports, { vendorId: '2341', productId: '0043', serialNumber: 'OTHER' })
  assert.equal(none.ok, false)
  assert.match(none.ok ? '' : none.error, /no USB serial device 2341:0043 serial OTHER plugged in \(present: 2341:0043 serial 75833353035351F0E1B1 at \/dev\/ttyACM0, 1a86:7523 at \/dev\/ttyUSB0\)/)
  const two = matchUsbPort([...ports, uno('/dev/ttyACM1', 'B')], { vendorId: '2341', productId: '0043' })
  assert.match(two.ok ? '' : two.error, /2 USB serial devices match 2341:0043 \(\/dev\/ttyACM0 serial .*, \/dev\/ttyACM1 serial B\): add serialNumber/)
  assert.deepEqual(matchUsbPort([...ports, uno('/dev/ttyACM1', 'B')], { vendorId: '2341', productId: '0043', serialNumber: 'B' }), { ok: true, path: '/dev/ttyACM1' })
  assert.equal(usbLabel({ vendorId: '0x2341', productId: '43', serialNumber: 'B' }), 'usb:2341:0043:B')
})

test('config: a serial port has a path or a USB identity, not both, not neither', () => {
  const c = parseConfig({ serial: { ports: [{ device: 'n1', usb: { vendorId: '2341', productId: '0043', serialNumber: 'X' } }] } }, 'test')
  assert.equal(c.serial.ports[0]!.path, 'usb:2341:0043:X')
  assert.throws(() => parseConfig({ serial: { ports: [{ device: 'n1' }] } }, 'test'), /either path or usb/)
  assert.throws(() => parseConfig({ serial: { ports: [{ device: 'n1', path: '/dev/ttyACM0', usb: { vendorId: '2341', productId: '0043' } }] } }, 'test'), /either path or usb/)
  assert.throws(() => parseConfig({ serial: { ports: [{ device: 'n1', usb: { vendorId: 'arduino', productId: '0043' } }] } }, 'test'), /USB vendor id in hex/)
})

test('a board found by USB identity: waits while it is absent, opens where it appears, follows it to a new path after a replug', async () => {
  const build = buildSimBoard({ version: 'usb' })
  cleanups.push(build.cleanup)
  let present: PortInfo[] = []
  const logs: { msg: string; err?: string; devicePath?: string }[] = []
  const log = pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as { msg: string }) } })
  const registry = { firmware: new Map<string, string>(), setOnline() { /* presence is tested elsewhere */ }, setFirmware(id: string, v: string) { this.firmware.set(id, v) } }
  let hellos = 0
  const link = new SerialLink({ device: 'n1', path: 'usb:2341:0043:A', usb: { vendorId: '2341', productId: '0043', serialNumber: 'A' }, baudRate: 115200, framing: 'cobs', reopenMinMs: 50, reopenMaxMs: 200, offlineAfterMs: 3000 },
    { outbox: { append: (_r, done) => done(null) }, registry: { setOnline: () => undefined, setFirmware: (id, v) => { hellos++; registry.setFirmware(id, v) } }, bus: new GatewayBus(), log, listPorts: async () => present })
  cleanups.push(() => link.stop())
  link.start()
  await waitFor('absent board logged', () => logs.some((l) => l.msg === 'serial port cannot be opened: retrying with backoff' && /no USB serial device 2341:0043 serial A plugged in/.test(l.err ?? '')), 15000)

  let board: SimBoard = await startSimBoard(build, join(build.dir, 'ttyACM0'))
  cleanups.push(() => board.stop())
  present = [{ ...uno('/dev/ttyACM9', 'B') }, uno(board.path, 'A')] // another Uno is plugged in too: the serial number decides
  await waitFor('hello through the USB lookup', () => registry.firmware.get('n1') === 'sensor-node usb', 10000)
  assert.equal(link.devicePath, board.path)
  assert.ok(logs.some((l) => l.msg === 'serial port open' && l.devicePath === board.path))

  // Replugged: the board comes back under another name (ttyACM1), as USB re-enumeration does.
  await board.stop()
  present = []
  await waitFor('lost', () => logs.some((l) => l.msg === 'serial port lost: board unplugged or gone; reopening with backoff'), 15000)
  const before = hellos
  board = await startSimBoard(build, join(build.dir, 'ttyACM1'))
  present = [uno(board.path, 'A')]
  await waitFor('hello at the new path', () => hellos > before, 10000)
  assert.equal(link.devicePath, board.path)
})
