// Roles for MQTT clients that are not devices (Home Assistant, Node-RED, Telegraf, scripts): pure, no I/O.
//
// A role is a list of allow/deny rules. Each rule has an action (publish, subscribe or both) and a topic pattern
// in MQTT filter syntax (`+` one whole level, `#` the last level, meaning "this level and everything below").
// `%u` in a pattern is replaced by the client's name; a name that is empty or contains `+`, `#` or `/` makes
// every rule with `%u` match nothing (registry names cannot contain them anyway).
//
// Semantics, with default refuse:
//  - PUBLISH to topic T is allowed iff some allow rule (publish/both) matches T and no deny rule (publish/both)
//    matches T. A topic containing wildcards is refused.
//  - SUBSCRIBE to filter F (`$share/<group>/<filter>` is stripped to the inner filter first) is allowed iff
//      no deny rule (subscribe/both) intersects F (some topic is matched by both: deny beats allow even for a
//      wildcard filter that would only partly reach the denied subtree), and
//      some single allow rule (subscribe/both) covers F (every topic F can match is matched by the rule).
//    Coverage is per rule: `devices/+/+` is not allowed by telemetry and state rules together.
//  - Topics whose first level starts with `$` are not matched by a leading `+` or `#` (MQTT 3.1.1 §4.7.2), so
//    `#` neither reaches nor intersects `$SYS/...`; only a pattern spelling `$SYS` out does.
//  - Open-broker / anonymous mode: only the deny rules of the role named `anonymous` (if configured) apply,
//    see deniedSubscribe().
//
// Built-in roles: `observer` reads every device's telemetry, state, presence, errors and command results;
// `operator` can also publish commands (`devices/+/cmd/+`). A config role with the same name replaces the built-in.

export type RuleAction = 'publish' | 'subscribe' | 'both'
export type RuleEffect = 'allow' | 'deny'

export interface Rule { effect: RuleEffect; action: RuleAction; topic: string }
export interface Role { name: string; rules: Rule[] }

/** Same shape as policy.ts's Decision (kept local so this module imports nothing). */
export type Decision = { ok: true } | { ok: false; reason: string }

/** One rule as written in edgeway.yaml: exactly one of allow/deny (checked by the config schema). */
export interface RuleConfig { allow?: RuleAction | undefined; deny?: RuleAction | undefined; topic: string }
export type RolesConfig = Record<string, { rules: RuleConfig[] }>

/** The role whose deny rules bind anonymous clients in openBroker / allowAnonymous mode. */
export const ANONYMOUS_ROLE = 'anonymous'

/** Role names in the config: same alphabet as device ids, shorter. */
export const ROLE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/

const allow = (topic: string): Rule => ({ effect: 'allow', action: 'subscribe', topic })
const OBSERVER_RULES: Rule[] = [
  allow('devices/+/telemetry'),
  allow('devices/+/state'),
  allow('devices/+/presence'),
  allow('devices/+/errors'),
  allow('devices/+/cmd/+/result'),
]

export const BUILTIN_ROLES: ReadonlyMap<string, Role> = new Map<string, Role>([
  ['observer', { name: 'observer', rules: OBSERVER_RULES }],
  // the results of its commands are already in the observer rules
  ['operator', { name: 'operator', rules: [...OBSERVER_RULES, { effect: 'allow', action: 'publish', topic: 'devices/+/cmd/+' }] }],
])

/**
 * Why a topic pattern / subscription filter is invalid, or null: non-empty, no U+0000, `+` a whole level,
 * `#` only as the whole last level. Also used by the config schema for rule topics.
 */
export function filterProblem(filter: string): string | null {
  if (filter.length === 0) return 'must not be empty'
  if (filter.includes('\u0000')) return 'must not contain U+0000'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return `"#" must be the whole last level (in "${filter}")`
    if (l.includes('+') && l !== '+') return `"+" must be a whole level (in "${filter}")`
  }
  return null
}

/** Pattern levels, split once per rule (publish checks run per message). */
const splitCache = new WeakMap<Rule, string[]>()
function ruleLevels(rule: Rule): string[] {
  let l = splitCache.get(rule)
  if (!l) { l = rule.topic.split('/'); splitCache.set(rule, l) }
  return l
}

