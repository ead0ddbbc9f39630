// Pure chat-command parsing and reply texts: what a person types to a device JID, and what the device "says" back.
import type { CommandResult } from '../../gateway/commands/router.ts'
import { COMMAND_NAME_RE, type MetricValue } from '../../gateway/readings.ts'

export type { MetricValue }

export type ChatCommand =
  | { kind: 'help' }
  | { kind: 'status' }
  | { kind: 'list' }
  | { kind: 'get'; metric: string }
  | { kind: 'device'; name: string; args: unknown }
  | { kind: 'unknown'; text: string; hint: string }


/** A value typed in chat: JSON when it parses (numbers, true/false, objects), else the text itself. */
export function parseValue(s: string): unknown {
  const t = s.trim()
  if (t === '') return null
  try { return JSON.parse(t) as unknown } catch { return t }
}

/** `key=value key2=value2` -> object; otherwise one JSON value / plain text; nothing -> null. */
export function parseArgs(rest: string): unknown {
  const t = rest.trim()
  if (t === '') return null
  if (t.startsWith('{') || t.startsWith('[')) return parseValue(t)
  const pairs = t.split(/\s+/)
  if (pairs.every((p) => /^[A-Za-z_][A-Za-z0-9_.-]*=.*$/.test(p))) {
    return Object.fromEntries(pairs.map((p) => { const i = p.indexOf('='); return [p.slice(0, i), parseValue(p.slice(i + 1))] }))
  }
  return parseValue(t)
}

export function parseChat(body: string): ChatCommand {
  const t = body.trim()
  const m = /^(\S+)\s*([\s\S]*)$/.exec(t)
  if (!m) return { kind: 'unknown', text: t, hint: 'empty message' }
  const word = m[1]!.toLowerCase()
  const rest = m[2]!.trim()
  switch (word) {
    case 'help': case '?': return { kind: 'help' }
    case 'status': return { kind: 'status' }
    case 'list': return { kind: 'list' }
    case 'get':
      if (!rest || /\s/.test(rest)) return { kind: 'unknown', text: t, hint: 'usage: get <metric>' }
      return { kind: 'get', metric: rest }
    case 'set': {
      const s = /^(\S+)\s+([\s\S]+)$/.exec(rest)
      if (!s) return { kind: 'unknown', text: t, hint: 'usage: set <name> <value>' }
      return { kind: 'device', name: 'set', args: { name: s[1]!, value: parseValue(s[2]!) } }
    }
  }
  if (!COMMAND_NAME_RE.test(m[1]!)) return { kind: 'unknown', text: t, hint: `"${m[1]!.slice(0, 40)}" is not a command name (letters, digits, ".", "_", "-")` }
  return { kind: 'device', name: m[1]!, args: parseArgs(rest) }
}

export const HELP = [
  'Commands:',
  '  help              this text',
  '  status            link state, last reading, usual interval',
  '  get <metric>      the latest value of one metric',
  '  set <name> <value>  sends the device a "set" command {name, value}',
  '  list              the device JIDs you may talk to',
  '  <command> [args]  any other device command (args: key=value ..., JSON, or text)',
].join('\n')

export function unknownReply(c: Extract<ChatCommand, { kind: 'unknown' }>): string {
  return `Sorry, I did not understand "${c.text.slice(0, 80)}": ${c.hint}.\nType "help" for the list of commands.`
}

function fmt(v: MetricValue): string {
  return typeof v === 'number' ? String(Math.round(v * 1000) / 1000) : String(v)
}

/** "temperature=21.5 humidity=40" (at most `max` characters, for presence status texts). */
export function summary(metrics: Record<string, MetricValue>, max = 120): string {
  let out = ''
  for (const [k, v] of Object.entries(metrics)) {
    const part = `${k}=${fmt(v)}`
    if (out.length + part.length + 1 > max) { out += out ? ' …' : '…'; break }
    out += (out ? ' ' : '') + part
  }
  return out
}

/** What a contact's status and get replies show of its device. */
export interface ContactView {
  online: boolean
  link: string | null
  lastAt: number | null
  intervalMs: number | null
  metrics: Record<string, MetricValue>
  lateness: 'away' | 'xa' | null
}

export function statusReply(device: string, v: ContactView, now: number): string {
  const state = !v.online ? 'offline' : v.lateness === 'xa' ? 'online, readings long overdue' : v.lateness === 'away' ? 'online, readings overdue' : 'online'
  const lines = [`${device}: ${state}${v.link ? ` (${v.link})` : ''}`]
  if (v.lastAt !== null) lines.push(`last reading ${Math.round((now - v.lastAt) / 1000)} s ago (${new Date(v.lastAt).toISOString()})`)
  else lines.push('no reading since the gateway started')
  if (v.intervalMs !== null) lines.push(`usual interval ${(v.intervalMs / 1000).toFixed(1)} s`)
  const s = summary(v.metrics, 1000)
  if (s) lines.push(s)
  return lines.join('\n')
}

export function getReply(device: string, metric: string, v: ContactView): string {
  const val = v.metrics[metric]
  if (val === undefined) {
    const known = Object.keys(v.metrics)
    return `${device} has no metric "${metric.slice(0, 64)}"${known.length ? `; known: ${known.join(', ')}` : ' (no reading yet)'}`
  }
  return `${metric} = ${fmt(val)}`
}

export function resultReply(r: CommandResult): string {
  if (r.ok) return r.result === null || r.result === undefined ? `${r.name}: ok` : `${r.name}: ${typeof r.result === 'string' ? r.result : JSON.stringify(r.result)}`
  switch (r.code) {
    case 'offline': return `${r.name}: the device is offline, try again when it is back`
    case 'timeout': case 'expired': return `${r.name}: no answer from the device (${r.error}). Type "help" for the gateway's own commands.`
    case 'device_error': return `${r.name} failed: ${r.error}`
    default: return `${r.name} failed (${r.code}): ${r.error}`
  }
}

/** Chat text of an alert from the gateway's alerts engine (gateway/alerts/): ⚠️ when raised, ✅ when cleared. */
export function alertChat(e: { type: 'raised' | 'cleared'; text: string }): string {
  return `${e.type === 'raised' ? '⚠️' : '✅'} ${e.text}`
}
