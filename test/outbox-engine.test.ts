// OutboxEngine on its own (issue 12): the outbox worker's message handler, in-process on a temp dir with the real
// protocol (gateway/outbox/protocol.ts): group-committed appends answered only after the commit, refusals by batch id
// and index, the name table, claim/ack/release/dead-letter, the priority lane, live views, and a kill -9 of the
// process holding the file (in a child process) keeping every unsettled row.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { OutboxEngine } from '../gateway/outbox/engine.ts'
import type { FromWorker, ToWorker, WorkerInit } from '../gateway/outbox/protocol.ts'
import type { ClaimedRow } from '../gateway/outbox/types.ts'
import { scaled, tempDir, waitFor } from './helpers/net.ts'

const tmp = tempDir('edgeway-engine-')
after(() => tmp.cleanup())
let files = 0
const newFile = (): string => join(tmp.dir, `o${++files}`, 'outbox.db')

interface In { device: string; link?: string; payload: string }

/** The broker side's half of the protocol (client.ts): names sent once as numbers, payloads packed in one buffer. */
class Batcher {
  private readonly names = new Map<string, number>()
  private id = 0
  append(readings: In[], opts: { reset?: boolean } = {}): Extract<ToWorker, { t: 'append' }> {
    if (opts.reset) this.names.clear()
    const fresh: string[] = []
    const num = (s: string): number => {
      let k = this.names.get(s)
      if (k === undefined) { k = this.names.size; this.names.set(s, k); fresh.push(s) }
      return k
    }
    const n = readings.length
    const bufs = readings.map((r) => Buffer.from(r.payload))
    const meta = new Uint32Array(3 * n)
    readings.forEach((r, i) => { meta[i] = bufs[i]!.length; meta[n + i] = num(r.device); meta[2 * n + i] = num(r.link ?? 'mqtt') })
    return { t: 'append', id: ++this.id, reset: opts.reset ?? false, names: fresh, meta, data: new Uint8Array(Buffer.concat(bufs)), receivedAt: Date.now() }
  }
  claim(upstream: string, limit: number): ToWorker { return { t: 'claim', id: ++this.id, upstream, limit } }
  stats(): ToWorker { return { t: 'stats', id: ++this.id } }
  close(): ToWorker { return { t: 'close', id: ++this.id } }
}

function openEngine(file: string, extra: Partial<WorkerInit> = {}) {
  const sent: FromWorker[] = []
  const init: WorkerInit = { file, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e12, maintenanceMs: 60_000, latestEveryMs: 0, ...extra }
  const engine = new OutboxEngine(init, (m) => sent.push(m))
  engine.open()
  const b = new Batcher()
  /** Hands one drain to the engine; returns what it answered. */
  const handle = (...msgs: ToWorker[]): FromWorker[] => { const from = sent.length; engine.handle(msgs); return sent.slice(from) }
  const claim = (limit: number, upstream = 'up'): ClaimedRow[] => {
    const out = handle(b.claim(upstream, limit)).find((m) => m.t === 'claimed')
    assert.ok(out && out.t === 'claimed', 'claimed')
    return out.rows
  }
  const close = (): void => { assert.deepEqual(handle(b.close()).map((m) => m.t), ['closed']) }
  return { engine, sent, b, handle, claim, close, ready: sent[0] }
}

const j = (device: string, v: number, link?: string): In => ({ device, payload: JSON.stringify({ v }), ...(link ? { link } : {}) })
const brief = (rows: ClaimedRow[]): string[] => rows.map((r) => `${r.rowId}:${r.msgId}`)

test('appends of one drain commit together and are answered after it; a claim in the same drain sees them', () => {
  const e = openEngine(newFile())
  assert.deepEqual(e.ready, { t: 'ready', lastRowId: 0, upstreams: ['up'] })
  const out = e.handle(e.b.append([j('a', 1), j('b', 1), j('a', 2)]), e.b.append([j('b', 2)]), e.b.claim('up', 10))
  assert.deepEqual(out.map((m) => m.t), ['appended', 'claimed'], 'the answer to the appends first, then the claim')
  const appended = out[0]!
  assert.ok(appended.t === 'appended')
  assert.deepEqual(appended.ids, [1, 2], 'both batches in one commit')
  assert.equal(appended.lastRowId, 4)
  assert.deepEqual(appended.refused, [])
  const claimed = out[1]!
  assert.ok(claimed.t === 'claimed')
  assert.deepEqual(brief(claimed.rows), ['1:gw:a:1', '2:gw:b:1', '3:gw:a:2', '4:gw:b:2'], 'row order, per-device sequences')
  assert.equal(claimed.rows[0]!.payload, '{"v":1}')
  assert.equal(claimed.rows[0]!.link, 'mqtt')
  e.close()
  assert.equal(e.engine.closed, true)
})

