// The device journal without a gateway: the store's bounds and order, what each event records, the worker-backed
// client (batched writes, reads that include what is still buffered, persistence across a reopen), the metadata
// validation the device page uses, and the router's command-completed hook.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import pino from 'pino'
import { JournalStore } from '../gateway/journal/store.ts'
import { DeviceJournal } from '../gateway/journal/journal.ts'
import { DEFAULT_BOUNDS, boundedValue, commandEntry, presenceEntry, refusalEntry, MAX_VALUE_CHARS, type JournalEntry } from '../gateway/journal/entries.ts'
import { GatewayBus } from '../gateway/events.ts'
import { CommandRouter } from '../gateway/commands/router.ts'
import { checkMetadata, declaredCommands, SERIAL_COMMANDS } from '../gateway/dashboard/device-metadata.ts'
import { parseDevicePath } from '../gateway/dashboard/device-api.ts'
import { tempDir, pause } from './helpers/net.ts'

const log = pino({ level: 'silent' })
const presence = (device: string, online: boolean, at: number): JournalEntry => presenceEntry({ device, link: 'mqtt', clientId: device, reason: 'closed' }, online, at)

test('store: bounded per device and kind, newest first, other devices and kinds untouched', () => {
  const { dir, cleanup } = tempDir('edgeway-journal-')
  try {
    const s = new JournalStore(join(dir, 'journal.db'), { ...DEFAULT_BOUNDS, presence: 10, refusal: 3 })
    s.open()
    const batch: JournalEntry[] = []
    for (let i = 0; i < 25; i++) batch.push(presence('a', i % 2 === 0, 1000 + i))
    batch.push(presence('b', true, 5000))
    for (let i = 0; i < 5; i++) batch.push(refusalEntry({ reason: 'acl_publish', detail: `#${i}`, device: 'a' }, 2000 + i)!)
    assert.equal(s.write(batch), 31)
    const a = s.entries('a', 'presence')
    assert.equal(a.length, 10, 'cut to the bound')
    assert.deepEqual(a.map((e) => e.at), [1024, 1023, 1022, 1021, 1020, 1019, 1018, 1017, 1016, 1015], 'the newest kept, newest first')
    assert.ok(a.every((e, i) => i === 0 || e.id < a[i - 1]!.id), 'ids descend')
    assert.deepEqual(a[0]!.data, { online: true, link: 'mqtt', clientId: 'a' })
    assert.deepEqual(a[1]!.data, { online: false, link: 'mqtt', clientId: 'a', reason: 'closed' })
    assert.equal(s.entries('b', 'presence').length, 1)
    assert.deepEqual(s.entries('a', 'refusal').map((e) => e.data.detail), ['#4', '#3', '#2'])
    // Later batches keep the bound too, and the same timestamp keeps arrival order (id).
    s.write([presence('a', false, 9000), presence('a', true, 9000)])
    const again = s.entries('a', 'presence')
    assert.equal(again.length, 10)
    assert.deepEqual(again.slice(0, 2).map((e) => e.data.online), [true, false])
    assert.equal(s.count('a'), 13)
    s.close()
  } finally { cleanup() }
})

test('store: a repeated firmware version is recorded once; the last payload only moves forward', () => {
  const { dir, cleanup } = tempDir('edgeway-journal-')
  try {
    const s = new JournalStore(join(dir, 'journal.db'))
    s.open()
    const fw = (version: string, at: number): JournalEntry => ({ device: 'a', kind: 'firmware', at, data: { version, healthy: null } })
    s.write([fw('1.0', 1), fw('1.0', 2)])
    s.write([fw('1.0', 3), fw('1.1', 4), fw('1.0', 5)])
    assert.deepEqual(s.entries('a', 'firmware').map((e) => `${e.data.version}@${e.at}`), ['1.0@5', '1.1@4', '1.0@1'])
    s.write([], [{ device: 'a', at: 200, ts: 190, link: 'mqtt', seq: 7, payload: '{"t":2}' }])
    s.write([], [{ device: 'a', at: 100, ts: 90, link: 'mqtt', seq: 6, payload: '{"t":1}' }])
    assert.deepEqual(s.lastPayload('a'), { device: 'a', at: 200, ts: 190, link: 'mqtt', seq: 7, payload: '{"t":2}' })
    assert.equal(s.lastPayload('nobody'), null)
    s.close()
  } finally { cleanup() }
})

