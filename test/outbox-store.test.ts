import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { OutboxStore, readDeadLetters, requestDeadRetry } from '../gateway/outbox/store.ts'
import type { ReadingInput, RawReading } from '../gateway/readings.ts'
import { OutboxClient } from '../gateway/outbox/client.ts'
import { createLogger } from '../gateway/log.ts'
import { tempDir, waitFor, pause } from './helpers/net.ts'

const raw = (device: string, text: string): RawReading => ({ device, link: 'test', payload: Buffer.from(text) })
const r = (device: string, n: number): ReadingInput => ({ device, ts: 1000 + n, deviceSeq: n, kind: 'json', payload: `{"v":${n}}`, link: 'test' })

function store(file: string, upstreams: string[], extra: Partial<ConstructorParameters<typeof OutboxStore>[0]> = {}): OutboxStore {
  const s = new OutboxStore({ file, gatewayId: 'gw', upstreams, maxBytes: 10 * 1024 * 1024, maxAgeMs: 3600_000, ...extra })
  s.open()
  return s
}

test('append assigns row ids and per-device sequences; message ids are stable', () => {
  const { dir, cleanup } = tempDir()
  try {
    const s = store(join(dir, 'o.db'), ['up'])
    assert.equal(s.appendBatch([r('a', 1), r('b', 1), r('a', 2)]), 3)
    const rows = s.claim('up', 10)
    assert.deepEqual(rows.map((x) => [x.rowId, x.device, x.seq, x.msgId]), [[1, 'a', 1, 'gw:a:1'], [2, 'b', 1, 'gw:b:1'], [3, 'a', 2, 'gw:a:2']])
    assert.equal(rows[0]!.deviceSeq, 1)
    assert.equal(rows[0]!.payload, '{"v":1}')
    s.close()
  } finally { cleanup() }
})

test('a large batch (several multi-row statements and a tail) stores every row with its own fields', () => {
  const { dir, cleanup } = tempDir()
  try {
    const s = store(join(dir, 'o.db'), ['up'])
    const batch: ReadingInput[] = Array.from({ length: 70 }, (_, i) => i % 7 === 3
      ? { device: `d${i % 3}`, ts: 5000 + i, deviceSeq: null, kind: 'raw', payload: new Uint8Array([i, 255 - i]), link: 'serial', priority: true }
      : { ...r(`d${i % 3}`, i), link: i % 2 ? 'mqtt' : 'firmata' })
    assert.equal(s.appendBatch(batch), 70)
    const rows = s.claim('up', 100)
    assert.equal(rows.length, 70)
    const byId = new Map(rows.map((x) => [x.rowId, x]))
    const perDevice = new Map<string, number>()
    batch.forEach((b, i) => {
      const got = byId.get(i + 1)!
      const seq = (perDevice.get(b.device) ?? 0) + 1
      perDevice.set(b.device, seq)
      assert.deepEqual([got.device, got.seq, got.deviceSeq, got.ts, got.kind, got.link, got.priority], [b.device, seq, b.deviceSeq, b.ts, b.kind, b.link, b.priority === true], `row ${i + 1}`)
      if (b.kind === 'raw') assert.deepEqual([...(got.payload as Uint8Array)], [...(b.payload as Uint8Array)])
      else assert.equal(got.payload, b.payload)
    })
    assert.equal(s.stats().depth, 70)
    s.close()
  } finally { cleanup() }
})

test('claim respects in-flight and acks; release returns unsettled rows in order', () => {
  const { dir, cleanup } = tempDir()
  try {
    const s = store(join(dir, 'o.db'), ['up'])
    s.appendBatch(Array.from({ length: 10 }, (_, i) => r('a', i)))
    const first = s.claim('up', 4)
    assert.deepEqual(first.map((x) => x.rowId), [1, 2, 3, 4])
    assert.deepEqual(s.claim('up', 2).map((x) => x.rowId), [5, 6], 'in-flight rows are not claimed twice')
    s.ack('up', [2, 1, 5]) // out of order
    s.release('up')
    assert.deepEqual(s.claim('up', 100).map((x) => x.rowId), [3, 4, 6, 7, 8, 9, 10], 'acked rows never come back, the rest in order')
    assert.equal(s.stats().upstreams[0]!.ackedUpto, 2)
    s.release('up', [4]) // "try later" for one row only
    assert.deepEqual(s.claim('up', 100).map((x) => x.rowId), [4], 'only the released row comes back')
    s.close()
  } finally { cleanup() }
})

