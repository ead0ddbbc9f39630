// The pure alert rules with a fake clock: offline hold-down and flapping, thresholds with hysteresis and hold,
// outbox backlog age and drops, upstream down, removed and never-seen devices, and the legacy XMPP key's mapping.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AlertRules, type AlertEvent, type AlertInput } from '../gateway/alerts/rules.ts'
import { alertsSection, effectiveAlerts, type AlertsConfig } from '../gateway/alerts/config.ts'
import { configSchema } from '../app/config/schema.ts'

const cfg = (over: Record<string, unknown> = {}): AlertsConfig => alertsSection.parse(over)

/** Drives the rules with a fake clock; `at(ms)` moves time and ticks like the engine's timer. */
function harness(c: AlertsConfig, tracked: (d: string) => boolean = () => true) {
  const rules = new AlertRules(c, { tracked })
  let now = 1_000_000
  const events: AlertEvent[] = []
  const feed = (i: AlertInput): AlertEvent[] => { const e = rules.apply(i, now); events.push(...e); return e }
  return {
    rules, events,
    get now() { return now },
    feed,
    /** Advances the clock in 100 ms steps, ticking each (the engine's timer never fires less often than this). */
    advance(ms: number): AlertEvent[] {
      const out: AlertEvent[] = []
      const end = now + ms
      while (now < end) { now = Math.min(end, now + 100); out.push(...feed({ kind: 'tick' })) }
      return out
    },
    raised: () => events.filter((e) => e.type === 'raised'),
    cleared: () => events.filter((e) => e.type === 'cleared'),
  }
}

test('offline: raised only after the hold time; a device back before that raises nothing', () => {
  const h = harness(cfg({ offlineHoldSeconds: 30 }))
  h.feed({ kind: 'online', device: 's1' })
  h.feed({ kind: 'offline', device: 's1', reason: 'keepalive timeout' })
  const t0 = h.now
  h.advance(29_900)
  assert.equal(h.events.length, 0, 'nothing before the hold time')
  assert.equal(h.rules.nextDue(), t0 + 30_000)
  h.advance(100)
  assert.equal(h.raised().length, 1)
  const a = h.raised()[0]!.alert
  assert.equal(a.id, 'device_offline:s1')
  assert.equal(a.rule, 'device_offline')
  assert.equal(a.severity, 'warning')
  assert.equal(a.since, t0, 'since = when it went offline')
  assert.equal(a.text, 's1 went offline (keepalive timeout)')
  assert.deepEqual(h.rules.active().map((x) => x.id), ['device_offline:s1'])
  // Back: cleared only once it has stayed online for the hold time too.
  h.feed({ kind: 'online', device: 's1' })
  h.advance(29_900)
  assert.equal(h.cleared().length, 0)
  h.advance(100)
  assert.equal(h.cleared().length, 1)
  assert.equal(h.cleared()[0]!.text, 's1 is back online')
  assert.deepEqual(h.rules.active(), [])

  // A second device: away 10 s and back for good -> nothing at all.
  h.feed({ kind: 'online', device: 's2' })
  h.feed({ kind: 'offline', device: 's2', reason: 'closed' })
  h.advance(10_000)
  h.feed({ kind: 'online', device: 's2' })
  h.advance(120_000)
  assert.equal(h.events.filter((e) => e.alert.device === 's2').length, 0)
})

test('flapping (offline/online every second for 5 minutes): one alert, cleared only after the hold time online', () => {
  const h = harness(cfg({ offlineHoldSeconds: 30 }))
  h.feed({ kind: 'online', device: 'twin' })
  const t0 = h.now
  for (let i = 0; i < 300; i++) {
    h.feed({ kind: 'offline', device: 'twin', reason: 'session taken over' })
    h.advance(500)
    h.feed({ kind: 'online', device: 'twin' })
    h.advance(500)
  }
  assert.equal(h.raised().length, 1, 'one alert for the whole storm')
  assert.equal(h.cleared().length, 0, 'never online for 30 s in a row: still active')
  const a = h.raised()[0]!
  assert.equal(a.at, t0 + 30_000, 'raised when the first hold window ended')
  assert.match(a.text, /^twin went offline 30 times in 30 s \(flapping; last: session taken over\)$/)
  // Online since the last 500 ms of the loop: 30 s online in a row ends 29.5 s from now.
  h.advance(29_400)
  assert.equal(h.cleared().length, 0)
  h.advance(100)
  assert.equal(h.cleared().length, 1)
  assert.equal(h.events.length, 2)
})