test('store: the whole file is bounded too (rows and devices), whatever the number of device names', () => {
  const { dir, cleanup } = tempDir('edgeway-journal-')
  try {
    const s = new JournalStore(join(dir, 'journal.db'), DEFAULT_BOUNDS, { maxRows: 50, maxDevices: 3 })
    s.open()
    for (let b = 0; b < 10; b++) {
      const batch: JournalEntry[] = []
      for (let i = 0; i < 20; i++) batch.push(presence(`anon-${b}-${i}`, true, b * 100 + i))
      s.write(batch, [{ device: `anon-${b}`, at: b, ts: b, link: 'mqtt', seq: null, payload: '{}' }])
    }
    assert.ok(s.count() <= 50, `rows kept: ${s.count()}`)
    assert.equal(s.entries('anon-9-19', 'presence').length, 1, 'the newest kept')
    assert.equal(s.entries('anon-0-0', 'presence').length, 0, 'the oldest gone')
    assert.deepEqual([0, 6, 7, 8, 9].map((b) => s.lastPayload(`anon-${b}`) !== null), [false, false, true, true, true])
    s.close()
  } finally { cleanup() }
})

test('entries: commands record outcome and latency; unknown devices and device-less refusals record nothing; big values are cut', () => {
  const ok = commandEntry({ args: { on: true }, result: { id: 'c1', device: 'd', name: 'led', ok: true, result: { led: 1 } }, latencyMs: 12.6 }, 5)
  assert.deepEqual(ok, { device: 'd', kind: 'command', at: 5, data: { id: 'c1', name: 'led', args: { on: true }, ok: true, result: { led: 1 }, latencyMs: 13 } })
  const failed = commandEntry({ args: null, result: { id: 'c2', device: 'd', name: 'x', ok: false, code: 'timeout', error: 'no result' }, latencyMs: 30000 }, 6)
  assert.deepEqual(failed?.data, { id: 'c2', name: 'x', args: null, ok: false, code: 'timeout', error: 'no result', latencyMs: 30000 })
  assert.equal(commandEntry({ args: null, result: { id: 'c3', device: 'ghost', name: 'x', ok: false, code: 'unknown_device', error: 'unknown' }, latencyMs: 0 }, 7), null)
  assert.equal(refusalEntry({ reason: 'bad_credentials', detail: 'x' }, 1), null)
  const big = boundedValue({ s: 'x'.repeat(5000) }) as { truncated: string }
  assert.equal(big.truncated.length, MAX_VALUE_CHARS)
  assert.ok(big.truncated.startsWith('{"s":"xxx'))
  assert.deepEqual(boundedValue([1, 2]), [1, 2])
})

test('client: bus events are journaled in batches off the main thread, reads include what is buffered, a reopen keeps it all', async () => {
  const { dir, cleanup } = tempDir('edgeway-journal-')
  const file = join(dir, 'journal.db')
  try {
    const bus = new GatewayBus()
    // A long flush interval: only a read (or close) can have written these.
    const j = new DeviceJournal({ file, dataDir: dir, flushMs: 60_000, payloadFlushMs: 60_000, log })
    await j.start()
    j.attach(bus)
    bus.safeEmit('deviceOnline', { device: 's1', link: 'mqtt', clientId: 's1' })
    bus.safeEmit('firmware', { device: 's1', version: '2.0', healthy: true })
    bus.safeEmit('firmware', { device: 's1', version: '2.0', healthy: true })
    bus.safeEmit('refusal', { reason: 'decode', detail: 'invalid JSON', device: 's1' })
    bus.safeEmit('refusal', { reason: 'bad_credentials', detail: 'no device' })
    bus.safeEmit('commandDone', { args: { ms: 100 }, result: { id: 'k1', device: 's1', name: 'setInterval', ok: true, result: 'ok' }, latencyMs: 4 })
    bus.safeEmit('deviceOffline', { device: 's1', link: 'mqtt', clientId: 's1', reason: 'keepalive timeout' })
    j.latest({ device: 's1', link: 'mqtt', ts: 1234, seq: 3, payload: '{"temperature":21.5}' })
    j.ota({ job: 1, device: 's1', version: '2.1', state: 'announced', offset: 0, size: 10, reason: null })
    j.ota({ job: 1, device: 's1', version: '2.1', state: 'downloading', offset: 4, size: 10, reason: null })
    j.ota({ job: 1, device: 's1', version: '2.1', state: 'downloading', offset: 8, size: 10, reason: null })
    assert.equal(j.pendingEntries, 8, 'buffered, not written one by one')
    const v = await j.read('s1')
    assert.equal(j.pendingEntries, 0)
    assert.deepEqual(v.entries.presence.map((e) => e.data), [
      { online: false, link: 'mqtt', clientId: 's1', reason: 'keepalive timeout' }, { online: true, link: 'mqtt', clientId: 's1' }])
    assert.deepEqual(v.entries.firmware.map((e) => e.data), [{ version: '2.0', healthy: true }])
    assert.deepEqual(v.entries.refusal.map((e) => e.data), [{ reason: 'decode', detail: 'invalid JSON' }])
    assert.deepEqual(v.entries.command.map((e) => [e.data.name, e.data.ok, e.data.result, e.data.latencyMs]), [['setInterval', true, 'ok', 4]])
    assert.deepEqual(v.entries.ota.map((e) => e.data.state), ['downloading', 'announced'], 'one entry per OTA state')
    assert.equal(v.lastPayload?.payload, '{"temperature":21.5}')
    assert.deepEqual(v.otaJobs, [], 'no ota.db yet')
    await j.close()
    bus.safeEmit('deviceOnline', { device: 's1', link: 'mqtt', clientId: 's1' })

    const again = new DeviceJournal({ file, dataDir: dir, log })
    await again.start()
    const w = await again.read('s1')
    assert.equal(w.entries.presence.length, 2, 'nothing recorded after close; everything before it kept')
    assert.equal(w.entries.command.length, 1)
    assert.deepEqual(w.lastPayload && { ts: w.lastPayload.ts, seq: w.lastPayload.seq, payload: w.lastPayload.payload }, { ts: 1234, seq: 3, payload: '{"temperature":21.5}' }, 'the in-memory payload was flushed at close')
    await again.close()
  } finally { cleanup() }
})

