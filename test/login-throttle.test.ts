// The shared login throttle (gateway/security/login-throttle.ts): attempts are counted when they begin, so parallel
// attempts cannot all be checked; lockouts refuse even the right password and double; memory is bounded without wipes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { LoginThrottle, type LoginAttempt } from '../gateway/security/login-throttle.ts'

function clock(): { now: () => number; t: number } {
  const c = { t: 1_000_000, now: () => c.t }
  return c
}

function settle(a: LoginAttempt, success: boolean): void {
  assert.ok(a.ok, 'attempt was allowed')
  a.settle(success)
}

test('budget: five failed attempts, then the sixth is refused and starts a lockout; other keys are unaffected', () => {
  const c = clock()
  const t = new LoginThrottle({ now: c.now })
  for (let i = 0; i < 5; i++) settle(t.begin(['addr:a']), false)
  const r = t.begin(['addr:a'])
  assert.ok(!r.ok)
  assert.equal(r.retryAfterMs, 30_000)
  assert.equal(r.newLockout, true)
  assert.deepEqual(r.lockedKeys, ['addr:a'])
  const again = t.begin(['addr:a'])
  assert.ok(!again.ok && again.newLockout === false, 'one lockout start, then plain refusals')
  assert.equal(t.begin(['addr:b']).ok, true)
})

test('parallel: begin() counts before the hash is checked, so of 40 concurrent attempts only the budget get through', () => {
  const c = clock()
  const t = new LoginThrottle({ now: c.now })
  const attempts = Array.from({ length: 40 }, () => t.begin(['addr:a']))
  assert.equal(attempts.filter((a) => a.ok).length, 5)
  assert.equal(attempts.filter((a) => !a.ok && a.newLockout).length, 1)
  // Settling the failures afterwards changes nothing: they were counted already.
  for (const a of attempts) if (a.ok) a.settle(false)
  assert.equal(t.begin(['addr:a']).ok, false)
})

test('an attempt counts against every key: a device id is throttled across addresses', () => {
  const c = clock()
  const t = new LoginThrottle({ budget: 3, now: c.now })
  for (let i = 0; i < 3; i++) settle(t.begin([`addr:10.0.0.${i}`, 'id:sensor-1']), false)
  const r = t.begin(['addr:10.0.0.9', 'id:sensor-1'])
  assert.ok(!r.ok)
  assert.deepEqual(r.lockedKeys, ['id:sensor-1'])
  assert.equal(t.begin(['addr:10.0.0.9', 'id:sensor-2']).ok, true, 'the fresh address itself was not counted by the refusal')
})

test('success resets the count; settle is idempotent', () => {
  const c = clock()
  const t = new LoginThrottle({ now: c.now })
  for (let i = 0; i < 4; i++) settle(t.begin(['addr:a']), false)
  const ok = t.begin(['addr:a'])
  settle(ok, true)
  assert.ok(ok.ok)
  ok.settle(false)
  for (let i = 0; i < 5; i++) settle(t.begin(['addr:a']), false)
  assert.equal(t.begin(['addr:a']).ok, false)
})

test('lockout refuses the right password until it ends, with the time left', () => {
  const c = clock()
  const t = new LoginThrottle({ now: c.now })
  for (let i = 0; i < 5; i++) settle(t.begin(['addr:a']), false)
  assert.equal(t.begin(['addr:a']).ok, false)
  c.t += 20_000
  const r = t.begin(['addr:a'])
  assert.ok(!r.ok)
  assert.equal(r.retryAfterMs, 10_000)
  c.t += 10_000
  const right = t.begin(['addr:a'])
  assert.ok(right.ok, 'the lockout is over')
  right.settle(true)
  for (let i = 0; i < 5; i++) settle(t.begin(['addr:a']), false)
  const r2 = t.begin(['addr:a'])
  assert.ok(!r2.ok && r2.retryAfterMs === 30_000, 'a success forgot the earlier lockouts too')
})

test('backoff: each further lockout doubles, up to the cap; after a lockout one attempt is allowed, not a fresh budget', () => {
  const c = clock()
  const t = new LoginThrottle({ baseLockMs: 1000, maxLockMs: 5000, windowMs: 60_000, now: c.now })
  for (let i = 0; i < 5; i++) settle(t.begin(['k']), false)
  const seen: number[] = []
  for (let round = 0; round < 5; round++) {
    const r = t.begin(['k'])
    assert.ok(!r.ok && r.newLockout)
    seen.push(r.retryAfterMs)
    c.t += r.retryAfterMs
    settle(t.begin(['k']), false)
  }
  assert.deepEqual(seen, [1000, 2000, 4000, 5000, 5000])
})

test('window: failures are forgotten windowMs after the last attempt (or the end of the last lockout)', () => {
  const c = clock()
  const t = new LoginThrottle({ baseLockMs: 1000, windowMs: 10_000, now: c.now })
  for (let i = 0; i < 4; i++) settle(t.begin(['a']), false)
  c.t += 9_999
  settle(t.begin(['a']), false)
  assert.equal(t.begin(['a']).ok, false, 'five within the window')
  // Locked until +1000; remembered until 10 s after that.
  c.t += 1000 + 9_999
  settle(t.begin(['a']), false)
  const r = t.begin(['a'])
  assert.ok(!r.ok && r.retryAfterMs === 2000, 'still remembered: the second lockout is twice as long')
  c.t += 2000 + 10_000
  for (let i = 0; i < 5; i++) settle(t.begin(['a']), false)
  const r2 = t.begin(['a'])
  assert.ok(!r2.ok && r2.retryAfterMs === 1000, 'forgotten: a fresh budget and the first lockout length again')
  assert.equal(t.size, 1)
})

test('bounded table: 10,000+ other addresses evict the least recently touched ones, never a locked address, never a wipe', () => {
  const c = clock()
  const t = new LoginThrottle({ now: c.now })
  for (let i = 0; i < 5; i++) settle(t.begin(['addr:attacker']), false)
  assert.equal(t.begin(['addr:attacker']).ok, false)
  for (let i = 0; i < 4; i++) settle(t.begin(['addr:early']), false)
  for (let i = 0; i < 12_000; i++) settle(t.begin([`addr:10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`]), false)
  assert.equal(t.size, 10_000)
  assert.equal(t.begin(['addr:attacker']).ok, false, 'the lockout survived the flood')
  assert.equal(t.begin(['addr:early']).ok, true, 'the oldest merely-counted address was evicted')
  // The newest addresses keep their counts: 4 more for the last one and it has used its budget.
  const last = 'addr:10.0.46.223'
  for (let i = 0; i < 4; i++) settle(t.begin([last]), false)
  assert.equal(t.begin([last]).ok, false)
})

test('bounded table: locked keys alone fill it without making new keys go uncounted', () => {
  const c = clock()
  const t = new LoginThrottle({ budget: 1, maxKeys: 3, now: c.now })
  for (const k of ['a', 'b', 'c']) { settle(t.begin([k]), false); assert.equal(t.begin([k]).ok, false) }
  settle(t.begin(['d']), false)
  assert.equal(t.begin(['d']).ok, false, 'd was counted (the oldest locked key made room)')
  assert.equal(t.size, 3)
  assert.equal(t.begin(['a']).ok, true, 'a, the least recently touched, was the one evicted')
})
