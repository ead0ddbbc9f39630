// RefusalLog (gateway/log/refusals.ts): a refusal flood writes a bounded number of lines, with exact counts.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { pino, type Logger } from 'pino'
import { RefusalLog, OVERFLOW_KEY, type RefusalTimers } from '../gateway/log/refusals.ts'
import { ROOT } from './helpers/gateway.ts'
import { scaled } from './helpers/net.ts'

interface Line { level: number; msg: string; reason?: string; key?: string; count?: number; detail?: string; [k: string]: unknown }

/** A real pino logger writing JSON lines into memory. */
function memoryLogger(): { log: Logger; lines: Line[]; bytes: () => number } {
  const lines: Line[] = []
  let bytes = 0
  const log = pino({ base: null, timestamp: false }, { write(s: string) { bytes += Buffer.byteLength(s); lines.push(JSON.parse(s) as Line) } })
  return { log, lines, bytes: () => bytes }
}

/** Manual clock: timers run only when advance() passes their time. */
class FakeTimers implements RefusalTimers {
  t = 0
  private seq = 0
  private readonly pending = new Map<number, { at: number; fn: () => void }>()
  now(): number { return this.t }
  setTimeout(fn: () => void, ms: number): unknown { const id = ++this.seq; this.pending.set(id, { at: this.t + ms, fn }); return id }
  clearTimeout(h: unknown): void { this.pending.delete(h as number) }
  get armed(): number { return this.pending.size }
  advance(ms: number): void {
    const end = this.t + ms
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined
      for (const p of this.pending) if (p[1].at <= end && (!due || p[1].at < due[1].at)) due = p
      if (!due) break
      this.pending.delete(due[0])
      this.t = Math.max(this.t, due[1].at)
      due[1].fn()
    }
    this.t = end
  }
}

const firsts = (lines: Line[]): Line[] => lines.filter((l) => l.msg.startsWith('refused: '))
const summaries = (lines: Line[]): Line[] => lines.filter((l) => / more times: /.test(l.msg))
/** Refusals the lines account for: one per first line plus each summary's count. */
const accounted = (lines: Line[]): number => firsts(lines).length + summaries(lines).reduce((n, l) => n + (l.count ?? 0), 0)

