// OTA over MQTT end to end: the real gateway child process, `edgeway ota push` through the control socket, and a
// simulated networked node (MQTT.js) implementing the device side.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, generateKeyPairSync, sign } from 'node:crypto'
import { writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { OtaSimNode, type OtaNodeOptions } from './helpers/ota-node.ts'
import { connect, collect, end } from './helpers/mqtt.ts'
import { waitFor, pause } from './helpers/net.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'
import type { OtaJob } from '../gateway/ota/job.ts'

let g: GatewayProc
let url: string
const nodes: OtaSimNode[] = []

before(async () => {
  g = await startGatewayProc()
  url = `mqtt://127.0.0.1:${g.mqttPort}`
})
after(async () => {
  for (const n of nodes) await n.stop()
  await g?.cleanup()
})

async function node(id: string, opts: Partial<OtaNodeOptions> = {}): Promise<OtaSimNode> {
  const secret = await addDevice(g, id)
  const n = new OtaSimNode({ url, device: id, secret, version: '1.0.0', ...opts })
  nodes.push(n)
  await n.start()
  // The registry knows what the node runs before the update.
  await waitFor(`${id} firmware 1.0.0`, async () => (await device(id)).firmwareVersion === '1.0.0')
  return n
}

function image(name: string, bytes: number): string {
  const f = join(g.dir, name)
  writeFileSync(f, randomBytes(bytes))
  return f
}

async function device(id: string): Promise<{ firmwareVersion: string | null }> {
  return JSON.parse((await g.cli(['device', 'show', id])).stdout) as { firmwareVersion: string | null }
}

async function jobs(id: string): Promise<OtaJob[]> {
  return JSON.parse((await g.cli(['ota', 'status', id, '--json'])).stdout) as OtaJob[]
}

test('a node receives a 1 MB image, is cut off midway, resumes from its last good offset, comes back with the new version: success, registry updated', async () => {
  const keys = generateKeyPairSync('ed25519')
  // The node checks the Ed25519 signature over the image as well as the hash.
  const n = await node('esp-1', { dropAfterBytes: 400_000, publicKey: keys.publicKey })
  const img = image('fw-1.1.0.bin', 1024 * 1024)
  const sigFile = join(g.dir, 'fw-1.1.0.sig')
  writeFileSync(sigFile, sign(null, readFileSync(img), keys.privateKey))
  const r = await g.cli(['ota', 'push', 'esp-1', img, '--version', '1.1.0', '--signature', sigFile, '--deadline', '60s'])
  assert.equal(r.code, 0, r.stderr + r.stdout)
  assert.match(r.stdout, /ota job \d+: succeeded: esp-1 runs 1\.1\.0/)
  assert.match(r.stderr, /downloading/)
  assert.equal(n.version, '1.1.0')
  // The node dropped once and picked up where it had verified, not at 0.
  const second = n.requests.filter((q) => q.session === 2)
  assert.ok(second.length > 0, `requests after the reconnect: ${n.log.join('; ')}`)
  assert.ok(second[0]!.offset >= 400_000, `resumed at ${second[0]!.offset}`)
  assert.equal(n.requests.filter((q) => q.offset === 0).length, 1, 'offset 0 requested once only')
  const resumed = await g.waitLog((l) => /ota transfer resumed at offset/.test(l.msg))
  assert.ok((resumed.offset as number) >= 400_000)
  assert.equal((await device('esp-1')).firmwareVersion, '1.1.0')
  const [job] = await jobs('esp-1')
  assert.equal(job?.state, 'succeeded')
  assert.equal(job?.previousVersion, '1.0.0')
  assert.equal(job?.size, 1024 * 1024)
  assert.ok(await g.metric('edgeway_ota_jobs_total', { state: 'succeeded' }) >= 1)
  assert.ok(await g.metric('edgeway_ota_bytes_served_total') >= 1024 * 1024)
})

test('transfer rate of a 1 MB image over loopback (4 KiB chunks, 4 requests outstanding)', async () => {
  const n = await node('esp-rate')
  const img = image('fw-rate.bin', 1024 * 1024)
  const t0 = performance.now()
  const r = await g.cli(['ota', 'push', 'esp-rate', img, '--version', '2.0.0', '--no-wait'])
  assert.equal(r.code, 0, r.stderr)
  await waitFor('applied', () => n.statuses.some((s) => s.state === 'applied'), 60_000, 10)
  const s = (performance.now() - t0) / 1000
  const x = (n.transfer!.end - n.transfer!.start) / 1000
  const rate = 1024 / x
  // Transfer: announce received -> last chunk; push-to-applied adds the CLI process start, image copy and hashing.
  process.stderr.write(`OTA 1 MiB over loopback: transfer ${x.toFixed(2)} s = ${rate.toFixed(0)} KiB/s; push-to-applied ${s.toFixed(2)} s\n`)
  assert.ok(rate > 50, `rate ${rate} KiB/s`)
  await waitFor('succeeded', async () => (await jobs('esp-rate'))[0]?.state === 'succeeded', 20_000)
})

test('a tampered stored image (served corrupted) is rejected by the node by hash and the job is reported failed', async () => {
  const secret = await addDevice(g, 'esp-2')
  const img = image('fw-tamper.bin', 200_000)
  const r = await g.cli(['ota', 'push', 'esp-2', img, '--version', '1.1.0', '--no-wait'])
  assert.equal(r.code, 0, r.stderr)
  const [job] = await jobs('esp-2')
  // Corrupt the gateway's stored copy before the node pulls it: the announce still carries the original hash.
  const stored = join(g.dataDir, 'ota', 'images', `${job!.id}.bin`)
  const bytes = readFileSync(stored)
  bytes[123_456]! ^= 0xff
  writeFileSync(stored, bytes)
  const n = new OtaSimNode({ url, device: 'esp-2', secret, version: '1.0.0' })
  nodes.push(n)
  await n.start()
  const failed = await waitFor('failed', async () => { const j = (await jobs('esp-2'))[0]; return j?.state === 'failed' && j }, 20_000)
  assert.match(failed.reason!, /device reported failure: sha256 mismatch/)
  assert.equal(n.version, '1.0.0')
  assert.equal((await device('esp-2')).firmwareVersion, '1.0.0')
})

test('a node that computes a different hash reports failed; the CLI exits 1 with the reason', async () => {
  await node('esp-3', { corrupt: true })
  const r = await g.cli(['ota', 'push', 'esp-3', image('fw-3.bin', 50_000), '--version', '1.1.0'])
  assert.equal(r.code, 1)
  assert.match(r.stdout, /failed: device reported failure: sha256 mismatch/)
})

test('a node that requires a signature refuses an image signed with another key', async () => {
  const n = await node('esp-sig', { publicKey: generateKeyPairSync('ed25519').publicKey })
  const img = image('fw-sig.bin', 20_000)
  const sigFile = join(g.dir, 'fw-sig.sig')
  writeFileSync(sigFile, sign(null, readFileSync(img), generateKeyPairSync('ed25519').privateKey))
  const r = await g.cli(['ota', 'push', 'esp-sig', img, '--version', '1.1.0', '--signature', sigFile])
  assert.equal(r.code, 1)
  assert.match(r.stdout, /failed: device reported failure: signature does not verify/)
  assert.equal(n.version, '1.0.0')
})

test('a node that never comes back within the deadline is reported rolled back', async () => {
  await node('esp-4', { afterApply: 'never' })
  const t0 = Date.now()
  const r = await g.cli(['ota', 'push', 'esp-4', image('fw-4.bin', 30_000), '--version', '1.1.0', '--deadline', '2s'])
  assert.equal(r.code, 1, r.stderr)
  assert.match(r.stdout, /rolled_back: no healthy report of 1\.1\.0 within 2 s after applied: the device did not reconnect/)
  assert.ok(Date.now() - t0 >= 2000)
  assert.equal((await device('esp-4')).firmwareVersion, '1.0.0')
})

test('a node that comes back unhealthy is rolled back at the deadline; one that comes back on the old version, at once', async () => {
  await node('esp-5', { afterApply: 'unhealthy' })
  // The deadline leaves the node time to reboot and report even on a loaded machine.
  const r = await g.cli(['ota', 'push', 'esp-5', image('fw-5.bin', 30_000), '--version', '1.1.0', '--deadline', '5s'])
  assert.equal(r.code, 1, r.stderr)
  assert.match(r.stdout, /rolled_back: no healthy report of 1\.1\.0 within 5 s after applied: it reported 1\.1\.0 but not healthy/)

  await node('esp-6', { afterApply: 'old' })
  const t0 = Date.now()
  const o = await g.cli(['ota', 'push', 'esp-6', image('fw-6.bin', 30_000), '--version', '1.1.0', '--deadline', '60s'])
  assert.equal(o.code, 1, o.stderr)
  assert.match(o.stdout, /rolled_back: device came back running 1\.0\.0 instead of 1\.1\.0/)
  assert.ok(Date.now() - t0 < 30_000, 'did not wait for the deadline')
  assert.equal((await device('esp-6')).firmwareVersion, '1.0.0')
})

test('ota topics: a device may not read another device\'s chunks, nor publish downlink or for others; refused and counted', async () => {
  const sa = await addDevice(g, 'acl-a')
  const sb = await addDevice(g, 'acl-b')
  const b = await connect(url, { clientId: 'acl-b:1', username: 'acl-b', password: sb })
  const gotB = collect(b)
  await b.subscribeAsync(['devices/acl-b/ota/announce', 'devices/acl-b/ota/chunk'], { qos: 1 })
  const raw = await rawConnect(g.mqttPort)
  raw.send(connectPacket('acl-a:raw', { username: 'acl-a', password: Buffer.from(sa) }))
  assert.equal(((await raw.next('connack')) as { returnCode: number }).returnCode, 0)
  raw.send({ cmd: 'subscribe', messageId: 3, subscriptions: ['devices/acl-b/ota/chunk', 'devices/acl-b/ota/announce', 'devices/acl-a/ota/#', 'devices/acl-a/ota/chunk'].map((topic) => ({ topic, qos: 1 as const })) })
  assert.deepEqual(((await raw.next('suback')) as { granted: number[] }).granted, [128, 128, 128, 1])
  raw.socket.destroy()
  const before = await g.metric('edgeway_refusals_total', { reason: 'acl_publish' })
  // A device forging the gateway's downlink to another device (or to itself) is refused and disconnected.
  for (const topic of ['devices/acl-b/ota/chunk', 'devices/acl-a/ota/announce', 'devices/acl-b/ota/request']) {
    const c = await connect(url, { clientId: `acl-a:${Math.random().toString(16).slice(2, 6)}`, username: 'acl-a', password: sa })
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()))
    c.publish(topic, Buffer.from('EWO1\0\0\0\x01\0\0\0\0evil'), { qos: 1 })
    await closed
    await end(c)
  }
  await waitFor('3 refusals counted', async () => await g.metric('edgeway_refusals_total', { reason: 'acl_publish' }) - before === 3)
  await g.waitLog((l) => l.reason === 'acl_publish' && l.topic === 'devices/acl-b/ota/chunk')
  await pause(200)
  assert.equal(gotB.length, 0, 'acl-b received nothing forged')
  await end(b)
})

