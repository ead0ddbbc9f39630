// Commands routed to a serial board: the router (the same one AMQP commands use) -> serial link -> firmware in simavr.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { startGateway, type RunningGateway } from '../app/main.ts'
import { parseConfig } from '../app/config/load.ts'
import { createLogger } from '../gateway/log.ts'
import { buildSimBoard, startSimBoard } from './helpers/simavr.ts'
import { freePort, tempDir, waitFor, pause } from './helpers/net.ts'
import { toSerialCommand } from '../devices/serial/commands.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

test('command names and arguments map onto the board command set, with clear errors', () => {
  assert.deepEqual(toSerialCommand('setInterval', { ms: 250 }), { ok: true, command: { op: 'setInterval', ms: 250 } })
  assert.deepEqual(toSerialCommand('setInterval', 250), { ok: true, command: { op: 'setInterval', ms: 250 } })
  assert.deepEqual(toSerialCommand('setOutput', { pin: 13, value: true }), { ok: true, command: { op: 'setOutput', pin: 13, value: true } })
  assert.match((toSerialCommand('setInterval', { ms: 5 }) as { error: string }).error, /10\.\.65535/)
  assert.match((toSerialCommand('setOutput', { pin: 13 }) as { error: string }).error, /value/)
  assert.match((toSerialCommand('selfDestruct', {}) as { error: string }).error, /unknown command "selfDestruct"/)
})

test('router -> serial board: setInterval changes the reading rate; unknown commands and devices get error results', async () => {
  const build = buildSimBoard({ version: '1.0.0', intervalMs: 500 })
  cleanups.push(build.cleanup)
  const path = join(build.dir, 'uart0')
  const board = await startSimBoard(build, path)
  cleanups.push(() => board.stop())
  const { dir, cleanup } = tempDir()
  cleanups.push(cleanup)
  const config = parseConfig({
    gateway: { id: 'cmd-gw', dataDir: join(dir, 'data') },
    log: { level: 'silent' },
    mqtt: { tcp: { host: '127.0.0.1', port: await freePort() }, ws: { enabled: false } },
    http: { enabled: false },
    serial: { ports: [{ device: 'node-9', path, baudRate: 115200, reopenMinMs: 100, reopenMaxMs: 500 }] },
  }, 'test')
  const gw: RunningGateway = await startGateway(config, createLogger('silent'))
  cleanups.push(() => gw.stop())
  const link = gw.serial.byDevice('node-9')!
  await waitFor('board online', () => link.status().online, 10000)

  const rate = async (ms: number): Promise<number> => {
    const a = link.status().readings
    await new Promise((r) => setTimeout(r, ms))
    return (link.status().readings - a) / (ms / 1000)
  }
  // the readings the board kept while nobody listened are resent on the gateway's HELLO: let them pass first
  await pause(1000)
  const slow = await rate(2000)
  const res = await gw.commands.dispatch({ id: 'c1', device: 'node-9', name: 'setInterval', args: { ms: 100 } })
  assert.deepEqual(res, { id: 'c1', device: 'node-9', name: 'setInterval', ok: true, result: 'ok' })
  await pause(300)
  const fast = await rate(2000)
  assert.ok(slow < 3, `about 2 readings/s at 500 ms (${slow})`)
  assert.ok(fast > 6, `about 10 readings/s at 100 ms (${fast})`)

  const bad = await gw.commands.dispatch({ id: 'c2', device: 'node-9', name: 'selfDestruct', args: {} })
  assert.equal(bad.ok, false)
  assert.match(bad.ok ? '' : bad.error, /unknown command/)
  const nobody = await gw.commands.dispatch({ id: 'c3', device: 'ghost', name: 'readNow', args: {} })
  assert.equal(nobody.ok ? '' : nobody.code, 'unknown_device')
})