test('a payload that does not decode is refused by batch id and index and takes no row or sequence', () => {
  const e = openEngine(newFile())
  const out = e.handle(e.b.append([j('a', 1), { device: 'a', payload: '{"v":' }, j('b', 1)]), e.b.append([{ device: 'c', payload: '{}' }, j('a', 2)]))
  const m = out.find((x) => x.t === 'appended')
  assert.ok(m && m.t === 'appended')
  assert.deepEqual(m.refused.map((r) => [r.id, r.index, r.device]), [[1, 1, 'a'], [2, 0, 'c']])
  assert.match(m.refused[0]!.reason, /invalid JSON/)
  assert.equal(m.refused[1]!.reason, 'telemetry has no metrics')
  assert.equal(m.lastRowId, 3)
  // No gap: consumers deduplicating on message ids see a:1, a:2 (the refused one never had a sequence).
  assert.deepEqual(brief(e.claim(10)), ['1:gw:a:1', '2:gw:b:1', '3:gw:a:2'])
  e.close()
})

test('names: the table carries across messages and starts over on reset (a device is never stored under another\'s name)', () => {
  const e = openEngine(newFile())
  e.handle(e.b.append([j('a', 1, 'mqtt')]))
  e.handle(e.b.append([j('a', 2, 'mqtt'), j('b', 1, 'serial')]))
  const reset = e.b.append([j('c', 1, 'firmata'), j('a', 3, 'mqtt')], { reset: true })
  assert.deepEqual(reset.names, ['c', 'firmata', 'a', 'mqtt'], 'the new table is sent whole')
  e.handle(reset)
  assert.deepEqual(e.claim(10).map((r) => `${r.device}/${r.link}/${r.seq}`), ['a/mqtt/1', 'a/mqtt/2', 'b/serial/1', 'c/firmata/1', 'a/mqtt/3'])
  e.close()
})

test('claim, ack out of order, release, dead letter: nothing settled comes back, everything unsettled does, in row order', async () => {
  const e = openEngine(newFile())
  e.handle(e.b.append([1, 2, 3, 4, 5, 6].map((v) => j('a', v))))
  assert.deepEqual(e.claim(4).map((r) => r.rowId), [1, 2, 3, 4])
  e.handle({ t: 'ack', upstream: 'up', ids: [2] })
  assert.deepEqual(e.claim(10).map((r) => r.rowId), [5, 6], 'rows in flight are not claimed twice')
  assert.deepEqual(e.claim(10), [])
  e.handle({ t: 'release', upstream: 'up' })
  assert.deepEqual(e.claim(10).map((r) => r.rowId), [1, 3, 4, 5, 6], 'a link loss gives back all unsettled rows, not the acked one')
  e.handle({ t: 'ack', upstream: 'up', ids: [3, 1] }, { t: 'dead', upstream: 'up', id: 4, reason: 'rejected by the broker' }, { t: 'release', upstream: 'up', ids: [5] })
  assert.deepEqual(e.claim(10).map((r) => r.rowId), [5], 'a released row comes again; the one still in flight does not')
  const s = e.handle(e.b.stats()).find((m) => m.t === 'stats')
  assert.ok(s && s.t === 'stats')
  assert.deepEqual(s.stats.upstreams, [{ upstream: 'up', lag: 2, inflight: 2, ackedUpto: 4 }], 'acked through 4 (4 dead-lettered), 5 and 6 in flight')
  assert.equal(s.stats.deadLettered, 1)
  assert.equal(s.stats.depth, 6, 'nothing deleted before maintenance')
  e.close()
})

test('a claim for an unknown upstream fails with its request id; the engine carries on', () => {
  const e = openEngine(newFile())
  const claim = e.b.claim('nope', 5)
  const out = e.handle(claim, e.b.append([j('a', 1)]))
  const err = out.find((m) => m.t === 'error')
  assert.ok(err && err.t === 'error')
  assert.equal(err.id, (claim as { id: number }).id, 'the client can reject that request')
  assert.match(err.message, /claim: unknown upstream "nope"/)
  assert.ok(out.some((m) => m.t === 'appended'), 'the append of the same drain still committed')
  assert.equal(e.claim(5).length, 1)
  e.close()
})