test('bad OTA input from a device is logged and answered on its errors topic; the job is untouched', async () => {
  const s = await addDevice(g, 'esp-bad')
  const c = await connect(url, { clientId: 'esp-bad:1', username: 'esp-bad', password: s })
  const got = collect(c)
  await c.subscribeAsync('devices/esp-bad/errors', { qos: 1 })
  await c.publishAsync('devices/esp-bad/ota/request', 'not json', { qos: 1 })
  await c.publishAsync('devices/esp-bad/ota/request', '{"job":999,"offset":0}', { qos: 1 })
  await c.publishAsync('devices/esp-bad/ota/status', '{"job":999,"state":"exploded"}', { qos: 1 })
  await waitFor('3 errors', () => got.length >= 3)
  const reasons = got.map((p) => (JSON.parse(p.payload.toString()) as { reason: string }).reason)
  assert.match(reasons[0]!, /request is not a JSON object/)
  assert.match(reasons[1]!, /job 999 is not this device's active OTA job/)
  assert.match(reasons[2]!, /status.state must be downloading, applied or failed/)
  await g.waitLog((l) => /ota request refused: request is not a JSON object/.test(l.msg))
  assert.ok(c.connected, 'the device stays connected')
  await end(c)
})

test('push errors: unknown device, a second job for a busy device, missing file', async () => {
  const unknown = await g.cli(['ota', 'push', 'nobody', image('x.bin', 1000), '--version', '1'])
  assert.equal(unknown.code, 1)
  assert.match(unknown.stderr, /unknown device "nobody"/)
  await addDevice(g, 'esp-busy')
  const missing = await g.cli(['ota', 'push', 'esp-busy', join(g.dir, 'nope.bin'), '--version', '3'])
  assert.equal(missing.code, 1)
  assert.match(missing.stderr, /cannot read .*nope\.bin/)
  const img = image('busy.bin', 1000)
  assert.equal((await g.cli(['ota', 'push', 'esp-busy', img, '--version', '2', '--no-wait'])).code, 0)
  const again = await g.cli(['ota', 'push', 'esp-busy', img, '--version', '3'])
  assert.equal(again.code, 1)
  assert.match(again.stderr, /already has OTA job \d+ \(announced\)/)
  // The device never asks: the operator cancels, and may push again.
  const cancelled = await g.cli(['ota', 'cancel', 'esp-busy'])
  assert.equal(cancelled.code, 0, cancelled.stderr)
  assert.match(cancelled.stdout, /cancelled: cancelled by the operator in state announced/)
  assert.equal((await jobs('esp-busy'))[0]?.state, 'cancelled')
  assert.equal((await g.cli(['ota', 'push', 'esp-busy', img, '--version', '3', '--no-wait'])).code, 0)
  const none = await g.cli(['ota', 'cancel', 'nobody'])
  assert.equal(none.code, 1)
  assert.match(none.stderr, /device "nobody" has no unfinished OTA job/)
})
