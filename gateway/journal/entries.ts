// What the per-device journal records, as pure data: the entry kinds, their bounds, and the mapping from gateway
// events (presence, command results, firmware reports, refusals, OTA progress, flashes, dashboard actions) to
// entries. No I/O here; the store writes these rows and the client decides when.
import type { CommandResult } from '../commands/router.ts'

export const ENTRY_KINDS = ['presence', 'command', 'firmware', 'ota', 'flash', 'refusal', 'admin'] as const
export type EntryKind = typeof ENTRY_KINDS[number]

export interface JournalEntry { device: string; kind: EntryKind; at: number; data: Record<string, unknown> }
/** As stored: `id` is the global insertion order (ties in `at` keep the order events came in). */
export interface StoredEntry extends JournalEntry { id: number }

/** The newest stored reading of a device, kept in memory and flushed now and then (it changes with every reading). */
export interface LastPayload { device: string; at: number; ts: number; link: string; seq: number | null; payload: string | null }

/** Entries kept per device and kind; the oldest go first. */
export type Bounds = Record<EntryKind, number>
export const DEFAULT_BOUNDS: Bounds = { presence: 500, command: 500, firmware: 50, ota: 200, flash: 50, refusal: 500, admin: 100 }

/** Stored JSON values (command args and results, payloads) are cut at these sizes: the journal is not the outbox. */
export const MAX_VALUE_CHARS = 2048
export const MAX_PAYLOAD_CHARS = 16 * 1024

/** A JSON value as stored: itself when small, else `{ truncated: "<the start of its JSON>" }`. */
export function boundedValue(v: unknown, max = MAX_VALUE_CHARS): unknown {
  if (v === undefined) return null
  let text: string
  try { text = JSON.stringify(v) ?? 'null' } catch { return { truncated: String(v).slice(0, max) } }
  return text.length <= max ? v : { truncated: text.slice(0, max) }
}

export function presenceEntry(e: { device: string; link: string; clientId: string; reason?: string }, online: boolean, at: number): JournalEntry {
  return { device: e.device, kind: 'presence', at, data: { online, link: e.link, clientId: e.clientId, ...(online ? {} : { reason: e.reason ?? null }) } }
}

export interface CommandDone { args: unknown; result: CommandResult; latencyMs: number }

/** A command result of any kind; null for an unknown device (no journal grows for names that do not exist). */
export function commandEntry(e: CommandDone, at: number): JournalEntry | null {
  const r = e.result
  if (!r.ok && r.code === 'unknown_device') return null
  const outcome = r.ok ? { ok: true, result: boundedValue(r.result) } : { ok: false, code: r.code, error: r.error.slice(0, MAX_VALUE_CHARS) }
  return { device: r.device, kind: 'command', at, data: { id: r.id, name: r.name, args: boundedValue(e.args), ...outcome, latencyMs: Math.round(e.latencyMs) } }
}

export function firmwareEntry(e: { device: string; version: string; healthy: boolean | null }, at: number): JournalEntry {
  return { device: e.device, kind: 'firmware', at, data: { version: e.version, healthy: e.healthy } }
}

/** Refusals that name a device (bad secret, ACL, decode errors...); a refusal before login names none and is skipped. */
export function refusalEntry(e: { reason: string; detail: string; device?: string; clientId?: string }, at: number): JournalEntry | null {
  if (!e.device) return null
  return { device: e.device, kind: 'refusal', at, data: { reason: e.reason, detail: e.detail.slice(0, MAX_VALUE_CHARS), ...(e.clientId ? { clientId: e.clientId } : {}) } }
}

export interface OtaProgressLike { job: number; device: string; version: string; state: string; offset: number; size: number; reason: string | null }

export function otaEntry(p: OtaProgressLike, at: number): JournalEntry {
  return { device: p.device, kind: 'ota', at, data: { job: p.job, version: p.version, state: p.state, offset: p.offset, size: p.size, reason: p.reason } }
}

export function flashEntry(device: string, f: { ok: true; port: string; board: string; firmware: string | null; bytes?: number } | { ok: false; port: string; board: string; error: string }, at: number): JournalEntry {
  return { device, kind: 'flash', at, data: { ...f } }
}

export function adminEntry(device: string, action: 'rotate-secret' | 'metadata' | 'remove' | 'ota-push' | 'ota-cancel', user: string, at: number, extra: Record<string, unknown> = {}): JournalEntry {
  return { device, kind: 'admin', at, data: { action, user, ...extra } }
}

export function boundedPayload(payload: string | null): string | null {
  return payload === null || payload.length <= MAX_PAYLOAD_CHARS ? payload : payload.slice(0, MAX_PAYLOAD_CHARS)
}
