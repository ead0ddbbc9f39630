// The reconnect schedule (gateway/upstream/backoff.ts) and the attempt timeouts (link-state.ts), on an injected clock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { Backoff, SHORT_OUTAGE_CAP_MS, SHORT_OUTAGE_FOR_MS } from '../gateway/upstream/backoff.ts'
import { LinkState, ATTEMPT_TIMEOUT_FLOOR_MS } from '../gateway/upstream/link-state.ts'

/** A clock the test moves by hand. */
function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start
  return { now: () => t, advance: (ms) => { t += ms } }
}

/** Deterministic uniform numbers in [0, 1) (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Runs an outage of `forMs`: each delay is waited out on the clock (attempts themselves take no time). */
function outage(b: Backoff, c: ReturnType<typeof clock>, forMs: number): { at: number; delay: number }[] {
  const out: { at: number; delay: number }[] = []
  let elapsed = 0
  while (elapsed < forMs) {
    const delay = b.next()
    out.push({ at: elapsed, delay })
    c.advance(delay)
    elapsed += delay
  }
  return out
}

test('short outage: min, 2*min, ... capped at 1 s for the first 60 s, then doubling from the cap to reconnectMaxMs', () => {
  const c = clock()
  const b = new Backoff(500, 30000, { shortOutage: {}, now: c.now, random: () => 0.999999 })
  const steps = outage(b, c, 200_000)
  const young = steps.filter((s) => s.at < SHORT_OUTAGE_FOR_MS).map((s) => s.delay)
  assert.deepEqual(young.slice(0, 4), [500, 1000, 1000, 1000])
  assert.ok(young.every((d) => d <= SHORT_OUTAGE_CAP_MS), `young delays ${young.join(',')}`)
  const late = steps.filter((s) => s.at >= SHORT_OUTAGE_FOR_MS).map((s) => s.delay)
  assert.deepEqual(late.slice(0, 6), [2000, 4000, 8000, 16000, 30000, 30000])
})

test('jitter: every delay in [min/2, cap], spread out, and within 1 s while the outage is young (any random sequence)', () => {
  for (const seed of [1, 2, 3, 42, 4711]) {
    const c = clock()
    const b = new Backoff(500, 30000, { shortOutage: {}, now: c.now, random: seeded(seed) })
    const steps = outage(b, c, 200_000)
    for (const s of steps) {
      assert.ok(s.delay >= 250, `seed ${seed}: delay ${s.delay} at ${s.at} below min/2`)
      assert.ok(s.delay <= 30000, `seed ${seed}: delay ${s.delay} at ${s.at} above max`)
      if (s.at < SHORT_OUTAGE_FOR_MS) assert.ok(s.delay <= 1000, `seed ${seed}: delay ${s.delay} at ${s.at} ms into the outage`)
    }
    const young = steps.filter((s) => s.at < SHORT_OUTAGE_FOR_MS && s.at > 2000).map((s) => s.delay)
    assert.ok(new Set(young).size > young.length / 2, `seed ${seed}: jittered, not lockstep (${young.slice(0, 10).join(',')})`)
    // After a 10 s outage the peer is retried within 1 s of coming back: no gap between attempts is longer.
    const around = steps.filter((s) => s.at >= 5000 && s.at <= 15000)
    assert.ok(around.every((s) => s.delay <= 1000))
  }
})

test('reset (the link was up): the next outage starts over from min with a new young window', () => {
  const c = clock()
  const b = new Backoff(500, 30000, { shortOutage: {}, now: c.now, random: () => 0.999999 })
  outage(b, c, 150_000)
  assert.ok(b.next() >= 16000, 'deep into a long outage')
  assert.ok(b.outageMs() >= 150_000)
  b.reset()
  assert.equal(b.outageMs(), 0)
  c.advance(3_600_000)
  // The window is measured from the first delay of the new outage, not from the reset or construction.
  assert.deepEqual([b.next(), b.next(), b.next()], [500, 1000, 1000])
  c.advance(59_000)
  assert.equal(b.next(), 1000)
  c.advance(2000)
  assert.equal(b.next(), 2000)
})

