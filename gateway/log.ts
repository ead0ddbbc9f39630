// Structured logs (pino) to stdout: JSON lines (journald, log shippers, the tests) unless stdout is a terminal, where
// they are pretty, human lines with local times. Also the few helpers terminal output shares (local times, tables).
import { createRequire } from 'node:module'
import { pino, type Logger, type DestinationStream } from 'pino'

export type { Logger }

export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

export interface LoggerOptions {
  name?: string
  /** auto (the default): pretty when stdout is a terminal, JSON lines otherwise. */
  format?: LogFormat
  /** Where the lines go (default stdout). */
  out?: { write(s: string): unknown }
  /** Colour pretty lines (default: stdout is a TTY and NO_COLOR is not set). */
  color?: boolean
}

/** Whether a logger with `format` writes pretty lines, given whether stdout is a terminal. */
export function isPretty(format: LogFormat | undefined, isTTY = process.stdout.isTTY === true): boolean {
  return format === 'pretty' || ((format ?? 'auto') === 'auto' && isTTY)
}

export function createLogger(level: string, opts: LoggerOptions = {}): Logger {
  const o = { name: opts.name ?? 'edgeway', level, base: { pid: process.pid } }
  if (!isPretty(opts.format)) return opts.out ? pino(o, opts.out as DestinationStream) : pino(o)
  const out = opts.out ?? pino.destination({ dest: 1, sync: true })
  return pino(o, prettyStream(out, opts.color ?? (process.stdout.isTTY === true && !process.env.NO_COLOR)))
}

/**
 * pino-pretty's formatter on a synchronous write, in this process: no transport worker thread (its own event loop
 * and heap would cost RSS on a small board), and a line logged just before process.exit is not lost. Loaded only
 * when used.
 */
export function prettyStream(out: { write(s: string): unknown }, color: boolean): DestinationStream {
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty')
  const opts = { colorize: color, translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l', ignore: 'pid,hostname,name', singleLine: true }
  // An Error object under err keeps its stack on lines of its own; err as a string (most lines) stays on the line.
  const withStack = prettyFactory(opts)
  const inline = prettyFactory({ ...opts, errorLikeObjectKeys: [] })
  return {
    write: (line: string) => {
      let o: Record<string, unknown>
      try { o = JSON.parse(line) as Record<string, unknown> } catch { out.write(line); return }
      out.write((o.err !== null && typeof o.err === 'object' ? withStack : inline)(o))
    },
  }
}

const pad2 = (n: number): string => String(n).padStart(2, '0')

/** Epoch ms as a local time for terminal output, e.g. 2026-12-01 14:03 (with `seconds`: 14:03:27); null -> "never". */
export function localTime(ms: number | null | undefined, seconds = false): string {
  if (ms === null || ms === undefined) return 'never'
  const d = new Date(ms)
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}${seconds ? `:${pad2(d.getSeconds())}` : ''}`
}

/** A plain table for terminal output: a header row, columns aligned with two spaces, no quotes, no trailing blanks. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => headers.map((_h, i) => (cells[i] ?? '').padEnd(widths[i]!)).join('  ').trimEnd() + '\n'
  return line(headers) + rows.map(line).join('')
}

/**
 * A URL as it may be logged or shown: the password of `scheme://user:password@host` becomes `***`. MQTT.js takes
 * credentials from the URL too, so a config may carry them there; logs and health must not.
 */
export function redactUrl(url: string): string {
  let u: URL
  try { u = new URL(url) } catch { return url.replace(/\/\/[^/@]*@/, '//***@') }
  if (u.password === '') return url
  u.password = '***'
  return u.toString()
}
