// Reads edgeway.yaml (optional), applies EDGEWAY_* overrides and validates, with errors naming the key.
import { readFileSync, existsSync } from 'node:fs'
import { parse as parseYaml, parseDocument } from 'yaml'
import { z } from 'zod'
import { configSchema, type Config } from './schema.ts'

export class ConfigError extends Error {
  constructor(readonly source: string, readonly problems: string[]) {
    super(`invalid configuration (${source}):\n` + problems.map((p) => `  - ${p}`).join('\n'))
    this.name = 'ConfigError'
  }
}

/** EDGEWAY_MQTT__TCP__PORT=1884 -> { mqtt: { tcp: { port: 1884 } } }; SNAKE_CASE segments become camelCase. */
export function envOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('EDGEWAY_') || v === undefined || k === 'EDGEWAY_CONFIG') continue
    const path = k.slice('EDGEWAY_'.length).split('__').map((seg) =>
      seg.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase()))
    if (path.some((p) => p.length === 0)) continue
    let node = out
    for (const seg of path.slice(0, -1)) {
      const next = node[seg]
      node = (next && typeof next === 'object' ? next : (node[seg] = {})) as Record<string, unknown>
    }
    // Values are YAML scalars, so EDGEWAY_MQTT__TCP__PORT=1884 is a number and "true" a boolean.
    node[path[path.length - 1]!] = parseYaml(v) as unknown
  }
  return out
}

function deepMerge(base: unknown, over: unknown): unknown {
  if (over && typeof over === 'object' && !Array.isArray(over) && base && typeof base === 'object' && !Array.isArray(base)) {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) }
    for (const [k, v] of Object.entries(over)) out[k] = deepMerge(out[k], v)
    return out
  }
  return over
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const key = issue.path.length ? issue.path.map(String).join('.') : '(top level)'
  if (issue.code === 'unrecognized_keys') {
    return `${key === '(top level)' ? '' : key + ': '}unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`
  }
  return `${key}: ${issue.message}`
}

export function parseConfig(raw: unknown, source: string): Config {
  const r = configSchema.safeParse(raw ?? {})
  if (!r.success) throw new ConfigError(source, r.error.issues.map(formatIssue))
  const c = r.data
  const problems: string[] = []
  if (c.mqtt.tls.enabled && (!c.mqtt.tls.cert || !c.mqtt.tls.key)) problems.push('mqtt.tls: "cert" and "key" are required when tls is enabled')
  for (const f of ['cert', 'key', 'ca'] as const) {
    const p = c.mqtt.tls[f]
    if (c.mqtt.tls.enabled && p && !existsSync(p)) problems.push(`mqtt.tls.${f}: file not found: ${p}`)
  }
  c.upstreams.forEach((u, i) => {
    if (u.reconnectMaxMs < u.reconnectMinMs) problems.push(`upstreams.${i}.reconnectMaxMs: must be >= reconnectMinMs`)
  })
  if (problems.length) throw new ConfigError(source, problems)
  return c
}

export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Config {
  let raw: unknown = {}
  const source = file ?? 'built-in defaults'
  if (file) {
    let text: string
    try { text = readFileSync(file, 'utf8') } catch (e) {
      throw new ConfigError(file, [`cannot read file: ${(e as Error).message}`])
    }
    const doc = parseDocument(text)
    if (doc.errors.length) throw new ConfigError(file, doc.errors.map((e) => `YAML syntax: ${e.message.split('\n')[0]}`))
    raw = doc.toJS() ?? {}
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, ['(top level): must be a mapping of keys'])
  }
  const overrides = envOverrides(env)
  const merged = Object.keys(overrides).length ? deepMerge(raw, overrides) : raw
  return parseConfig(merged, Object.keys(overrides).length ? `${source} + EDGEWAY_* environment` : source)
}
