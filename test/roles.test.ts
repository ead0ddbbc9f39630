// Roles of integration clients: topic matching, filter coverage and intersection, allow/deny semantics.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  matches, intersects, covers, mayPublishAs, maySubscribeAs, deniedSubscribe, resolveRoles, filterProblem,
  BUILTIN_ROLES, type Role,
} from '../gateway/broker/roles.ts'

const role = (rules: Role['rules'], name = 'custom'): Role => ({ name, rules })
const ok = { ok: true }

test('matches: + is one level, # the rest including the parent, $-topics not reached by a leading wildcard', () => {
  assert.equal(matches('devices/+/telemetry', 'devices/a/telemetry'), true)
  assert.equal(matches('devices/+/telemetry', 'devices/a/b/telemetry'), false)
  assert.equal(matches('devices/+/telemetry', 'devices//telemetry'), true, '+ matches an empty level')
  assert.equal(matches('devices/#', 'devices'), true, '# matches the parent level')
  assert.equal(matches('devices/#', 'devices/a/b/c'), true)
  assert.equal(matches('devices/#', 'devicesX/a'), false)
  assert.equal(matches('devices/a', 'devices/a/b'), false)
  assert.equal(matches('devices/a/b', 'devices/a'), false)
  assert.equal(matches('#', '$SYS/broker/uptime'), false)
  assert.equal(matches('+/broker/uptime', '$SYS/broker/uptime'), false)
  assert.equal(matches('$SYS/#', '$SYS/broker/uptime'), true)
  assert.equal(matches('a/#', 'a/$x'), true, 'only the first level is special')
})

test('intersects: some topic matched by both (symmetric), with the $ rule', () => {
  const cases: [string, string, boolean][] = [
    ['devices/+/telemetry', 'devices/secret/#', true],
    ['devices/+/telemetry', 'devices/secret/state', false],
    ['devices/a/telemetry', 'devices/secret/#', false],
    ['devices/#', 'devices', true],
    ['devices', 'devices/+', false],
    ['#', 'anything/at/all', true],
    ['#', '$SYS/#', false],
    ['+/x', '$SYS/x', false],
    ['$SYS/+', '$SYS/#', true],
    ['+/+', 'a/b/c', false],
    ['+/+/#', 'a/b', true],
    ['a/+/c', 'a/b/+', true],
    ['a/+/c', 'a/b/d', false],
  ]
  for (const [a, b, want] of cases) {
    assert.equal(intersects(a, b), want, `intersects(${a}, ${b})`)
    assert.equal(intersects(b, a), want, `intersects(${b}, ${a})`)
  }
})

test('covers: every topic of the filter is matched by the pattern', () => {
  const cases: [string, string, boolean][] = [
    ['devices/+/telemetry', 'devices/+/telemetry', true],
    ['devices/+/telemetry', 'devices/a/telemetry', true],
    ['devices/+/telemetry', 'devices/#', false],
    ['devices/+/telemetry', 'devices/+/+', false],
    ['devices/a/telemetry', 'devices/+/telemetry', false],
    ['devices/#', 'devices/+/telemetry', true],
    ['devices/#', 'devices', true],
    ['devices/#', 'devices/#', true],
    ['devices/+', 'devices/#', false],
    ['devices', 'devices/#', false],
    ['#', '#', true],
    ['+/#', '#', true],
    ['+/+/#', '#', false],
    ['a/+/#', 'a/#', false],
    ['#', '$SYS/#', false],
    ['+/uptime', '$SYS/uptime', false],
    ['$SYS/#', '$SYS/broker/+', true],
    ['$SYS/#', '#', false],
  ]
  for (const [p, f, want] of cases) assert.equal(covers(p, f), want, `covers(${p}, ${f})`)
})

test('filterProblem: # only last, + a whole level, non-empty, no U+0000', () => {
  for (const good of ['a', 'a/b', '+', '#', 'a/+/b', 'a/#', '/', 'a//b', '%u/#', '$SYS/#']) assert.equal(filterProblem(good), null, good)
  for (const bad of ['', 'a/#/b', '#/a', 'a#', 'a/b+', '+a', 'a\u0000b']) assert.ok(filterProblem(bad), bad)
})

