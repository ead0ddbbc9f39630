// The DeviceLink contract (test/contracts/device-link.ts) against every link with a real device: SerialLinks and the
// sensor-node firmware in a simulated ATmega328P, FirmataLinks and the real StandardFirmata in a simulated Uno, and
// MqttDeviceLink with the gateway's broker and an MQTT 5 device client.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { pino } from 'pino'
import mqtt, { type MqttClient } from 'mqtt'
import { deviceLinkContract, type DeviceLinkHarness } from './contracts/device-link.ts'
import { MemoryOutbox } from './contracts/outbox.ts'
import { GatewayBus } from '../gateway/events.ts'
import { SerialLinks } from '../devices/serial/link.ts'
import { FirmataLinks } from '../devices/firmata/link.ts'
import { firmataBoard } from '../devices/firmata/config.ts'
import { MqttBroker, type BrokerDeps } from '../gateway/broker/broker.ts'
import { MqttDeviceLink } from '../gateway/broker/device-link.ts'
import { mqttSection } from '../gateway/config/sections.ts'
import { resolveRoles } from '../gateway/broker/roles.ts'
import { Registry } from '../gateway/registry/registry.ts'
import { Metrics } from '../gateway/metrics.ts'
import { buildSimBoard, standardFirmataHex, startSimBoard, type SimBoard } from './helpers/simavr.ts'
import { startGatewayProc } from './helpers/gateway.ts'
import { freePort, scaled, tempDir, waitFor } from './helpers/net.ts'

const log = pino({ level: process.env.CONTRACT_LOG ?? 'silent' })
/** What a board link needs of the registry: presence and firmware, kept here. */
const registry = () => ({ setOnline: (): void => undefined, setFirmware: (): void => undefined })

deviceLinkContract('SerialLinks: sensor-node firmware in simavr (COBS framing)', async () => {
  const build = buildSimBoard({ intervalMs: 500 })
  const path = join(build.dir, 'uart0')
  const bus = new GatewayBus()
  const outbox = new MemoryOutbox('none')
  const links = new SerialLinks([{ device: 'node-1', path, baudRate: 115200, framing: 'cobs', reopenMinMs: 50, reopenMaxMs: 500, offlineAfterMs: 3000 }], { outbox, registry: registry(), bus, log })
  // The gateway runs before the board is plugged in: the link keeps trying the port.
  links.start()
  let board: SimBoard | null = null
  const h: DeviceLinkHarness = {
    link: links, bus, device: 'node-1', listedOffline: true,
    async connect() { board = await startSimBoard(build, path) },
    async lose() { await board?.stop() },
    success: { name: 'readNow', args: null, check: (r) => { if (r !== 'ok') throw new Error(`readNow answered ${JSON.stringify(r)}`) } },
    // The board refuses pins the sensor-node does not drive (2..13): COMMAND_RESULT bad_args.
    deviceError: { name: 'setOutput', args: { pin: 1, value: true }, error: /bad_args/ },
    unanswered: { why: 'the board answers every COMMAND frame in-band (COMMAND_RESULT), retransmitted until it does' },
    unserved: { device: 'not-a-board' },
    async close() { await links.stop(); await board?.stop(); build.cleanup() },
  }
  return h
})