test('a row is deleted only when every upstream acked it', () => {
  const { dir, cleanup } = tempDir()
  try {
    const s = store(join(dir, 'o.db'), ['a', 'b'])
    s.appendBatch([r('d', 1), r('d', 2), r('d', 3)])
    s.ack('a', s.claim('a', 10).map((x) => x.rowId))
    s.maintain()
    assert.equal(s.stats().depth, 3, 'b has not acked yet')
    s.ack('b', s.claim('b', 2).map((x) => x.rowId))
    s.maintain()
    assert.equal(s.stats().depth, 1)
    assert.deepEqual(s.claim('b', 10).map((x) => x.rowId), [3])
    s.close()
  } finally { cleanup() }
})

test('cursors, sequences and ids survive a reopen; unacked rows are replayed', () => {
  const { dir, cleanup } = tempDir()
  const file = join(dir, 'o.db')
  try {
    let s = store(file, ['up'])
    s.appendBatch([r('a', 1), r('a', 2), r('a', 3)])
    s.ack('up', s.claim('up', 2).map((x) => x.rowId))
    s.claim('up', 10) // row 3 in flight when we "crash"
    s.close()
    s = store(file, ['up'])
    assert.deepEqual(s.claim('up', 10).map((x) => x.rowId), [3], 'in-flight row replayed, acked ones not')
    s.ack('up', [3])
    s.maintain()
    assert.equal(s.stats().depth, 0)
    s.close()
    s = store(file, ['up'])
    s.appendBatch([r('a', 4)])
    const [row] = s.claim('up', 10)
    assert.equal(row!.rowId, 4, 'row ids are never reused after deletion')
    assert.equal(row!.seq, 4, 'device sequence continues')
    s.close()
  } finally { cleanup() }
})

test('removed upstreams stop pinning rows; no upstream means nothing is kept', () => {
  const { dir, cleanup } = tempDir()
  const file = join(dir, 'o.db')
  try {
    let s = store(file, ['old', 'new'])
    s.appendBatch([r('a', 1)])
    s.ack('new', [1])
    s.close()
    s = store(file, ['new'])
    assert.equal(s.stats().depth, 0, 'only "new" counts now, and it acked')
    s.close()
    s = store(file, [])
    s.appendBatch([r('a', 2)])
    s.maintain()
    assert.equal(s.stats().depth, 0)
    s.close()
  } finally { cleanup() }
})

test('retention by bytes drops the oldest, counts and moves cursors', () => {
  const { dir, cleanup } = tempDir()
  try {
    const s = store(join(dir, 'o.db'), ['up'], { maxBytes: 2000 })
    for (let i = 0; i < 10; i++) s.appendBatch(Array.from({ length: 10 }, (_, k) => r('a', i * 10 + k)))
    const dropped = s.maintain()
    assert.equal(dropped.length, 1)
    assert.equal(dropped[0]!.reason, 'retention_bytes')
    const st = s.stats()
    assert.ok(st.bytes <= 2000, `bytes ${st.bytes} within limit`)
    assert.equal(st.drops.retention_bytes, dropped[0]!.rows)
    assert.equal(st.depth + dropped[0]!.rows, 100, 'every row is either kept or counted as dropped')
    const claimed = s.claim('up', 1000)
    assert.equal(claimed.length, st.depth)
    assert.equal(claimed[0]!.rowId, dropped[0]!.rows + 1, 'what is left is the newest, in order')
    s.close()
  } finally { cleanup() }
})

test('retention by age drops readings older than maxAge', () => {
  const { dir, cleanup } = tempDir()
  let now = 1_000_000
  try {
    const s = store(join(dir, 'o.db'), ['up'], { maxAgeMs: 10_000, now: () => now })
    s.appendBatch([r('a', 1), r('a', 2)])
    now += 5000
    s.appendBatch([r('a', 3)])
    now += 6000
    const dropped = s.maintain()
    assert.deepEqual(dropped.map((d) => [d.reason, d.rows]), [['retention_age', 2]])
    assert.deepEqual(s.claim('up', 10).map((x) => x.rowId), [3])
    s.close()
  } finally { cleanup() }
})