test('100,000 refusals from one client over a minute: under 10 lines, counts exact', () => {
  const { log, lines, bytes } = memoryLogger()
  const timers = new FakeTimers()
  const r = new RefusalLog(log, { timers })
  for (let i = 0; i < 100_000; i++) {
    r.note('malformed_packet', 'flooder', `malformed packet: DUP flag set on a QoS 0 PUBLISH (MQTT-3.3.1-2) #${i}`, { clientId: 'flooder' })
    timers.advance(0.6) // 60 s in all
  }
  r.flush()
  assert.ok(lines.length < 10, `${lines.length} lines`)
  assert.ok(bytes() < 4096, `${bytes()} bytes`)
  assert.equal(accounted(lines), 100_000)
  // the first is today's line, unchanged
  assert.deepEqual(lines[0], { level: 40, reason: 'malformed_packet', clientId: 'flooder', msg: 'refused: malformed packet: DUP flag set on a QoS 0 PUBLISH (MQTT-3.3.1-2) #0' })
  const last = summaries(lines).at(-1)!
  assert.equal(last.level, 40)
  assert.equal(last.reason, 'malformed_packet')
  assert.equal(last.key, 'flooder')
  assert.match(last.msg, /^refused \d+ more times: malformed_packet$/)
  assert.match(last.detail!, /#99999$/) // the last detail
})

test('a burst within one window becomes exactly one summary line when the window ends', () => {
  const { log, lines } = memoryLogger()
  const timers = new FakeTimers()
  const r = new RefusalLog(log, { timers, windowMs: 10_000 })
  for (let i = 0; i < 100_000; i++) r.note('bad_credentials', '10.0.0.9', 'wrong secret', { device: 'd1' })
  assert.equal(lines.length, 1)
  timers.advance(9_999)
  assert.equal(lines.length, 1, 'nothing before the window ends')
  timers.advance(1)
  assert.equal(lines.length, 2)
  assert.deepEqual(lines[1], { level: 40, reason: 'bad_credentials', key: '10.0.0.9', count: 99_999, detail: 'wrong secret', msg: 'refused 99999 more times: bad_credentials' })
  timers.advance(60_000)
  assert.equal(lines.length, 2, 'a quiet window writes nothing')
  assert.equal(r.size, 0, 'and forgets the pair')
  assert.equal(timers.armed, 0, 'no timer left')
})

test('distinct keys, and distinct reasons of one key, each get their first line at once', () => {
  const { log, lines } = memoryLogger()
  const timers = new FakeTimers()
  const r = new RefusalLog(log, { timers })
  for (let round = 0; round < 3; round++) {
    for (let k = 0; k < 50; k++) r.note('acl_publish', `dev-${k}`, `publish by dev-${k} refused`, { clientId: `dev-${k}` })
  }
  r.note('bad_device_id', 'dev-0', 'telemetry for malformed device id', { clientId: 'dev-0' })
  assert.equal(firsts(lines).length, 51)
  assert.deepEqual(new Set(firsts(lines).map((l) => l.clientId)).size, 50)
  assert.equal(summaries(lines).length, 0)
  timers.advance(10_000)
  assert.equal(summaries(lines).length, 50)
  assert.ok(summaries(lines).every((l) => l.count === 2 && l.reason === 'acl_publish'))
  assert.equal(accounted(lines), 151)
})

test('window expiry: repeats after a summary go into the next one; after a quiet window the next refusal is logged at once', () => {
  const { log, lines } = memoryLogger()
  const timers = new FakeTimers()
  const r = new RefusalLog(log, { timers, windowMs: 10_000 })
  const note = (d: string): void => r.note('anonymous', 'c1', d, { clientId: 'c1' })
  note('a') // t=0: at once
  timers.advance(5_000); note('b') // counted
  timers.advance(5_000) // t=10s: summary (1)
  assert.deepEqual(lines.map((l) => l.msg), ['refused: a', 'refused 1 more times: anonymous'])
  timers.advance(2_000); note('c') // t=12s: inside the next window, counted
  assert.equal(lines.length, 2)
  timers.advance(8_000) // t=20s: summary (1, detail c)
  assert.equal(lines.at(-1)!.detail, 'c')
  timers.advance(10_000) // t=30s: quiet window, entry dropped
  assert.equal(lines.length, 3)
  assert.equal(r.size, 0)
  timers.advance(5_000); note('d') // t=35s: a new first line
  assert.deepEqual(lines.map((l) => l.msg), ['refused: a', 'refused 1 more times: anonymous', 'refused 1 more times: anonymous', 'refused: d'])
  assert.equal(accounted(lines), 4)
})

test('tracked pairs are capped: new keys beyond the cap share one entry, counts stay exact, memory returns', () => {
  const { log, lines } = memoryLogger()
  const timers = new FakeTimers()
  const r = new RefusalLog(log, { timers, maxTracked: 100 })
  let notes = 0
  for (let round = 0; round < 2; round++) {
    for (let k = 0; k < 10_000; k++) { r.note('malformed_packet', `10.1.${k >> 8}.${k & 255}`, `bad #${k}`, {}); notes++ }
    for (let k = 0; k < 1_000; k++) { r.note('anonymous', `anon-${k}`, `anon #${k}`, {}); notes++ }
  }
  assert.ok(r.size <= 100 + 2, `${r.size} entries`)
  // 100 tracked first lines, then one first line per reason for the overflow
  assert.equal(firsts(lines).length, 102)
  timers.advance(10_000)
  const over = summaries(lines).filter((l) => l.key === OVERFLOW_KEY)
  assert.deepEqual(over.map((l) => l.reason).sort(), ['anonymous', 'malformed_packet'])
  assert.equal(accounted(lines), notes)
  assert.ok(lines.length < 250, `${lines.length} lines`)
  timers.advance(10_000)
  assert.equal(r.size, 0)
  // with room again, a new key is tracked on its own
  r.note('anonymous', 'anon-new', 'x', { clientId: 'anon-new' })
  assert.equal(lines.at(-1)!.clientId, 'anon-new')
})

test('huge keys and details from the wire are clipped in memory (and huge keys sharing a prefix share an entry)', () => {
  const { log, lines } = memoryLogger()
  const timers = new FakeTimers()
  const r = new RefusalLog(log, { timers })
  const big = 'k'.repeat(65_000)
  r.note('bad_credentials', `${big}1`, 'd'.repeat(65_000), {})
  r.note('bad_credentials', `${big}2`, 'd'.repeat(65_000), {})
  assert.equal(r.size, 1)
  r.flush()
  const s = summaries(lines)[0]!
  assert.ok(s.key!.length <= 257 && s.detail!.length <= 513)
  assert.equal(s.count, 1)
})

test('flush writes pending summaries, cancels the timer, and is idempotent', () => {
  const { log, lines } = memoryLogger()
  const timers = new FakeTimers()
  const r = new RefusalLog(log, { timers })
  r.note('tls', 'a', 'x', {}); r.note('tls', 'a', 'y', {}); r.note('tls', 'b', 'z', {})
  r.flush()
  assert.deepEqual(summaries(lines).map((l) => [l.key, l.count, l.detail]), [['a', 1, 'y']])
  assert.equal(timers.armed, 0)
  r.flush()
  timers.advance(60_000)
  assert.equal(lines.length, 3)
  r.note('tls', 'a', 'w', {})
  assert.equal(lines.at(-1)!.msg, 'refused: w')
})

test('the real timer is unref\'d: a pending window does not keep the process alive', async () => {
  const code = [
    "import { pino } from 'pino'",
    "import { RefusalLog } from './gateway/log/refusals.ts'",
    'const r = new RefusalLog(pino({ level: "silent" }), { windowMs: 60_000 })',
    "r.note('x', 'k', 'one', {}); r.note('x', 'k', 'two', {})",
  ].join('\n')
  const started = Date.now()
  const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  p.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const exit = await new Promise<number | null>((resolve) => {
    const t = setTimeout(() => { p.kill('SIGKILL'); resolve(-1) }, scaled(30_000))
    p.once('exit', (c) => { clearTimeout(t); resolve(c) })
  })
  assert.equal(exit, 0, err)
  assert.ok(Date.now() - started < scaled(30_000))
})