test('built-in observer reads telemetry, state, presence, errors and results of every device, and nothing else', () => {
  const observer = BUILTIN_ROLES.get('observer')!
  for (const f of ['devices/+/telemetry', 'devices/a/state', 'devices/+/presence', 'devices/+/errors', 'devices/+/cmd/+/result', 'devices/x/cmd/reboot/result', '$share/g/devices/+/telemetry']) {
    assert.deepEqual(maySubscribeAs(observer, 'ha', f), ok, f)
  }
  for (const f of ['#', 'devices/#', 'devices/+/+', 'devices/+/cmd/+', 'devices/a/ota/chunk', '$SYS/#']) {
    assert.equal(maySubscribeAs(observer, 'ha', f).ok, false, f)
  }
  assert.equal(mayPublishAs(observer, 'ha', 'devices/a/cmd/reboot').ok, false)
  assert.equal(mayPublishAs(observer, 'ha', 'devices/a/telemetry').ok, false)
})

test('built-in operator also sends commands, but publishes nothing else', () => {
  const operator = BUILTIN_ROLES.get('operator')!
  assert.deepEqual(mayPublishAs(operator, 'nr', 'devices/a/cmd/reboot'), ok)
  assert.equal(mayPublishAs(operator, 'nr', 'devices/a/cmd/reboot/result').ok, false)
  assert.equal(mayPublishAs(operator, 'nr', 'devices/a/telemetry').ok, false)
  assert.equal(mayPublishAs(operator, 'nr', 'devices/+/cmd/reboot').ok, false, 'no wildcards in a published topic')
  assert.deepEqual(maySubscribeAs(operator, 'nr', 'devices/a/cmd/reboot/result'), ok)
  assert.equal(maySubscribeAs(operator, 'nr', 'devices/a/cmd/reboot').ok, false, 'publish rights do not grant subscribe')
})