const BAD_NAME = /[+#/]/
/** The rule's pattern levels for this client, or null when `%u` cannot be substituted safely. */
function levelsFor(rule: Rule, name: string): string[] | null {
  const l = ruleLevels(rule)
  if (!rule.topic.includes('%u')) return l
  if (name === '' || BAD_NAME.test(name)) return null
  return l.map((x) => x.replaceAll('%u', name))
}

const isWild = (level: string): boolean => level === '+' || level === '#'

/** Level-array form of matches(): pattern p against a concrete topic t. */
function matchLevels(p: string[], t: string[]): boolean {
  for (let i = 0; i < p.length; i++) {
    const pl = p[i]!
    if (i === 0 && isWild(pl) && t[0]!.startsWith('$')) return false
    if (pl === '#') return true // also the parent: `a/#` matches `a`
    if (i >= t.length) return false
    if (pl !== '+' && pl !== t[i]) return false
  }
  return p.length === t.length
}

/** Whether some topic is matched by both filters a and b. */
function intersectLevels(a: string[], b: string[]): boolean {
  for (let i = 0; ; i++) {
    const x = a[i], y = b[i]
    if (i === 0) {
      // a leading wildcard never matches a $-topic, so it cannot meet a literal $ level
      if (isWild(x!) && !isWild(y!) && y!.startsWith('$')) return false
      if (isWild(y!) && !isWild(x!) && x!.startsWith('$')) return false
    }
    if (x === '#' || y === '#') return true
    if (x === undefined || y === undefined) return x === y
    if (x !== '+' && y !== '+' && x !== y) return false
  }
}

/** Whether every topic filter f can match is matched by pattern p. */
function coverLevels(p: string[], f: string[]): boolean {
  for (let i = 0; ; i++) {
    const pl = p[i], fl = f[i]
    // a leading wildcard in p does not reach $-topics; f's own leading wildcard never produces them
    if (i === 0 && isWild(pl!) && !isWild(fl!) && fl!.startsWith('$')) return false
    if (pl === '#') return true
    if (pl === undefined || fl === undefined) return pl === fl
    // f reaches arbitrarily deep (and its parent), p does not; except `+/#`, which is `#` (a topic has a first level)
    if (fl === '#') return i === 0 && pl === '+' && p[1] === '#' && p.length === 2
    if (pl === '+') continue
    if (fl === '+' || pl !== fl) return false
  }
}

/** MQTT matching of a concrete topic against a pattern (a filter). */
export function matches(pattern: string, topic: string): boolean {
  return matchLevels(pattern.split('/'), topic.split('/'))
}

/** Whether some topic is matched by both filters (symmetric). */
export function intersects(a: string, b: string): boolean {
  return intersectLevels(a.split('/'), b.split('/'))
}

/** Whether every topic `filter` can match is matched by `pattern`. */
export function covers(pattern: string, filter: string): boolean {
  return coverLevels(pattern.split('/'), filter.split('/'))
}

const appliesTo = (rule: Rule, action: 'publish' | 'subscribe'): boolean => rule.action === action || rule.action === 'both'

/** `$share/<group>/<filter>` -> `<filter>`; null when the share is malformed. Other filters unchanged. */
function innerFilter(filter: string): string | null {
  if (!filter.startsWith('$share/')) return filter
  const slash = filter.indexOf('/', '$share/'.length)
  if (slash <= '$share/'.length || slash === filter.length - 1) return null
  const group = filter.slice('$share/'.length, slash)
  return group.includes('+') || group.includes('#') ? null : filter.slice(slash + 1)
}

const OK: Decision = { ok: true }

export function mayPublishAs(role: Role, name: string, topic: string): Decision {
  if (topic.length === 0 || topic.includes('+') || topic.includes('#') || topic.includes('\u0000')) {
    return { ok: false, reason: `"${topic}" is not a valid topic to publish to` }
  }
  const t = topic.split('/')
  let allowed = false
  for (const rule of role.rules) {
    if (!appliesTo(rule, 'publish')) continue
    const p = levelsFor(rule, name)
    if (!p || !matchLevels(p, t)) continue
    if (rule.effect === 'deny') return { ok: false, reason: `role "${role.name}" denies publishing to ${rule.topic}` }
    allowed = true
  }
  return allowed ? OK : { ok: false, reason: `role "${role.name}" does not allow publishing to ${topic}` }
}

/** The reason a deny rule (subscribe/both) of the role refuses this filter, or null. */
function denyReason(role: Role, name: string, f: string[]): string | null {
  for (const rule of role.rules) {
    if (rule.effect !== 'deny' || !appliesTo(rule, 'subscribe')) continue
    const p = levelsFor(rule, name)
    if (p && intersectLevels(p, f)) return `role "${role.name}" denies subscribing to ${rule.topic}`
  }
  return null
}

export function maySubscribeAs(role: Role, name: string, filter: string): Decision {
  const inner = innerFilter(filter)
  if (inner === null || filterProblem(inner) !== null) return { ok: false, reason: `"${filter}" is not a valid subscription filter` }
  const f = inner.split('/')
  const denied = denyReason(role, name, f)
  if (denied) return { ok: false, reason: denied }
  for (const rule of role.rules) {
    if (rule.effect !== 'allow' || !appliesTo(rule, 'subscribe')) continue
    const p = levelsFor(rule, name)
    if (p && coverLevels(p, f)) return OK
  }
  return { ok: false, reason: `role "${role.name}" does not allow subscribing to ${inner}` }
}

/**
 * Open-broker / anonymous mode, where allow rules do not apply: the reason a deny rule refuses this filter, or
 * null. A malformed filter is left to the broker's own validation (null).
 */
export function deniedSubscribe(role: Role, name: string, filter: string): string | null {
  const inner = innerFilter(filter)
  if (inner === null || filterProblem(inner) !== null) return null
  return denyReason(role, name, inner.split('/'))
}

/** Config rules -> Role rules. */
function toRule(r: RuleConfig): Rule {
  if ((r.allow === undefined) === (r.deny === undefined)) throw new Error(`rule for "${r.topic}": give exactly one of allow or deny`)
  const problem = filterProblem(r.topic)
  if (problem) throw new Error(`rule topic "${r.topic}": ${problem}`)
  return r.allow !== undefined ? { effect: 'allow', action: r.allow, topic: r.topic } : { effect: 'deny', action: r.deny!, topic: r.topic }
}

/** The built-in roles plus the configured ones; a configured `observer` or `operator` replaces the built-in. */
export function resolveRoles(config: RolesConfig | undefined): Map<string, Role> {
  const out = new Map<string, Role>(BUILTIN_ROLES)
  for (const [name, def] of Object.entries(config ?? {})) out.set(name, { name, rules: def.rules.map(toRule) })
  return out
}