test('dead-lettered rows are kept with the reason and count as settled', () => {
  const { dir, cleanup } = tempDir()
  try {
    const s = store(join(dir, 'o.db'), ['up'])
    s.appendBatch([r('a', 1), r('a', 2)])
    s.claim('up', 10)
    s.deadLetter('up', 1, 'amqp:not-allowed')
    s.ack('up', [2])
    s.maintain()
    assert.equal(s.stats().depth, 0)
    assert.equal(s.stats().deadLettered, 1)
    s.close()
  } finally { cleanup() }
})

test('dead letters: listed with the reason (also read-only from another connection while the store is open)', () => {
  const { dir, cleanup } = tempDir()
  try {
    const file = join(dir, 'o.db')
    const s = store(file, ['up', 'other'])
    s.appendBatch([r('a', 1), r('b', 7), r('a', 2)])
    s.claim('up', 10)
    s.deadLetter('up', 2, 'rejected by the broker: amqp:not-allowed: no')
    s.deadLetter('up', 3, 'message of 9000 bytes exceeds max-message-size 1024')
    const listed = s.listDead()
    assert.deepEqual(listed.map((d) => [d.upstream, d.rowId, d.device, d.deviceSeq, d.msgId, d.reason]), [
      ['up', 2, 'b', 7, 'gw:b:1', 'rejected by the broker: amqp:not-allowed: no'],
      ['up', 3, 'a', 2, 'gw:a:2', 'message of 9000 bytes exceeds max-message-size 1024'],
    ])
    assert.equal(listed[0]!.payload, '{"v":7}')
    assert.deepEqual(readDeadLetters(file).map((d) => d.rowId), [2, 3], 'read-only reader sees the same rows')
    assert.deepEqual(readDeadLetters(file, 'other'), [])
    assert.equal(s.stats().upstreams.find((u) => u.upstream === 'other')!.lag, 3, 'the other upstream still has them')
    s.close()
  } finally { cleanup() }
})

test('dead-letter retry: flagged from another connection while the store runs, requeued by maintain with fresh ids', () => {
  const { dir, cleanup } = tempDir()
  try {
    const file = join(dir, 'o.db')
    const s = store(file, ['up'])
    s.appendBatch([r('a', 1), r('a', 2), r('b', 1)])
    s.claim('up', 10)
    s.deadLetter('up', 1, 'x')
    s.deadLetter('up', 3, 'y')
    s.ack('up', [2])
    s.maintain()
    assert.equal(s.stats().depth, 0)
    // The CLI only flags rows; the store keeps sole ownership of row ids even while it appends concurrently.
    assert.equal(requestDeadRetry(file, { ids: [3] }), 1)
    assert.equal(requestDeadRetry(file, { ids: [3] }), 0, 'already flagged')
    s.appendBatch([r('a', 3)]) // row 4
    s.maintain()
    assert.deepEqual(s.listDead().map((d) => d.rowId), [1], 'only the flagged one left the table')
    const again = s.claim('up', 10)
    assert.deepEqual(again.map((x) => [x.rowId, x.device, x.seq, x.msgId, x.deviceSeq]), [[4, 'a', 3, 'gw:a:3', 3], [5, 'b', 1, 'gw:b:1', 1]],
      'a new row id, the same device sequence and message id')
    assert.equal(s.stats().deadRequeued, 1)
    assert.equal(requestDeadRetry(file, { upstream: 'up' }), 1)
    s.close() // maintain at close requeues it too
    const s2 = store(file, ['up'])
    assert.deepEqual(s2.claim('up', 10).map((x) => [x.rowId, x.msgId]), [[4, 'gw:a:3'], [5, 'gw:b:1'], [6, 'gw:a:1']])
    assert.equal(s2.appendBatch([r('c', 1)]), 7, 'ids stay unique after a restart')
    s2.close()
  } finally { cleanup() }
})

