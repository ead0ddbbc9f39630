// The history store with a temp dir: rollup math, raw vs rollup range selection, pruning by age and by bytes, the
// series bound, CSV export, restart catch-up from the outbox, and the API's parameter checks (pure parsing).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { HistoryStore, csvHeader, csvCell } from '../gateway/history/store.ts'
import { HistoryEngine } from '../gateway/history/engine.ts'
import { addToBucket, bucketMinutes, chooseTier, mergeBuckets, minuteOf, numericMetrics, MINUTE_MS } from '../gateway/history/rollup.ts'
import { parsePath, parseRange, metricMeta } from '../gateway/history/api.ts'
import { OutboxStore } from '../gateway/outbox/store.ts'
import { tempDir } from './helpers/net.ts'

const T0 = Date.UTC(2026, 10, 1, 12, 0, 0)

function open(dir: string, clock: { now: number }, over: Partial<ConstructorParameters<typeof HistoryStore>[0]> = {}): HistoryStore {
  const s = new HistoryStore({ file: join(dir, 'history.db'), rawHours: 48, rollupDays: 90, maxBytes: 64 * 1024 * 1024, maxMetricsPerDevice: 8, maxSeries: 100, now: () => clock.now, ...over })
  s.open()
  return s
}

test('rollup math: buckets merge exactly, numeric metrics only, bucket widths', () => {
  let b = addToBucket(undefined, 5)
  for (const v of [1, 9, 3]) b = addToBucket(b, v)
  assert.deepEqual(b, { min: 1, max: 9, sum: 18, count: 4 })
  assert.deepEqual(mergeBuckets(b, { min: -2, max: 4, sum: 2, count: 2 }), { min: -2, max: 9, sum: 20, count: 6 })
  assert.deepEqual(numericMetrics('{"t":21.5,"ok":true,"s":"x","ts":1,"seq":2,"h":40}'), [['t', 21.5], ['h', 40]])
  assert.deepEqual(numericMetrics('not json'), [])
  assert.equal(minuteOf(T0 + 59_999), minuteOf(T0))
  assert.equal(bucketMinutes(0, 30 * 86400_000, 1000), 44)   // 43,200 minutes into <= 1000 buckets
  assert.equal(bucketMinutes(0, 3600_000, 1000), 1)
  assert.equal(chooseTier({ from: T0 - 49 * 3600_000, now: T0, rawWindowMs: 48 * 3600_000, points: 10 }, () => assert.fail('no count needed')), 'rollup')
  assert.equal(chooseTier({ from: T0 - 3600_000, now: T0, rawWindowMs: 48 * 3600_000, points: 10 }, () => 10), 'raw')
  assert.equal(chooseTier({ from: T0 - 3600_000, now: T0, rawWindowMs: 48 * 3600_000, points: 10 }, () => 11), 'rollup')
})