test('deny beats allow: publish and subscribe, including a wildcard filter that only partly reaches the denied subtree', () => {
  const r = role([
    { effect: 'allow', action: 'both', topic: 'devices/#' },
    { effect: 'deny', action: 'both', topic: 'devices/secret/#' },
  ])
  assert.deepEqual(mayPublishAs(r, 'x', 'devices/a/telemetry'), ok)
  const pub = mayPublishAs(r, 'x', 'devices/secret/telemetry')
  assert.equal(pub.ok, false)
  assert.match(pub.ok ? '' : pub.reason, /denies publishing to devices\/secret\/#/)
  assert.deepEqual(maySubscribeAs(r, 'x', 'devices/a/telemetry'), ok)
  assert.equal(maySubscribeAs(r, 'x', 'devices/+/telemetry').ok, false, '+ would reach devices/secret/telemetry')
  assert.equal(maySubscribeAs(r, 'x', 'devices/#').ok, false)
  assert.equal(maySubscribeAs(r, 'x', '$share/g/devices/+/telemetry').ok, false, '$share is looked through')
})

test('a deny rule binds only its action', () => {
  const r = role([
    { effect: 'allow', action: 'both', topic: 'x/#' },
    { effect: 'deny', action: 'publish', topic: 'x/ro/#' },
    { effect: 'deny', action: 'subscribe', topic: 'x/wo/#' },
  ])
  assert.equal(mayPublishAs(r, 'n', 'x/ro/a').ok, false)
  assert.deepEqual(maySubscribeAs(r, 'n', 'x/ro/a'), ok)
  assert.deepEqual(mayPublishAs(r, 'n', 'x/wo/a'), ok)
  assert.equal(maySubscribeAs(r, 'n', 'x/wo/a').ok, false)
})

test('%u is the client\'s own name; a name with + # / never matches such a rule', () => {
  const r = role([
    { effect: 'allow', action: 'both', topic: 'clients/%u/#' },
    { effect: 'allow', action: 'subscribe', topic: 'inbox-%u' },
  ])
  assert.deepEqual(mayPublishAs(r, 'ha', 'clients/ha/status'), ok)
  assert.equal(mayPublishAs(r, 'ha', 'clients/nr/status').ok, false)
  assert.deepEqual(maySubscribeAs(r, 'ha', 'clients/ha/#'), ok)
  assert.equal(maySubscribeAs(r, 'ha', 'clients/+/#').ok, false)
  assert.deepEqual(maySubscribeAs(r, 'ha', 'inbox-ha'), ok, '%u inside a level')
  assert.equal(maySubscribeAs(r, '+', 'clients/+/#').ok, false)
  assert.equal(maySubscribeAs(r, '#', 'clients/#').ok, false)
  assert.equal(mayPublishAs(r, 'a/b', 'clients/a/b/x').ok, false)
})

test('$share: the inner filter is what counts; a malformed share is refused', () => {
  const observer = BUILTIN_ROLES.get('observer')!
  assert.deepEqual(maySubscribeAs(observer, 'x', '$share/grp/devices/+/state'), ok)
  assert.equal(maySubscribeAs(observer, 'x', '$share/grp/#').ok, false)
  assert.equal(maySubscribeAs(observer, 'x', '$share/grp').ok, false)
  assert.equal(maySubscribeAs(observer, 'x', '$share//devices/+/state').ok, false)
  assert.equal(maySubscribeAs(observer, 'x', '$share/g+/devices/+/state').ok, false)
  assert.equal(maySubscribeAs(observer, 'x', 'devices/+/state/#/x').ok, false, 'invalid filter')
})

test('$ topics need a rule that spells the $ level out', () => {
  const everything = role([{ effect: 'allow', action: 'both', topic: '#' }])
  assert.equal(maySubscribeAs(everything, 'x', '$SYS/#').ok, false)
  assert.equal(mayPublishAs(everything, 'x', '$SYS/x').ok, false)
  assert.deepEqual(maySubscribeAs(everything, 'x', '#'), ok)
  const sys = role([{ effect: 'allow', action: 'subscribe', topic: '$SYS/#' }, { effect: 'deny', action: 'subscribe', topic: '#' }])
  assert.deepEqual(maySubscribeAs(sys, 'x', '$SYS/broker/+'), ok, 'deny # does not reach $SYS')
})

test('deniedSubscribe (open broker): only deny rules, allow rules are irrelevant', () => {
  const anon = role([{ effect: 'deny', action: 'subscribe', topic: '$SYS/#' }, { effect: 'deny', action: 'both', topic: 'private/#' }], 'anonymous')
  assert.equal(deniedSubscribe(anon, 'c1', 'devices/#'), null)
  assert.match(deniedSubscribe(anon, 'c1', '#') ?? '', /private\/#/, '# reaches private/...')
  const sysOnly = role([{ effect: 'deny', action: 'subscribe', topic: '$SYS/#' }], 'anonymous')
  assert.equal(deniedSubscribe(sysOnly, 'c1', '#'), null, '# never delivers $SYS topics')
  assert.match(deniedSubscribe(anon, 'c1', '$SYS/broker/uptime') ?? '', /denies subscribing to \$SYS\/#/)
  assert.match(deniedSubscribe(anon, 'c1', '$share/g/private/x') ?? '', /private\/#/)
  assert.equal(deniedSubscribe(role([]), 'c1', '$SYS/#'), null)
})

test('resolveRoles: built-ins plus config; a config role replaces a built-in of the same name', () => {
  const roles = resolveRoles({
    ha: { rules: [{ allow: 'subscribe', topic: 'devices/+/telemetry' }, { deny: 'both', topic: 'devices/secret/#' }] },
    observer: { rules: [{ allow: 'subscribe', topic: 'devices/+/state' }] },
  })
  assert.deepEqual([...roles.keys()].sort(), ['ha', 'observer', 'operator'])
  assert.deepEqual(roles.get('ha')!.rules, [
    { effect: 'allow', action: 'subscribe', topic: 'devices/+/telemetry' },
    { effect: 'deny', action: 'both', topic: 'devices/secret/#' },
  ])
  assert.equal(maySubscribeAs(roles.get('observer')!, 'x', 'devices/+/telemetry').ok, false, 'replaced')
  assert.deepEqual(maySubscribeAs(roles.get('observer')!, 'x', 'devices/+/state'), ok)
  assert.equal(resolveRoles(undefined).size, 2)
  assert.throws(() => resolveRoles({ bad: { rules: [{ topic: 'a' }] } }), /exactly one of allow or deny/)
  assert.throws(() => resolveRoles({ bad: { rules: [{ allow: 'both', topic: 'a/#/b' }] } }), /"#" must be the whole last level/)
})