deviceLinkContract('FirmataLinks: StandardFirmata in simavr (johnny-five)', async () => {
  const hex = standardFirmataHex()
  const build = buildSimBoard()
  const path = join(build.dir, 'uart0')
  const bus = new GatewayBus()
  const outbox = new MemoryOutbox('none')
  const cfg = firmataBoard.parse({
    device: 'uno-1', path, reopenMinMs: 100, reopenMaxMs: 500,
    sensors: [{ type: 'analog', name: 'a0', pin: 'A0' }], actuators: [{ type: 'led', name: 'led', pin: 13 }],
  })
  const links = new FirmataLinks([cfg], { outbox, registry: registry(), bus, log })
  links.start()
  let board: SimBoard | null = null
  const h: DeviceLinkHarness = {
    link: links, bus, device: 'uno-1', listedOffline: true,
    async connect() { board = await startSimBoard(build, path, { hex, pins: true }) },
    async lose() { await board?.stop() },
    success: {
      name: 'led', args: true,
      check: (r) => { const x = r as { actuator?: string; state?: number }; if (x.actuator !== 'led' || x.state !== 1) throw new Error(`led answered ${JSON.stringify(r)}`) },
    },
    deviceError: { name: 'fan', args: true, error: /unknown command "fan" \(this board's actuators: led\)/ },
    unanswered: { why: 'an actuator is set at once: Firmata has no answer to wait for' },
    unserved: { device: 'not-a-board' },
    async close() { await links.stop(); await board?.stop(); build.cleanup() },
  }
  return h
})

deviceLinkContract('MqttDeviceLink: the gateway\'s broker and an MQTT 5 device client', async () => {
  const { dir, cleanup } = tempDir('edgeway-ct-broker-')
  const bus = new GatewayBus()
  const reg = new Registry(join(dir, 'registry.db'))
  reg.open()
  const mem = new MemoryOutbox('none')
  const outbox: BrokerDeps['outbox'] = {
    append: (r, done) => mem.append(r, done),
    appendOwned: (r, owner, tag) => mem.appendOwned(r, owner, tag),
    onCommitted: () => undefined, onRefused: () => undefined, onAppendFailed: () => undefined,
  }
  const port = await freePort()
  const broker = new MqttBroker({
    config: mqttSection.parse({ tcp: { host: '127.0.0.1', port }, ws: { enabled: false }, openBroker: true }),
    roles: resolveRoles(undefined), persistenceFile: join(dir, 'broker.db'), registry: reg, outbox, metrics: new Metrics(), bus, log,
  })
  await broker.start()
  const device = 'mqtt-1'
  let client: MqttClient | null = null
  const h: DeviceLinkHarness = {
    link: new MqttDeviceLink(broker), bus, device, listedOffline: false,
    async connect() {
      const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: device, protocolVersion: 5, reconnectPeriod: 0 })
      client = c
      // The device answers `ping` with its args, refuses `fail`, and never answers `silent`.
      c.on('message', (topic, payload) => {
        const name = topic.split('/')[3]!
        const { id, args } = JSON.parse(payload.toString()) as { id: string; args: unknown }
        if (name === 'silent') return
        const answer = name === 'fail' ? { id, error: 'relay stuck' } : { id, result: { echo: args } }
        c.publish(`${topic}/result`, JSON.stringify(answer), { qos: 1 })
      })
      await c.subscribeAsync(`devices/${device}/cmd/+`, { qos: 1 })
    },
    // The socket goes without a DISCONNECT, as when a device loses power.
    async lose() { client?.stream.destroy() },
    success: { name: 'ping', args: { n: 7 }, check: (r) => { if (JSON.stringify(r) !== '{"echo":{"n":7}}') throw new Error(`ping answered ${JSON.stringify(r)}`) } },
    deviceError: { name: 'fail', args: null, error: /^relay stuck$/ },
    unanswered: { name: 'silent', args: null },
    unserved: { why: 'the MQTT link is the fallback: it serves every device the boards do not' },
    routeResults: (router) => broker.onCommandResult((d, name, payload) => { router.handleResult(d, name, payload) }),
    async close() {
      client?.end(true)
      await broker.stop()
      reg.close()
      cleanup()
    },
  }
  return h
})

// Found by the contract: the Firmata link started before its board was plugged in left an unhandled rejection per
// reopen attempt (firmata-io re-emits the port's error on an io nobody listens to yet), and Node ends a process on
// the first one: the whole gateway died with exit code 1 within a second of starting with a Firmata board unplugged.
test('a gateway whose Firmata board is not plugged in keeps running and keeps retrying the port', async () => {
  const g = await startGatewayProc({ firmata: { boards: [{ device: 'uno-absent', path: '/dev/edgeway-no-such-port', reopenMinMs: 100, reopenMaxMs: 200, sensors: [{ type: 'analog', name: 'a0', pin: 'A0' }] }] } })
  try {
    await waitFor('the board reported unreachable', () => g.logs.some((l) => l.msg === 'firmata board not reachable: retrying with backoff'), 10000)
    // Several reopen attempts later (every 100-200 ms) the process is still there and answering.
    await new Promise((r) => setTimeout(r, scaled(2000)))
    assert.equal(g.proc.exitCode, null, `the gateway exited: ${JSON.stringify(g.logs.filter((l) => l.level >= 50))}`)
    assert.equal(g.proc.signalCode, null)
    assert.equal((await g.health()).status !== undefined, true, 'and /healthz answers')
  } finally { await g.cleanup() }
})