test('offline: never online since start, untracked (anonymous) or removed devices raise nothing; forget clears', () => {
  const tracked = new Set(['reg', 'gone'])
  const h = harness(cfg({ offlineHoldSeconds: 5 }), (d) => tracked.has(d))
  h.feed({ kind: 'offline', device: 'reg', reason: 'never connected since start' })
  h.feed({ kind: 'online', device: 'anon' })
  h.feed({ kind: 'offline', device: 'anon', reason: 'closed' })
  h.feed({ kind: 'online', device: 'gone' })
  h.feed({ kind: 'offline', device: 'gone', reason: 'revoked' })
  tracked.delete('gone') // removed while its hold-down runs
  h.advance(60_000)
  assert.equal(h.events.length, 0)
  // An active alert of a device that is then removed clears (with a reason), and nothing comes back.
  h.feed({ kind: 'online', device: 'reg' })
  h.feed({ kind: 'offline', device: 'reg', reason: 'closed' })
  h.advance(5_000)
  assert.equal(h.raised().length, 1)
  const c = h.feed({ kind: 'forget', device: 'reg' })
  assert.deepEqual(c.map((e) => [e.type, e.alert.id, e.text]), [['cleared', 'device_offline:reg', 'reg was removed']])
  h.advance(60_000)
  assert.equal(h.events.length, 2)
  assert.deepEqual(h.rules.active(), [])
})

test('offline hold 0: raised and cleared at once; offline: false turns the rule off', () => {
  const h = harness(cfg({ offlineHoldSeconds: 0 }))
  h.feed({ kind: 'online', device: 'd' })
  assert.equal(h.feed({ kind: 'offline', device: 'd', reason: 'x' })[0]?.type, 'raised')
  assert.equal(h.feed({ kind: 'online', device: 'd' })[0]?.type, 'cleared')
  const off = harness(cfg({ offline: false, offlineHoldSeconds: 0 }))
  off.feed({ kind: 'online', device: 'd' })
  off.feed({ kind: 'offline', device: 'd', reason: 'x' })
  off.advance(10_000)
  assert.equal(off.events.length, 0)
})

test('threshold: crossing raises at once (no hold), back in range clears; per device; strings ignored', () => {
  const h = harness(cfg({ thresholds: [{ metric: 'temperature', above: 30 }, { device: 'b', metric: 'battery', below: 3.3, severity: 'critical' }] }))
  h.feed({ kind: 'reading', device: 'a', metrics: { temperature: 29, battery: 3.0 } })
  assert.equal(h.events.length, 0, 'battery rule is for device b only')
  const r = h.feed({ kind: 'reading', device: 'a', metrics: { temperature: 31 } })
  assert.deepEqual(r.map((e) => [e.type, e.alert.id, e.text]), [['raised', 'threshold:a:temperature>30', 'a: temperature = 31 is above 30']])
  h.feed({ kind: 'reading', device: 'a', metrics: { temperature: 35 } })
  h.feed({ kind: 'reading', device: 'a', metrics: { temperature: 'n/a' } })
  assert.equal(h.events.length, 1, 'still above: no repeat')
  const c = h.feed({ kind: 'reading', device: 'a', metrics: { temperature: 30 } })
  assert.deepEqual(c.map((e) => [e.type, e.text]), [['cleared', 'a: temperature = 30 is back in range']])
  const b = h.feed({ kind: 'reading', device: 'b', metrics: { battery: 3.1 } })
  assert.equal(b[0]?.alert.severity, 'critical')
  assert.equal(b[0]?.text, 'b: battery = 3.1 is below 3.3')
})

test('threshold hysteresis: a value hovering at the limit raises once and clears only inside the band', () => {
  const h = harness(cfg({ thresholds: [{ metric: 't', above: 30, hysteresis: 2 }] }))
  for (const v of [29, 30.5, 29.5, 30.2, 28.5, 31, 28.1]) h.feed({ kind: 'reading', device: 'd', metrics: { t: v } })
  assert.equal(h.raised().length, 1)
  assert.equal(h.cleared().length, 0, 'never at or below 28')
  h.feed({ kind: 'reading', device: 'd', metrics: { t: 28 } })
  assert.equal(h.cleared().length, 1)
  h.feed({ kind: 'reading', device: 'd', metrics: { t: 29.9 } })
  assert.equal(h.raised().length, 1, 'below the limit itself: not raised again')
})

test('threshold hold: raised only after the value stayed out of range for holdSeconds, cleared after as long back', () => {
  const h = harness(cfg({ thresholds: [{ metric: 't', above: 30, holdSeconds: 10 }] }))
  h.feed({ kind: 'reading', device: 'd', metrics: { t: 31 } })
  const t0 = h.now
  h.advance(5_000)
  h.feed({ kind: 'reading', device: 'd', metrics: { t: 29 } }) // a blip: resets the hold
  h.advance(20_000)
  assert.equal(h.events.length, 0)
  h.feed({ kind: 'reading', device: 'd', metrics: { t: 32 } })
  const t1 = h.now
  assert.equal(h.rules.nextDue(), t1 + 10_000)
  h.advance(9_900)
  assert.equal(h.events.length, 0)
  h.advance(100) // no new reading needed: the last one still holds
  assert.equal(h.raised().length, 1)
  assert.equal(h.raised()[0]!.alert.since, t1)
  assert.ok(t1 > t0)
  assert.equal(h.raised()[0]!.text, 'd: t = 32 is above 30 (for 10 s)')
  h.feed({ kind: 'reading', device: 'd', metrics: { t: 20 } })
  h.advance(9_900)
  assert.equal(h.cleared().length, 0)
  h.advance(100)
  assert.equal(h.cleared().length, 1)
})

