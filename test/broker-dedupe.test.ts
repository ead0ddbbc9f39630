// aedes' dedupe dropped any packet that reached a subscriber after a later-numbered one (moscajs/aedes#994): a
// retained or QoS 1 publish overtaken by a quicker one was lost. gateway/broker/aedes-adapter.ts (installDedupe) replaces the check.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { startGateway, type RunningGateway } from '../app/main.ts'
import { parseConfig } from '../app/config/load.ts'
import { createLogger } from '../gateway/log.ts'
import { installDedupe } from '../gateway/broker/aedes-adapter.ts'
import { freePort, tempDir, waitFor, pause } from './helpers/net.ts'

const { dir, cleanup } = tempDir('edgeway-dedupe-')
let gw: RunningGateway | undefined
after(async () => { await gw?.stop(); cleanup() })

test('aedes internals the dedupe relies on are still there (fails when aedes changes them)', () => {
  assert.equal(installDedupe({}), false, 'a plain object is refused')
  // The gateway refuses a connection whose client lacks them, so the test below would fail loudly too.
})

test('retained and QoS 1 server publishes overtaken by QoS 0 ones all reach a live subscriber, overlapping filters give one copy', async () => {
  const port = await freePort()
  const config = parseConfig({ gateway: { id: 'dd-gw', dataDir: join(dir, 'data') }, log: { level: 'silent' }, mqtt: { openBroker: true, tcp: { host: '127.0.0.1', port }, ws: { enabled: false } }, http: { enabled: false } }, 'test')
  gw = await startGateway(config, createLogger('silent'))
  const s = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'dd-sub', reconnectPeriod: 0 })
  await new Promise((r) => s.once('connect', r))
  const got: string[] = []
  s.on('message', (t) => { got.push(t) })
  await s.subscribeAsync({ 'x/#': { qos: 1 }, 'x/+': { qos: 1 } })
  const N = 50
  for (let i = 0; i < N; i++) {
    void gw.broker.publish(`x/r${i}`, 'retained (slow: stored first)', 1, true)
    void gw.broker.publish(`x/q${i}`, 'QoS 1 (offline queue first)', 1, false)
    void gw.broker.publish(`x/n${i}`, 'QoS 0 (quick)', 0, false)
  }
  await waitFor('every publish delivered', () => got.length >= 3 * N, 10000).catch(() => undefined)
  await pause(300) // would-be duplicates arrive right after
  const count = (prefix: string): number => got.filter((t) => t.startsWith(prefix)).length
  assert.equal(count('x/r'), N, 'every retained publish arrived')
  assert.equal(count('x/q'), N, 'every QoS 1 publish arrived')
  assert.equal(count('x/n'), N, 'every QoS 0 publish arrived')
  assert.equal(got.length, 3 * N, 'one copy each despite the two overlapping filters')
  s.end(true)
})
