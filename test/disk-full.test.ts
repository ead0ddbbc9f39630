// Disk full: the outbox sits on a tiny tmpfs; acks are withheld while writes fail, nothing acked is lost.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, openSync, writeSync, closeSync, statfsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { simulateDevice } from './helpers/load.ts'
import { freePort, scaled, tempDir, waitFor } from './helpers/net.ts'
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

  // Bounded, so that once space is back the devices finish and every reading can be seen acked.
  const first = simulateDevice(url, 'full', { window: 4, payloadPad: 1500, max: 1000 })
  await g.waitLog((l) => /DISK FULL/.test(l.msg), 30000)
  await waitFor('a publish left unacknowledged', () => first.sent > first.acked.size, 10000)
  const h = await g.health()
  assert.equal(h.status, 'degraded')
  assert.ok(h.reasons.some((r) => /disk full/.test(r)), h.reasons.join('; '))
  assert.equal(h.outbox.diskFull, true)
  assert.ok(first.acked.size > 10, `some readings were acked before the disk filled (${first.acked.size})`)
  assert.ok(await g.metric('edgeway_outbox_disk_full') === 1)

  // While the disk is full nobody is disconnected: devices wait for their acks, a new one connects and waits too,
  // and the log says it once (before: every device was closed, ~290 reconnects and ~860 log lines in 12 s).
  const logsAtFull = g.logs.length
  const late = simulateDevice(url, 'late', { window: 2, payloadPad: 100, startSeq: 100000, max: 20 })
  await waitFor('the late device published', () => late.sent > 0, 10000)
  await new Promise((r) => setTimeout(r, scaled(3000)))
  assert.equal(first.closed, false, 'the first device is still connected')
  assert.equal(late.closed, false, 'the late device is still connected')
  assert.equal(late.acked.size, 0, 'nothing acked while full')
  assert.equal(g.proc.exitCode, null, 'still running')
  const linesWhileFull = g.logs.slice(logsAtFull)
  // Each part says it once (outbox, checkpointer, history, journal; a distinct history error per kind of write).
  const perMessage = new Map<string, number>()
  for (const l of linesWhileFull) perMessage.set(l.msg, (perMessage.get(l.msg) ?? 0) + 1)
  const summary = [...perMessage].map(([m, n]) => `${n}x ${m}`).join(' | ')
  assert.ok(linesWhileFull.length <= 10 && [...perMessage.values()].every((n) => n <= 2), `a few log lines while full, not a storm: ${summary}`)
  const ackedBefore = first.acked.size

  // Space comes back: the held readings are written and acked on the same connections, by themselves.
  rmSync(ballast)
  await waitFor('the held readings acked', () => first.acked.size === 1000 && late.acked.size === 20, scaled(20000))
  assert.ok(first.acked.size > ackedBefore)
  assert.equal(first.closed, false)
  await waitFor('healthy disk', async () => (await g!.health()).outbox.diskFull === false, 10000)
  const second = simulateDevice(url, 'full', { window: 4, payloadPad: 100, startSeq: 200000, max: 50 })
  await waitFor('acks again', () => second.acked.size === 50, 20000)
  await second.stop()
  await first.stop()
  await late.stop()

  assert.equal(await g.stop(), 0)
  const store = new OutboxStore({ file: join(mnt, 'data', 'outbox.db'), gatewayId: 'test-gw', upstreams: ['nowhere'], maxBytes: 1e9, maxAgeMs: 1e12 })
  store.open()
  const rows = store.claim('nowhere', 1_000_000)
  store.close()
  const stored = new Set(rows.map((r) => r.deviceSeq))
  const missing = [...first.acked, ...late.acked, ...second.acked].filter((n) => !stored.has(n))
  assert.deepEqual(missing, [], 'every acknowledged reading is in the outbox')
})

test('disk full for longer than outbox.diskFullHoldSeconds: a waiting device is closed once, after the hold, not before', async () => {
  if (!mounted) throw new Error('needs the tmpfs of the test above')
  // The test above is done with its data and ballast (even when it failed half way): the space is this test's.
  rmSync(join(mnt, 'data'), { recursive: true, force: true })
  rmSync(join(mnt, 'ballast'), { force: true })
  const holdSeconds = Math.max(2, Math.round(scaled(2000) / 1000))
  const deadPort = await freePort()
  const h = await startGatewayProc({
    mqtt: { openBroker: true },
    outbox: { diskFullHoldSeconds: holdSeconds },
    upstreams: [{ name: 'nowhere', type: 'mqtt', url: `mqtt://127.0.0.1:${deadPort}`, reconnectMinMs: 1000, reconnectMaxMs: 5000 }],
  }, { dataDir: join(mnt, 'data2') })
  const ballast = join(mnt, 'ballast2')
  try {
    fillTo(ballast, 300 * 1024)
    const dev = simulateDevice(`mqtt://127.0.0.1:${h.mqttPort}`, 'held', { window: 4, payloadPad: 1500 })
    await h.waitLog((l) => /DISK FULL/.test(l.msg), 30000)
    const fullAt = Date.now()
    await waitFor('closed after the hold', () => dev.closed, scaled(holdSeconds * 1000 + 15000))
    const waited = Date.now() - fullAt
    assert.ok(waited >= holdSeconds * 1000 - 600, `closed after ${waited} ms, the hold is ${holdSeconds} s`)
    await dev.stop()
  } finally {
    rmSync(ballast, { force: true })
    await h.cleanup()
  }
})