test('outbox client on its worker thread: group commit, claim after append, close commits pending', async () => {
  const { dir, cleanup } = tempDir()
  const file = join(dir, 'o.db')
  const log = createLogger('silent')
  try {
    const c = new OutboxClient({ file, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e9, batchRows: 100, log })
    await c.start()
    const { statSync } = await import('node:fs')
    const emptySize = statSync(file).size
    const n = 1000
    const acks: Promise<void>[] = []
    for (let i = 0; i < n; i++) acks.push(new Promise((resolve, reject) => c.append(raw(`d${i % 7}`, `{"v":${i},"seq":${i}}`), (e) => (e ? reject(e) : resolve()))))
    await Promise.all(acks)
    const st = await c.stats()
    assert.equal(st.appended, n)
    assert.ok(st.commits < n / 10, `group commit: ${st.commits} commits for ${n} readings`)
    const rows = await c.claim('up', 2000)
    assert.equal(rows.length, n)
    assert.deepEqual(rows.map((x) => x.rowId), Array.from({ length: n }, (_, i) => i + 1))
    assert.deepEqual(rows.map((x) => x.deviceSeq), Array.from({ length: n }, (_, i) => i), 'decoded on the worker, in order')
    assert.equal(rows[5]!.payload, '{"v":5,"seq":5}')
    // a payload that does not decode is refused with a reason, not stored; raw bytes are stored as they came
    const refused = await new Promise<string | undefined>((resolve, reject) => c.append(raw('bad', '{"v":'), (e, why) => (e ? reject(e) : resolve(why))))
    assert.match(refused ?? '', /invalid JSON/)
    await new Promise<void>((resolve, reject) => c.append({ device: 'bin', link: 'test', payload: Uint8Array.from([1, 2, 3]) }, (e) => (e ? reject(e) : resolve())))
    const more = await c.claim('up', 10)
    assert.deepEqual(more.map((x) => [x.device, x.kind]), [['bin', 'raw']])
    assert.deepEqual([...(more[0]!.payload as Uint8Array)], [1, 2, 3])
    // The checkpointer thread moved the WAL into the database file (the writer itself never checkpoints).
    await waitFor('checkpoint', () => statSync(file).size > emptySize + 16 * 1024, 5000).catch(async (e: Error) => { await c.close(); throw e })
    // appends not yet flushed when close() is called are still committed
    c.append(raw('late', '{"v":1}'), () => undefined)
    await c.close()
    const s = store(file, ['up'])
    assert.equal(s.stats().depth, n + 2)
    s.close()
  } finally { cleanup() }
})

test('outbox client: readings settled through an owner by tag; device names survive the name table starting over', async () => {
  const { dir, cleanup } = tempDir()
  const file = join(dir, 'o.db')
  // A table of 3 names starts over every few batches; rows must still carry their own device and link.
  const c = new OutboxClient({ file, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e9, batchRows: 4, maxNames: 3, log: createLogger('silent') })
  try {
    await c.start()
    const settled: { tag: number; err: Error | null; refused?: string }[] = []
    const owner = { settled: (tag: number, err: Error | null, refused?: string) => { settled.push({ tag, err, refused }) } }
    const n = 40
    for (let i = 0; i < n; i++) {
      const reading = { device: `dev${i % 9}`, link: i % 2 ? 'serial' : 'mqtt', payload: Buffer.from(i === 7 ? '{"v":' : `{"v":${i}}`) }
      c.appendOwned(reading, owner, 1000 + i)
    }
    await waitFor('all settled', () => settled.length === n, 5000)
    assert.deepEqual(settled.map((s) => s.tag), Array.from({ length: n }, (_, i) => 1000 + i), 'settled in append order, each with its tag')
    assert.ok(settled.every((s) => s.err === null))
    assert.match(settled[7]!.refused ?? '', /invalid JSON/)
    assert.equal(settled.filter((s) => s.refused !== undefined).length, 1)
    const rows = await c.claim('up', 100)
    const expected = Array.from({ length: n }, (_, i) => i).filter((i) => i !== 7)
    assert.deepEqual(rows.map((r) => [r.device, r.link, r.payload]), expected.map((i) => [`dev${i % 9}`, i % 2 ? 'serial' : 'mqtt', `{"v":${i}}`]))
  } finally {
    await c.close()
    cleanup()
  }
})

test('outbox client reports each device\'s newest stored reading, coalesced, never a refused one', async () => {
  const { dir, cleanup } = tempDir()
  const log = createLogger('silent')
  const c = new OutboxClient({ file: join(dir, 'o.db'), gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e9, batchRows: 100, latestEveryMs: 50, log })
  try {
    await c.start()
    const seen: { device: string; seq: number | null; payload: string | null }[] = []
    c.onLatest((r) => seen.push({ device: r.device, seq: r.seq, payload: r.payload }))
    const put = (device: string, body: string): Promise<void> => new Promise((resolve, reject) => c.append(raw(device, body), (e) => (e ? reject(e) : resolve())))
    await Promise.all(Array.from({ length: 200 }, (_, i) => put(`d${i % 2}`, `{"t":${i},"seq":${i}}`)))
    await put('d0', '{"t":')
    await waitFor('latest values', () => seen.length >= 2, 5000)
    await pause(150)
    const last = new Map(seen.map((s) => [s.device, s]))
    assert.deepEqual(last.get('d0'), { device: 'd0', seq: 198, payload: '{"t":198,"seq":198}' })
    assert.deepEqual(last.get('d1'), { device: 'd1', seq: 199, payload: '{"t":199,"seq":199}' })
    assert.ok(seen.length < 20, `coalesced: ${seen.length} events for 200 readings`)
  } finally {
    await c.close()
    cleanup()
  }
})