test('store: raw points within the window, rollups min/avg/max otherwise; survives a reopen', () => {
  const { dir, cleanup } = tempDir('edgeway-hist-')
  try {
    const clock = { now: T0 }
    let s = open(dir, clock)
    // 3 readings per minute for 10 minutes, values 0..29
    for (let i = 0; i < 30; i++) s.ingest('dev-1', T0 - 10 * MINUTE_MS + i * 20_000, JSON.stringify({ temp: i, label: 'x' }), i + 1)
    s.commit()
    assert.equal(s.totals.points, 30)
    const raw = s.range('dev-1', 'temp', T0 - 10 * MINUTE_MS, T0, 100)
    assert.ok(raw && raw.tier === 'raw')
    assert.equal(raw.t.length, 30)
    assert.deepEqual(raw.v.slice(0, 3), [0, 1, 2])
    // too many for 10 points: rollups, 1-minute buckets
    const r = s.range('dev-1', 'temp', T0 - 10 * MINUTE_MS, T0, 20)
    assert.ok(r && r.tier === 'rollup')
    assert.equal(r.bucketMs, MINUTE_MS)
    assert.deepEqual(r.min.slice(0, 2), [0, 3])
    assert.deepEqual(r.max.slice(0, 2), [2, 5])
    assert.deepEqual(r.avg.slice(0, 2), [1, 4])
    assert.deepEqual(r.n.slice(0, 2), [3, 3])
    // 5-minute buckets: min/avg/max over 15 points each
    const r5 = s.range('dev-1', 'temp', T0 - 10 * MINUTE_MS, T0 - 1, 2)
    assert.ok(r5 && r5.tier === 'rollup')
    assert.equal(r5.bucketMs, 5 * MINUTE_MS)
    assert.deepEqual([r5.min[0], r5.avg[0], r5.max[0], r5.n[0]], [0, 7, 14, 15])
    assert.equal(s.range('dev-1', 'label', T0 - MINUTE_MS, T0, 10), null, 'strings are not history')
    s.close()
    // Reopen: same data, the position kept, more points merge into the same rollup bucket.
    s = open(dir, clock)
    assert.equal(s.lastRow, 30)
    s.ingest('dev-1', T0 - 10 * MINUTE_MS + 1000, JSON.stringify({ temp: -5 }), 31)
    const merged = s.range('dev-1', 'temp', T0 - 10 * MINUTE_MS, T0, 20)
    assert.ok(merged && merged.tier === 'rollup')
    assert.deepEqual([merged.min[0], merged.max[0], merged.n[0]], [-5, 2, 4])
    const list = s.series('dev-1')
    assert.deepEqual(list.map((x) => x.metric), ['temp'])
    assert.equal(list[0]!.firstTs, T0 - 10 * MINUTE_MS)
    assert.equal(list[0]!.lastTs, T0 - 10 * MINUTE_MS + 29 * 20_000)
    // A range that starts before the raw window is answered from rollups even when small.
    clock.now = T0 + 47 * 3600_000
    const old = s.range('dev-1', 'temp', T0 - 2 * 3600_000, clock.now, 10_000)
    assert.ok(old && old.tier === 'rollup')
    s.close()
  } finally { cleanup() }
})

test('store: pruning by age (raw after rawHours, rollups after rollupDays), counted', () => {
  const { dir, cleanup } = tempDir('edgeway-hist-')
  try {
    const clock = { now: T0 }
    const s = open(dir, clock, { rawHours: 1, rollupDays: 1 })
    for (let i = 0; i < 120; i++) s.ingest('d', T0 - 50 * MINUTE_MS + i * 10_000, `{"v":${i}}`)
    s.commit()
    clock.now = T0 + 20 * MINUTE_MS   // points older than T0 - 40 min fall out of the raw tier
    const p1 = s.prune()
    assert.equal(p1.raw.age, 60, 'the first 10 minutes of points (6 a minute) went')
    assert.equal(p1.rollup.age, 0)
    const left = s.range('d', 'v', T0 - 40 * MINUTE_MS, clock.now, 10_000)
    assert.ok(left && left.tier === 'raw' && left.t.length === 60 && left.t[0] === T0 - 40 * MINUTE_MS, JSON.stringify(left?.t.slice(0, 2)))
    clock.now = T0 + 25 * 3600_000
    const p2 = s.prune()
    assert.equal(p2.raw.age, 60)
    assert.equal(p2.rollup.age, 20, 'every 1-minute bucket is past rollupDays')
    assert.equal(s.totals.pruned.raw.age, 120)
    assert.deepEqual(s.series('d'), [], 'an empty series that stopped reporting is forgotten')
    s.close()
  } finally { cleanup() }
})

test('store: bounded by bytes, oldest first (raw tier first), counted', () => {
  const { dir, cleanup } = tempDir('edgeway-hist-')
  try {
    const clock = { now: T0 }
    const maxBytes = 1024 * 1024
    const s = open(dir, clock, { maxBytes })
    // ~80k points at 1 s spacing, 4 metrics: several MiB raw, far over the bound
    const start = T0 - 6 * 3600_000
    for (let i = 0; i < 20_000; i++) s.ingest('d', start + i * 1000, `{"a":${i},"b":${i % 7},"c":${i % 100},"e":1.5}`)
    s.commit()
    assert.ok(s.usedBytes() > maxBytes, `filled to ${s.usedBytes()}`)
    const p = s.prune()
    assert.ok(p.raw.bytes > 0, 'raw points were pruned for bytes')
    assert.ok(s.usedBytes() <= maxBytes, `used ${s.usedBytes()} <= ${maxBytes}`)
    const kept = s.range('d', 'a', start, T0, 10_000)
    assert.ok(kept)
    // what is left of the raw tier is the newest part: the oldest raw point is later than the start
    const raw = s.range('d', 'a', T0 - 30 * MINUTE_MS, T0, 10_000)
    assert.ok(raw && raw.tier === 'raw' && raw.t.length > 0 && raw.t.at(-1) === start + 19_999 * 1000)
    const first = s.series('d').find((x) => x.metric === 'a')!.firstTs!
    assert.equal(first, minuteOf(start) * MINUTE_MS, 'rollups still cover the oldest minutes')
    assert.equal(s.totals.pruned.raw.bytes, p.raw.bytes)
    s.close()
  } finally { cleanup() }
})

