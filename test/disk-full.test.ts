// Disk full: the outbox sits on a tiny tmpfs; acks are withheld while writes fail, nothing acked is lost.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, openSync, writeSync, closeSync, statfsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { simulateDevice } from './helpers/load.ts'
import { freePort, tempDir, waitFor } from './helpers/net.ts'
import { OutboxStore } from '../gateway/outbox/store.ts'

const tmp = tempDir('edgeway-diskfull-')
const mnt = join(tmp.dir, 'mnt')
let g: GatewayProc | undefined
let mounted = false

after(async () => {
  await g?.cleanup()
  if (mounted) execFileSync('umount', ['-l', mnt])
  tmp.cleanup()
})

function fillTo(file: string, leaveBytes: number): void {
  const st = statfsSync(mnt)
  const free = st.bavail * st.bsize
  const fd = openSync(file, 'w')
  const chunk = Buffer.alloc(64 * 1024)
  let left = Math.max(0, free - leaveBytes)
  try {
    while (left > 0) { const n = writeSync(fd, chunk, 0, Math.min(chunk.length, left)); left -= n }
  } catch { /* ENOSPC: full is what we want */ } finally { closeSync(fd) }
}

test('disk full: acks withheld, health alarm, no crash, and every acknowledged reading is in the outbox', async () => {
  if (process.getuid?.() !== 0) throw new Error('this test mounts a small tmpfs and must run as root (CI runs as root)')
  mkdirSync(mnt, { recursive: true })
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt])
  mounted = true
  const deadPort = await freePort() // the upstream never answers, so every reading stays in the outbox
  g = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [{ name: 'nowhere', type: 'mqtt', url: `mqtt://127.0.0.1:${deadPort}`, reconnectMinMs: 1000, reconnectMaxMs: 5000 }],
  }, { dataDir: join(mnt, 'data') })
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const ballast = join(mnt, 'ballast')
  fillTo(ballast, 300 * 1024)

  const first = simulateDevice(url, 'full', { window: 4, payloadPad: 1500 })
  await g.waitLog((l) => /DISK FULL/.test(l.msg), 30000)
  await waitFor('a publish left unacknowledged', () => first.sent > first.acked.size, 10000)
  await first.stop()
  const h = await g.health()
  assert.equal(h.status, 'degraded')
  assert.ok(h.reasons.some((r) => /disk full/.test(r)), h.reasons.join('; '))
  assert.equal(h.outbox.diskFull, true)
  assert.ok(first.acked.size > 10, `some readings were acked before the disk filled (${first.acked.size})`)
  assert.ok(await g.metric('edgeway_outbox_disk_full') === 1)

  // Retrying devices keep being refused while the disk is full; the process stays up.
  const retry = simulateDevice(url, 'full', { window: 1, payloadPad: 1500, startSeq: 100000 })
  await new Promise((r) => setTimeout(r, 500))
  await retry.stop()
  assert.equal(retry.acked.size, 0, 'nothing acked while full')
  assert.equal(g.proc.exitCode, null, 'still running')

  // Space comes back: writes and acks resume by themselves.
  rmSync(ballast)
  const second = simulateDevice(url, 'full', { window: 4, payloadPad: 100, startSeq: 200000, max: 50 })
  await waitFor('acks again', () => second.acked.size === 50, 20000)
  await waitFor('healthy disk', async () => (await g!.health()).outbox.diskFull === false, 10000)
  await second.stop()

  assert.equal(await g.stop(), 0)
  const store = new OutboxStore({ file: join(mnt, 'data', 'outbox.db'), gatewayId: 'test-gw', upstreams: ['nowhere'], maxBytes: 1e9, maxAgeMs: 1e12 })
  store.open()
  const rows = store.claim('nowhere', 1_000_000)
  store.close()
  const stored = new Set(rows.map((r) => r.deviceSeq))
  const missing = [...first.acked, ...second.acked].filter((n) => !stored.has(n))
  assert.deepEqual(missing, [], 'every acknowledged reading is in the outbox')
  assert.ok(!rows.some((r) => r.deviceSeq !== null && r.deviceSeq >= 100000 && r.deviceSeq < 200000), 'the refused retries were not stored')
})
