// LinkState on its own (issue 12): what every upstream connector relies on for its link: the status it reports, the
// listeners (the forwarder: a missed change leaves rows in flight on a dead link), exactly one reconnect per outage
// step (two would open two connections and send twice), the log lines per outage, and the attempt timeout it learns.
import { test, mock } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { LinkState, ATTEMPT_TIMEOUT_FLOOR_MS, ATTEMPT_TIMEOUT_FACTOR } from '../gateway/upstream/link-state.ts'

interface Line { level: number; msg: string; err?: string; retryInMs?: number; outageMs?: number; url?: string }

function harness(opts: { minMs?: number; maxMs?: number } = {}) {
  let t = 1_000_000
  const lines: Line[] = []
  const log = pino({ level: 'debug' }, { write: (l: string) => { lines.push(JSON.parse(l) as Line) } })
  // random 0.999999: each delay is its cap (backoff.ts), so the schedule is exact.
  const ls = new LinkState(log, { url: 'amqp://peer' }, opts.minMs ?? 100, opts.maxMs ?? 5000, { now: () => t, random: () => 0.999999 })
  return { ls, lines, advance: (ms: number) => { t += ms }, now: () => t }
}

test('status: starts down with no error; a copy is handed out; since follows the injected clock', () => {
  const h = harness()
  const s = h.ls.status()
  assert.deepEqual(s, { connected: false, since: h.now(), lastError: null })
  s.connected = true
  assert.equal(h.ls.connected, false, 'status() is a copy')
  h.advance(5000)
  h.ls.beginAttempt(10_000)
  h.ls.up()
  assert.deepEqual(h.ls.status(), { connected: true, since: h.now(), lastError: null })
  h.advance(300)
  h.ls.noteError('socket hang up')
  assert.equal(h.ls.status().since, h.now() - 300, 'an error alone does not move since')
  h.ls.down(() => undefined, true)
  assert.deepEqual(h.ls.status(), { connected: false, since: h.now(), lastError: 'socket hang up' }, 'the noted error is why it went down')
})

test('listeners hear every change and every emit; a failing one is logged and the others still run', () => {
  const h = harness()
  const heard: string[] = []
  h.ls.onChange(() => heard.push(`a:${h.ls.connected}`))
  h.ls.onChange(() => { throw new Error('listener broke') })
  h.ls.onChange(() => heard.push(`c:${h.ls.connected}`))
  h.ls.up()
  h.ls.emit() // a credit change: no state change, still heard
  h.ls.down(() => undefined, true)
  assert.deepEqual(heard, ['a:true', 'c:true', 'a:true', 'c:true', 'a:false', 'c:false'])
  const failures = h.lines.filter((l) => l.msg === 'upstream listener failed')
  assert.equal(failures.length, 3)
  assert.equal(failures[0]!.err, 'listener broke')
})

test('down: one reconnect per outage step, after the backoff delay; a second down before it replaces it; closing schedules none', (t) => {
  mock.timers.enable({ apis: ['setTimeout'] })
  t.after(() => mock.timers.reset())
  const h = harness({ minMs: 100 })
  let reconnects = 0
  const reconnect = (): void => { reconnects++ }
  h.ls.up()
  h.ls.down(reconnect, false)
  // 'error' and 'close' of one socket both report the loss: still one attempt.
  h.ls.down(reconnect, false)
  mock.timers.tick(5000)
  assert.equal(reconnects, 1, 'one reconnect for one outage step')
  h.ls.down(reconnect, false)
  h.ls.cancelRetry()
  mock.timers.tick(5000)
  assert.equal(reconnects, 1, 'cancelRetry stops the scheduled attempt')
  h.ls.down(reconnect, true)
  mock.timers.tick(60_000)
  assert.equal(reconnects, 1, 'closing: no attempt')
  assert.equal(h.ls.connected, false)
})

