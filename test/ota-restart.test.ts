// OTA jobs are durable: the gateway stops mid-transfer, starts again on the same data dir, and the node finishes
// the download from its last good offset; a job waiting for the reboot survives a restart too.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { OtaSimNode } from './helpers/ota-node.ts'
import { waitFor } from './helpers/net.ts'
import type { OtaJob } from '../gateway/ota/job.ts'

let g: GatewayProc | undefined
const nodes: OtaSimNode[] = []
after(async () => {
  for (const n of nodes) await n.stop()
  await g?.cleanup()
})

const job = async (gw: GatewayProc, id: string): Promise<OtaJob | undefined> =>
  (JSON.parse((await gw.cli(['ota', 'status', id, '--json'])).stdout) as OtaJob[])[0]

test('a gateway crash (SIGKILL) mid-transfer: after the restart the job resumes; the node continues from its last good offset', async () => {
  const gw = g = await startGatewayProc()
  const secret = await addDevice(gw, 'esp-r')
  // The node holds still at a third of the image, so the gateway goes down mid-transfer whatever the machine's load.
  const n = new OtaSimNode({ url: `mqtt://127.0.0.1:${gw.mqttPort}`, device: 'esp-r', secret, version: '1.0.0', pauseAtBytes: 350_000, requestTimeoutMs: 1000 })
  nodes.push(n)
  await n.start()
  const img = join(gw.dir, 'fw.bin')
  writeFileSync(img, randomBytes(1024 * 1024))
  // The CLI waits on the control socket: it sees the gateway go away and says the job continues.
  const push = gw.cli(['ota', 'push', 'esp-r', img, '--version', '1.1.0', '--deadline', '30s'])
  await waitFor('a third of the image', () => n.paused, 30_000)
  // A crash, not a clean stop: nothing gets flushed.
  await gw.kill()
  const cut = n.goodOffset
  assert.ok(cut < 1024 * 1024, 'stopped mid-transfer')
  const cli = await push
  assert.equal(cli.code, 1)
  assert.match(cli.stderr, /closed the control connection.*resumes when the gateway runs again/)
  const stored = await job(gw, 'esp-r')
  assert.equal(stored?.state, 'downloading')
  await gw.start()
  await gw.waitLog((l) => l.msg === 'ota job resumed after restart' && l.device === 'esp-r')
  const done = await waitFor('succeeded', async () => { const j = await job(gw, 'esp-r'); return j?.state === 'succeeded' && j }, 60_000, 200)
  assert.equal(done.size, 1024 * 1024)
  assert.equal(n.version, '1.1.0')
  const later = n.requests.filter((r) => r.session > 1)
  assert.ok(later.length > 0)
  assert.ok(later[0]!.offset >= cut - 4096 && later[0]!.offset > 0, `first request after the restart at ${later[0]!.offset}, node had ${cut}`)
  assert.equal(n.requests.filter((r) => r.offset === 0).length, 1, 'never started again from 0')
  const dev = JSON.parse((await gw.cli(['device', 'show', 'esp-r'])).stdout) as { firmwareVersion: string }
  assert.equal(dev.firmwareVersion, '1.1.0')
})

test('a job waiting for the reboot survives a gateway restart: the node comes back on the new gateway and the job succeeds', async () => {
  const gw = g!
  const secret = await addDevice(gw, 'esp-r2')
  const n = new OtaSimNode({ url: `mqtt://127.0.0.1:${gw.mqttPort}`, device: 'esp-r2', secret, version: '1.0.0', holdReboot: true })
  nodes.push(n)
  await n.start()
  const img = join(gw.dir, 'fw2.bin')
  writeFileSync(img, randomBytes(100_000))
  assert.equal((await gw.cli(['ota', 'push', 'esp-r2', img, '--version', '2.0.0', '--deadline', '60s', '--no-wait'])).code, 0)
  await waitFor('applied', async () => (await job(gw, 'esp-r2'))?.state === 'applied', 20_000)
  // The node is rebooting; the gateway restarts meanwhile.
  await waitFor('node rebooting', () => n.holding, 10_000)
  assert.equal(await gw.stop(), 0)
  await gw.start()
  await gw.waitLog((l) => l.msg === 'ota job resumed after restart' && l.device === 'esp-r2' && l.state === 'applied')
  n.powerOn()
  await waitFor('succeeded', async () => (await job(gw, 'esp-r2'))?.state === 'succeeded', 20_000, 200)
  assert.equal(n.version, '2.0.0')
  assert.equal(n.requests.filter((r) => r.session > 1).length, 0, 'no download after the reboot')
})

test('an image corrupted on disk while the gateway was down fails its job at start, before any device downloads it', async () => {
  const gw = g!
  await addDevice(gw, 'esp-r3')
  const img = join(gw.dir, 'fw3.bin')
  writeFileSync(img, randomBytes(50_000))
  assert.equal((await gw.cli(['ota', 'push', 'esp-r3', img, '--version', '2.0.0', '--no-wait'])).code, 0)
  const j = await job(gw, 'esp-r3')
  assert.equal(await gw.stop(), 0)
  const stored = join(gw.dataDir, 'ota', 'images', `${j!.id}.bin`)
  const bytes = readFileSync(stored)
  bytes[10]! ^= 0x80
  writeFileSync(stored, bytes)
  await gw.start()
  const failed = await waitFor('failed', async () => { const x = await job(gw, 'esp-r3'); return x?.state === 'failed' && x }, 10_000)
  assert.match(failed.reason!, /stored image corrupted while the gateway was down/)
  // The device may push again.
  assert.equal((await gw.cli(['ota', 'push', 'esp-r3', img, '--version', '2.0.0', '--no-wait'])).code, 0)
})