test('store: series bound per device and overall; refusals counted', () => {
  const { dir, cleanup } = tempDir('edgeway-hist-')
  try {
    const clock = { now: T0 }
    const s = open(dir, clock, { maxMetricsPerDevice: 3, maxSeries: 5 })
    const many = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`m${i}`, i]))
    assert.equal(s.ingest('a', T0, JSON.stringify(many)), 3)
    assert.equal(s.totals.refused, 7)
    assert.equal(s.ingest('b', T0, JSON.stringify(many)), 2, 'only 5 series overall')
    assert.equal(s.totals.refused, 15)
    assert.deepEqual([...s.refusedDevices].sort(), ['a', 'b'])
    assert.equal(s.ingest('a', T0 + 1, '{"m0":1,"m1":2}'), 2, 'known series still record')
    s.commit()
    assert.equal(s.series('a').length, 3)
    s.close()
  } finally { cleanup() }
})

test('store: CSV plan and rows, raw and rollup, with a defused header', () => {
  const { dir, cleanup } = tempDir('edgeway-hist-')
  try {
    const clock = { now: T0 }
    const s = open(dir, clock)
    s.ingest('d', T0 - 2000, '{"temp":20,"=evil":1}')
    s.ingest('d', T0 - 1000, '{"temp":21}')
    const plan = s.csvPlan('d', T0 - MINUTE_MS, T0)
    assert.equal(plan.tier, 'raw')
    assert.equal(plan.count, 3)
    assert.equal(csvHeader(plan), "time,ts_ms,'=evil,temp\n")
    assert.equal(s.csvRows(plan, plan.from, plan.to + 1),
      `${new Date(T0 - 2000).toISOString()},${T0 - 2000},1,20\n${new Date(T0 - 1000).toISOString()},${T0 - 1000},,21\n`)
    clock.now = T0 + 72 * 3600_000
    const rp = s.csvPlan('d', T0 - 3600_000, clock.now)
    assert.equal(rp.tier, 'rollup')
    assert.equal(csvHeader(rp), "time,ts_ms,'=evil_min,'=evil_avg,'=evil_max,temp_min,temp_avg,temp_max\n")
    const m = minuteOf(T0 - 2000) * MINUTE_MS
    assert.equal(s.csvRows(rp, rp.from, rp.to + 1), `${new Date(m).toISOString()},${m},1,1,1,20,20.5,21\n`)
    assert.equal(csvCell('a,"b"'), '"a,""b"""')
    s.close()
  } finally { cleanup() }
})