test('priority lane: claimed first, released and re-claimed first, found again after a reopen; older databases gain the column', async () => {
  const { dir, cleanup } = tempDir()
  const file = join(dir, 'o.db')
  try {
    // A database from before the priority lane: readings without a prio column.
    const { openDatabase } = await import('../gateway/store/sqlite.ts')
    const old = openDatabase(file, { synchronous: 'FULL', autoCheckpoint: true })
    old.exec(`CREATE TABLE readings (id INTEGER PRIMARY KEY, device TEXT NOT NULL, seq INTEGER NOT NULL, dseq INTEGER,
      ts INTEGER NOT NULL, recv INTEGER NOT NULL, kind INTEGER NOT NULL, link TEXT NOT NULL, payload BLOB NOT NULL, bytes INTEGER NOT NULL)`)
    old.exec(`INSERT INTO readings VALUES (1, 'a', 1, NULL, ${Date.now()}, ${Date.now()}, 0, 'mqtt', '{"v":0}', 50)`)
    old.close()
    const s = store(file, ['up'])
    const mk = (device: string, v: number, priority = false): ReadingInput => ({ ...r(device, v), ...(priority ? { priority } : {}) })
    s.appendBatch([mk('a', 1), mk('a', 2), mk('b', 1, true), mk('a', 3), mk('b', 2, true)])
    const first = s.claim('up', 3)
    assert.deepEqual(first.map((x) => [x.rowId, x.priority]), [[4, true], [6, true], [1, false]])
    s.release('up')
    assert.deepEqual(s.claim('up', 2).map((x) => x.rowId), [4, 6], 'released: the lane goes first again')
    s.ack('up', [4])
    s.release('up', [6])
    assert.deepEqual(s.claim('up', 10).map((x) => x.rowId), [6, 1, 2, 3, 5])
    s.close()
    const again = store(file, ['up'])
    assert.deepEqual(again.claim('up', 2).map((x) => x.rowId), [4, 6], 'not acked durably above the cursor: resent, lane first')
    again.ack('up', [1, 2, 3, 4, 5, 6])
    assert.deepEqual(again.claim('up', 10), [])
    again.appendBatch([mk('c', 1), mk('c', 2, true)])
    assert.deepEqual(again.claim('up', 10).map((x) => x.rowId), [8, 7])
    again.close()
  } finally { cleanup() }
})

test('the checkpointer thread starts with the first write and leaves once the WAL stays checkpointed', async () => {
  const { dir, cleanup } = tempDir()
  const file = join(dir, 'o.db')
  const c = new OutboxClient({ file, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e9, batchRows: 100, checkpointIdleMs: 600, log: createLogger('silent') })
  const threads = (): number => (c as unknown as { checkpointer: unknown }).checkpointer ? 1 : 0
  try {
    await c.start()
    assert.equal(threads(), 0, 'no writes yet: no checkpointer')
    const { statSync } = await import('node:fs')
    const put = (i: number): Promise<void> => new Promise((resolve, reject) => c.append(raw('d', `{"v":${i},"pad":"${'x'.repeat(200)}"}`), (e) => (e ? reject(e) : resolve())))
    await Promise.all(Array.from({ length: 2000 }, (_, i) => put(i)))
    assert.equal(threads(), 1, 'started by the commit')
    const emptySize = 4096 * 2
    await waitFor('WAL copied into the database', () => statSync(file).size > emptySize + 200 * 1024, 5000)
    await waitFor('checkpointer gone when idle', () => threads() === 0, 5000)
    await put(1)
    assert.equal(threads(), 1, 'back with the next write')
    assert.equal((await c.stats()).depth, 2001)
  } finally {
    await c.close()
    cleanup()
  }
})