test('outbox backlog age and drops', () => {
  const h = harness(cfg({ backlogAgeSeconds: 60, dropsClearSeconds: 300 }))
  h.feed({ kind: 'outbox', depth: 500, oldestAgeMs: 59_000, drops: 0 })
  assert.equal(h.events.length, 0)
  const r = h.feed({ kind: 'outbox', depth: 800, oldestAgeMs: 75_000, drops: 0 })
  assert.equal(r[0]?.alert.id, 'outbox_backlog')
  assert.equal(r[0]?.alert.since, h.now - 15_000, 'since the oldest reading passed the limit')
  assert.match(r[0]!.text, /oldest reading has waited 75 s .*limit 60 s; 800 readings/)
  assert.equal(h.feed({ kind: 'outbox', depth: 900, oldestAgeMs: 90_000, drops: 0 }).length, 0)
  assert.equal(h.feed({ kind: 'outbox', depth: 0, oldestAgeMs: 0, drops: 0 })[0]?.type, 'cleared')
  // Drops: raised on the first, counted while active, cleared after dropsClearSeconds without another.
  const d = h.feed({ kind: 'outbox', depth: 10, oldestAgeMs: 1000, drops: 40 })
  assert.deepEqual(d.map((e) => [e.type, e.alert.id, e.alert.severity]), [['raised', 'outbox_drops', 'critical']])
  h.advance(200_000)
  h.feed({ kind: 'outbox', depth: 10, oldestAgeMs: 1000, drops: 55 })
  assert.equal(h.raised().length, 2, 'more drops: the same alert')
  assert.match(h.rules.active().find((a) => a.id === 'outbox_drops')!.text, /dropped 55 readings/)
  h.advance(299_900)
  assert.equal(h.cleared().length, 1)
  h.advance(100)
  assert.equal(h.cleared().length, 2)
  assert.match(h.cleared()[1]!.text, /no outbox drops for 5 min/)
  // backlogAgeSeconds 0: off.
  const off = harness(cfg({ backlogAgeSeconds: 0 }))
  off.feed({ kind: 'outbox', depth: 1, oldestAgeMs: 1e9, drops: 0 })
  assert.equal(off.events.length, 0)
})

test('upstream down longer than upstreamDownSeconds; cleared when connected', () => {
  const h = harness(cfg({ upstreamDownSeconds: 60 }))
  const since = h.now
  const snap = (connected: boolean) => ({ kind: 'upstreams' as const, upstreams: [{ name: 'cloud', connected, since, lastError: connected ? null : 'ECONNREFUSED' }, { name: 'backup', connected: true, since: 0, lastError: null }] })
  h.feed(snap(false))
  h.advance(60_000)
  assert.equal(h.feed(snap(false)).length, 0, 'exactly the limit: not yet')
  h.advance(100)
  const r = h.feed(snap(false))
  assert.deepEqual(r.map((e) => [e.alert.id, e.alert.upstream, e.alert.since, e.text]), [['upstream_down:cloud', 'cloud', since, 'upstream "cloud" down for more than 60 s (last error: ECONNREFUSED)']])
  for (let i = 0; i < 50; i++) h.feed(snap(false))
  assert.equal(h.raised().length, 1)
  const c = h.feed(snap(true))
  assert.equal(c[0]?.type, 'cleared')
  assert.match(c[0]!.text, /^upstream "cloud" is connected again after 60 s$/)
})

test('config: defaults, precise messages, and the deprecated xmpp.alerts.thresholds mapped one rule per device', () => {
  const d = configSchema.parse({}).alerts
  assert.equal(d.offlineHoldSeconds, 30)
  assert.equal(d.offline, true)
  assert.deepEqual(d.thresholds, [])
  const bad = configSchema.safeParse({ alerts: { thresholds: [{ metric: 't' }], offlineHoldSeconds: -1 } })
  assert.equal(bad.success, false)
  const msgs = bad.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`)
  assert.ok(msgs.some((m) => m === 'alerts.thresholds.0: a threshold needs `above` or `below`'), msgs.join('\n'))
  assert.ok(msgs.some((m) => m.startsWith('alerts.offlineHoldSeconds:')), msgs.join('\n'))
  assert.equal(configSchema.safeParse({ alerts: { thresholds: [{ metric: 't', above: 1, devcie: 'x' }] } }).success, false, 'unknown keys are refused')
  const merged = effectiveAlerts(cfg({ thresholds: [{ metric: 'h', above: 90 }] }), [{ metric: 't', above: 30, devices: ['a', 'b'] }, { metric: 'p', below: 1 }])
  assert.deepEqual(merged.thresholds.map((t) => [t.device ?? '*', t.metric, t.above ?? null, t.below ?? null]), [['*', 'h', 90, null], ['a', 't', 30, null], ['b', 't', 30, null], ['*', 'p', null, 1]])
  const h = harness(merged)
  h.feed({ kind: 'reading', device: 'c', metrics: { t: 99 } })
  assert.equal(h.events.length, 0, 'legacy rule for a and b only')
  h.feed({ kind: 'reading', device: 'b', metrics: { t: 99 } })
  assert.equal(h.raised()[0]?.alert.id, 'threshold:b:t>30')
})