test('the first retry comes after minMs, the next ones grow to the ~1 s cap, and a new outage starts over', (t) => {
  mock.timers.enable({ apis: ['setTimeout'] })
  t.after(() => mock.timers.reset())
  const h = harness({ minMs: 100, maxMs: 5000 })
  const at: number[] = []
  let elapsed = 0
  const reconnect = (): void => { at.push(elapsed) }
  h.ls.up()
  for (let i = 0; i < 6; i++) {
    h.ls.down(reconnect, false)
    const delay = h.lines.at(-1)!.retryInMs!
    mock.timers.tick(delay - 1)
    assert.equal(at.length, i, `attempt ${i + 1} not before its delay (${delay} ms)`)
    mock.timers.tick(1)
    elapsed += delay
    h.advance(delay)
  }
  assert.deepEqual(h.lines.filter((l) => l.retryInMs !== undefined).map((l) => l.retryInMs), [100, 200, 400, 800, 1000, 1000])
  assert.ok(h.ls.outageMs() > 0)
  h.ls.up()
  assert.equal(h.ls.outageMs(), 0, 'no outage while up')
  h.ls.down(reconnect, false)
  assert.equal(h.lines.at(-1)!.retryInMs, 100, 'a new outage starts from minMs')
})

test('log lines: a live link going down is one warning; a failing connect one error, then debug until the link was up', () => {
  const h = harness()
  const noop = (): void => undefined
  h.ls.noteError('ECONNREFUSED')
  h.ls.down(noop, false)
  h.ls.down(noop, false)
  h.ls.down(noop, false)
  h.ls.cancelRetry()
  const levels = (): [number, string][] => h.lines.map((l) => [l.level, l.msg])
  assert.deepEqual(levels(), [
    [50, 'upstream connect failed: retrying with backoff, readings stay in the outbox'],
    [20, 'upstream connect failed again'],
    [20, 'upstream connect failed again'],
  ])
  assert.equal(h.lines[0]!.err, 'ECONNREFUSED')
  assert.equal(h.lines[0]!.url, 'amqp://peer', 'with the owner\'s fields')
  h.lines.length = 0
  h.ls.up()
  h.ls.down(noop, false)
  h.ls.cancelRetry()
  assert.deepEqual(levels(), [[40, 'upstream link down: readings stay in the outbox']])
  assert.equal(h.lines[0]!.err, 'connection closed', 'a drop without a noted error still says something')
})

test('attempt timeout: learned only from an attempt that reached up(); a failed attempt does not teach a bogus setup time', () => {
  const h = harness()
  assert.equal(h.ls.attemptTimeoutMs(10_000), 10_000, 'nothing learned yet')
  h.ls.beginAttempt(10_000)
  h.advance(300)
  h.ls.down(() => undefined, false)
  h.ls.cancelRetry()
  // Up long after, without an attempt of its own having begun (e.g. a reconnect the owner did not time): not learned.
  h.advance(60_000)
  h.ls.up()
  assert.equal(h.ls.attemptTimeoutMs(10_000), 10_000, 'the failed attempt\'s start was forgotten at down()')
  h.ls.down(() => undefined, false)
  h.ls.cancelRetry()
  h.ls.beginAttempt(10_000)
  h.advance(50)
  h.ls.up()
  assert.equal(h.ls.attemptTimeoutMs(10_000), Math.max(ATTEMPT_TIMEOUT_FLOOR_MS, ATTEMPT_TIMEOUT_FACTOR * 50))
  // Abandoned attempts double it; being up again starts the doubling over.
  h.ls.down(() => undefined, false); h.ls.cancelRetry()
  h.ls.beginAttempt(10_000); h.ls.attemptTimedOut('no CONNACK'); h.ls.down(() => undefined, false); h.ls.cancelRetry()
  assert.equal(h.ls.attemptTimeoutMs(10_000), 2 * ATTEMPT_TIMEOUT_FLOOR_MS)
  assert.equal(h.ls.lastError, 'no CONNACK')
  h.ls.beginAttempt(10_000); h.advance(100); h.ls.up()
  assert.equal(h.ls.attemptTimeoutMs(10_000), ATTEMPT_TIMEOUT_FLOOR_MS, 'doubling reset once up')
  assert.equal(h.ls.lastError, null, 'up clears the error')
})