test('the young cap respects minMs and maxMs', () => {
  const c = clock()
  const slow = new Backoff(5000, 10000, { shortOutage: {}, now: c.now, random: () => 0.999999 })
  assert.deepEqual(outage(slow, c, 50_000).map((s) => s.delay).slice(0, 4), [5000, 5000, 5000, 5000])
  const tight = new Backoff(100, 400, { shortOutage: {}, now: c.now, random: () => 0.999999 })
  assert.deepEqual(outage(tight, c, 2000).map((s) => s.delay).slice(0, 4), [100, 200, 400, 400])
  const custom = new Backoff(100, 30000, { shortOutage: { capMs: 300, forMs: 5000 }, now: c.now, random: () => 0.999999 })
  const steps = outage(custom, c, 20_000)
  assert.ok(steps.filter((s) => s.at < 5000).every((s) => s.delay <= 300))
  assert.deepEqual(steps.filter((s) => s.at >= 5000).map((s) => s.delay).slice(0, 3), [600, 1200, 2400])
})

test('without shortOutage the plain exponential schedule is unchanged (camera restarts, serial reopen)', () => {
  const hi = new Backoff(500, 30000, () => 0.999999)
  assert.deepEqual(Array.from({ length: 8 }, () => hi.next()), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000])
  const lo = new Backoff(500, 30000, { random: () => 0 })
  assert.deepEqual([lo.next(), lo.next()], [250, 250])
})

function linkState(c: ReturnType<typeof clock>): LinkState {
  return new LinkState(pino({ level: 'silent' }), {}, 500, 30000, { now: c.now, random: () => 0.999999 })
}

test('LinkState: reconnect delays restart from min once the link was up; capped while the outage is young', () => {
  const c = clock()
  // retryInMs is only logged: read it back from the log lines.
  const seen: number[] = []
  const spy = pino({ level: 'debug' }, { write: (line: string) => { const o = JSON.parse(line) as { retryInMs?: number }; if (o.retryInMs !== undefined) seen.push(o.retryInMs) } })
  const ls = new LinkState(spy, {}, 500, 30000, { now: c.now, random: () => 0.999999 })
  const retry = (): void => undefined
  const fail = (): void => { ls.beginAttempt(10000); ls.down(retry, false); ls.cancelRetry(); c.advance(seen.at(-1)!) }
  ls.beginAttempt(10000)
  ls.up()
  for (let i = 0; i < 40; i++) fail()
  assert.deepEqual(seen.slice(0, 3), [500, 1000, 1000])
  assert.ok(seen.every((d) => d <= 1000), seen.join(','))
  assert.ok(ls.outageMs() >= 30000)
  ls.beginAttempt(10000)
  ls.up()
  assert.equal(ls.outageMs(), 0)
  fail()
  assert.equal(seen.at(-1), 500, 'a new outage starts over from min')
})

test('LinkState: attempt timeout is the configured one until a setup succeeded, then learned, doubling per abandoned attempt', () => {
  const c = clock()
  const ls = linkState(c)
  assert.equal(ls.beginAttempt(10000), 10000, 'nothing learned yet')
  c.advance(40)
  ls.up()
  // A 40 ms setup: abandoned after the floor.
  ls.down(() => undefined, false); ls.cancelRetry()
  assert.equal(ls.beginAttempt(10000), ATTEMPT_TIMEOUT_FLOOR_MS)
  ls.attemptTimedOut('hung'); ls.down(() => undefined, false); ls.cancelRetry()
  assert.equal(ls.lastError, 'hung')
  assert.equal(ls.beginAttempt(10000), 2 * ATTEMPT_TIMEOUT_FLOOR_MS)
  // A refused attempt does not make the next one longer.
  ls.noteError('ECONNREFUSED'); ls.down(() => undefined, false); ls.cancelRetry()
  assert.equal(ls.beginAttempt(10000), 2 * ATTEMPT_TIMEOUT_FLOOR_MS)
  ls.attemptTimedOut('hung'); ls.down(() => undefined, false); ls.cancelRetry()
  assert.equal(ls.beginAttempt(10000), 4 * ATTEMPT_TIMEOUT_FLOOR_MS)
  ls.attemptTimedOut('hung'); ls.down(() => undefined, false); ls.cancelRetry()
  assert.equal(ls.beginAttempt(10000), 10000, 'never more than the configured timeout')
  // Up again after a slow (700 ms) setup: the timeout is learned anew, 10 x that.
  c.advance(700)
  ls.up()
  ls.down(() => undefined, false); ls.cancelRetry()
  assert.equal(ls.beginAttempt(10000), 7000)
  assert.equal(ls.beginAttempt(3000), 3000, 'a smaller configured timeout still bounds it')
})