test('priority lane: alarm metrics and priority devices are claimed first, each lane in row order', () => {
  const e = openEngine(newFile(), { priority: { metrics: ['alarm'], devices: ['vip'] } })
  e.handle(e.b.append([j('a', 1), j('a', 2), { device: 'a', payload: '{"alarm":1}' }, j('vip', 1), j('a', 3)]))
  const first = e.claim(2)
  assert.deepEqual(first.map((r) => [r.rowId, r.priority]), [[3, true], [4, true]])
  assert.deepEqual(e.claim(10).map((r) => [r.rowId, r.priority]), [[1, false], [2, false], [5, false]])
  e.close()
})

test('live views: each device\'s newest committed reading, at most every latestEveryMs, after the commit', async () => {
  const e = openEngine(newFile(), { latestEveryMs: 30 })
  e.handle(e.b.append([j('a', 1), j('b', 1), j('a', 2)]))
  const latest = await waitFor('latest', () => e.sent.find((m) => m.t === 'latest'), 2000)
  assert.ok(latest.t === 'latest')
  assert.deepEqual(latest.readings.map((r) => [r.device, r.payload]).sort(), [['a', '{"v":2}'], ['b', '{"v":1}']])
  e.close()
})

test('a kill -9 of the process holding the outbox: unsettled rows come back in order, ids and sequences go on', async () => {
  const file = newFile()
  // The child appends 5, claims them, acks 1 and 2, appends a 6th (its commit persists the cursor), says so, and is
  // killed before any close or maintenance: what the parent finds is what a crash leaves.
  const child = `
    import { OutboxEngine } from ${JSON.stringify(new URL('../gateway/outbox/engine.ts', import.meta.url).pathname)}
    const init = { file: ${JSON.stringify(file)}, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e12, maintenanceMs: 3600000, latestEveryMs: 0 }
    const e = new OutboxEngine(init, (m) => { if (m.t === 'appended' && m.lastRowId === 6) { process.stdout.write('committed\\n'); process.kill(process.pid, 'SIGKILL') } })
    e.open()
    const append = (id, vs) => {
      const data = Buffer.concat(vs.map((v) => Buffer.from(JSON.stringify({ v }))))
      const meta = new Uint32Array(vs.length * 3)
      vs.forEach((v, i) => { meta[i] = JSON.stringify({ v }).length; meta[vs.length + i] = 0; meta[2 * vs.length + i] = 1 })
      return { t: 'append', id, reset: id === 1, names: id === 1 ? ['a', 'mqtt'] : [], meta, data: new Uint8Array(data), receivedAt: Date.now() }
    }
    e.handle([append(1, [1, 2, 3, 4, 5]), { t: 'claim', id: 2, upstream: 'up', limit: 10 }])
    e.handle([{ t: 'ack', upstream: 'up', ids: [1, 2] }])
    e.handle([append(3, [6])])
  `
  const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  p.stdout.on('data', (d: Buffer) => { out += d.toString() })
  p.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const signal = await new Promise<NodeJS.Signals | null>((resolve) => p.once('exit', (_c, s) => resolve(s)))
  assert.equal(signal, 'SIGKILL', `the child was killed (stderr: ${err})`)
  assert.equal(out, 'committed\n')
  const e = openEngine(file)
  assert.deepEqual(e.ready, { t: 'ready', lastRowId: 6, upstreams: ['up'] }, 'every committed row is there')
  assert.deepEqual(brief(e.claim(10)), ['3:gw:a:3', '4:gw:a:4', '5:gw:a:5', '6:gw:a:6'], 'claimed-but-unacked rows come back; acked ones with a persisted cursor do not')
  const m = e.handle(e.b.append([j('a', 7)])).find((x) => x.t === 'appended')
  assert.ok(m && m.t === 'appended')
  assert.equal(m.lastRowId, 7, 'row ids are not reused')
  assert.deepEqual(brief(e.claim(10)), ['7:gw:a:7'], 'the device\'s sequence goes on')
  e.close()
  await new Promise((r) => setTimeout(r, scaled(10)))
})