test('router: every result, routing errors included, reaches onDone with its latency', async () => {
  const done: { name: string; ok: boolean; code?: string; latencyMs: number; args: unknown }[] = []
  const r = new CommandRouter({ isKnown: (d) => d === 'd1', isOnline: () => true, send: async () => undefined })
  r.onDone((e) => done.push({ name: e.result.name, ok: e.result.ok, ...(e.result.ok ? {} : { code: e.result.code }), latencyMs: e.latencyMs, args: e.args }))
  const p = r.dispatch({ id: 'a', device: 'd1', name: 'led', args: { on: true } })
  await pause(20)
  r.handleResult('d1', 'led', '{"id":"a","result":1}')
  assert.deepEqual(await p, { id: 'a', device: 'd1', name: 'led', ok: true, result: 1 })
  await r.dispatch({ id: 'b', device: 'ghost', name: 'x', args: null })
  assert.deepEqual(done.map((d) => [d.name, d.ok, d.code]), [['led', true, undefined], ['x', false, 'unknown_device']])
  assert.ok(done[0]!.latencyMs >= 15, `latency ${done[0]!.latencyMs}`)
  assert.deepEqual(done[0]!.args, { on: true })
})

test('metadata: metrics must map to { unit, name }, commands must be declarations; anything else is free', () => {
  assert.deepEqual(checkMetadata({ room: 'lab', metrics: { temperature: { unit: '°C', name: 'Temperature' } } }), { ok: true, value: { room: 'lab', metrics: { temperature: { unit: '°C', name: 'Temperature' } } } })
  assert.match((checkMetadata({ metrics: { t: { unit: 5 } } }) as { error: string }).error, /^metrics\.t\.unit: /)
  assert.match((checkMetadata({ metrics: { t: { unit: 'C', colour: 'red' } } }) as { error: string }).error, /metrics\.t: .*colour/)
  assert.match((checkMetadata({ metrics: [] }) as { error: string }).error, /^metrics: /)
  assert.equal(checkMetadata([1]).ok, false)
  assert.equal(checkMetadata(null).ok, false)
  assert.match((checkMetadata({ big: 'x'.repeat(20000) }) as { error: string }).error, /limit is 16384/)
  assert.match((checkMetadata({ commands: [{ name: 'no/slash' }] }) as { error: string }).error, /^commands\.0\.name: /)
  assert.match((checkMetadata({ commands: [{ name: 'a' }, { name: 'a' }] }) as { error: string }).error, /declared twice/)
  const decl = { commands: [{ name: 'setLed', args: { on: { type: 'boolean', required: true } } }] }
  assert.equal(checkMetadata(decl).ok, true)
  assert.deepEqual(declaredCommands(decl, 'mqtt').map((c) => c.name), ['setLed'])
  assert.deepEqual(declaredCommands({}, 'serial'), SERIAL_COMMANDS)
  assert.deepEqual(declaredCommands({}, 'mqtt'), [])
})

test('device paths: ids are validated and decoded', () => {
  assert.deepEqual(parseDevicePath('/api/devices/sensor-1', '/api/devices/'), { id: 'sensor-1', action: [] })
  assert.deepEqual(parseDevicePath('/api/devices/sensor-1/ota/cancel', '/api/devices/'), { id: 'sensor-1', action: ['ota', 'cancel'] })
  assert.equal(parseDevicePath('/api/devices/..%2F..', '/api/devices/'), null)
  assert.equal(parseDevicePath('/api/devices/', '/api/devices/'), null)
  assert.equal(parseDevicePath('/api/devices/%E0%A4%A', '/api/devices/'), null)
})