test('engine: catches up from outbox rows past its position, skips rows it has, follows a new outbox', async () => {
  const { dir, cleanup } = tempDir('edgeway-hist-')
  try {
    const outboxFile = join(dir, 'outbox.db')
    const ob = new OutboxStore({ file: outboxFile, gatewayId: 'gw', upstreams: ['cloud'], maxBytes: 1e9, maxAgeMs: 1e9 })
    ob.open()
    const row = (v: number): { device: string; ts: number; deviceSeq: null; kind: 'json'; payload: string; link: string } =>
      ({ device: 'd', ts: Date.now() - 1000 + v, deviceSeq: null, kind: 'json', payload: `{"v":${v}}`, link: 'mqtt' })
    ob.appendBatch([row(1), row(2), row(3)])
    const init = { file: join(dir, 'history.db'), outboxFile, rawHours: 48, rollupDays: 90, maxBytes: 64e6, maxMetricsPerDevice: 8, maxSeries: 100, commitMs: 1000, pruneMs: 60000 }
    let e = new HistoryEngine(init)
    e.open()
    assert.equal(e.catchUp(), 3)
    // the tap then brings rows 2 and 3 as well (committed while the catch-up read): not counted twice
    e.onBatch({ t: 'rows', names: ['d'], dev: Uint32Array.from([0, 0]), ts: Float64Array.from([Date.now(), Date.now()]), ids: Float64Array.from([2, 3]), text: ['{"v":2}', '{"v":3}'].join('\0') })
    e.store.commit()
    assert.equal(e.store.totals.points, 3)
    e.close()
    ob.appendBatch([row(4)])   // committed while history was down (or a crash between the two commits)
    e = new HistoryEngine(init)
    e.open()
    assert.equal(e.store.lastRow, 3)
    assert.equal(e.catchUp(), 1)
    const r = e.store.range('d', 'v', Date.now() - 3600_000, Date.now() + 1000, 100)
    assert.ok(r && r.tier === 'raw')
    assert.deepEqual(r.v, [1, 2, 3, 4])
    e.close()
    // A new outbox (file deleted) numbers rows from 1 again: history follows it instead of skipping its rows.
    ob.close()
    const { rmSync } = await import('node:fs')
    for (const f of ['', '-wal', '-shm']) rmSync(outboxFile + f, { force: true })
    const ob2 = new OutboxStore({ file: outboxFile, gatewayId: 'gw', upstreams: ['cloud'], maxBytes: 1e9, maxAgeMs: 1e9 })
    ob2.open()
    ob2.appendBatch([row(7)])
    e = new HistoryEngine(init)
    e.open()
    assert.equal(e.catchUp(), 1)
    e.onBatch({ t: 'rows', names: ['d'], dev: Uint32Array.from([0]), ts: Float64Array.from([Date.now()]), ids: Float64Array.from([2]), text: '{"v":8}' })
    e.store.commit()
    assert.deepEqual(e.store.range('d', 'v', Date.now() - 3600_000, Date.now() + 1000, 100)?.t.length, 6)
    e.close()
    ob2.close()
  } finally { cleanup() }
})

test('api parameters: precise 400s, defaults, units from metadata', () => {
  const now = T0
  assert.deepEqual(parsePath('/api/history/dev-1'), { ok: true, value: { kind: 'metrics', device: 'dev-1' } })
  assert.deepEqual(parsePath('/api/history/dev-1.csv'), { ok: true, value: { kind: 'csv', device: 'dev-1' } })
  assert.deepEqual(parsePath('/api/history/dev-1/temp%20in'), { ok: true, value: { kind: 'range', device: 'dev-1', metric: 'temp in' } })
  const bad = parsePath('/api/history/bad%20id')
  assert.ok(!bad.ok && bad.status === 400 && /invalid device id "bad id"/.test(bad.error))
  assert.ok(!parsePath('/api/history/a/b/c').ok)
  assert.deepEqual(parseRange(new URLSearchParams(''), ['from', 'to', 'points'], now), { ok: true, value: { from: now - 86400_000, to: now, points: 1000 } })
  const cases: [string, RegExp][] = [
    ['from=abc', /"from" must be a time in ms since the epoch/],
    ['from=10&to=5', /"from" \(10\) must be before "to" \(5\)/],
    ['points=0', /"points" must be an integer from 1 to 10000, got "0"/],
    ['points=10001', /from 1 to 10000/],
    ['foo=1', /unknown parameter "foo": use from, to, points/],
    ['to=1&to=2', /given more than once/],
  ]
  for (const [q, re] of cases) {
    const r = parseRange(new URLSearchParams(q), ['from', 'to', 'points'], now)
    assert.ok(!r.ok && r.status === 400 && re.test(r.error), `${q}: ${JSON.stringify(r)}`)
  }
  const csv = parseRange(new URLSearchParams('points=5'), ['from', 'to'], now)
  assert.ok(!csv.ok && /unknown parameter "points": use from, to/.test(csv.error))
  assert.deepEqual(metricMeta({ metrics: { temp: { unit: '°C', name: 'Temperature' } } }, 'temp'), { unit: '°C', name: 'Temperature' })
  assert.deepEqual(metricMeta({ metrics: { temp: 'nope' } }, 'temp'), { unit: null, name: null })
  assert.deepEqual(metricMeta(undefined, 'temp'), { unit: null, name: null })
})
