// Structured logs (pino) to stdout: journald keeps them as JSON lines.
import { pino, type Logger } from 'pino'

export type { Logger }

export function createLogger(level: string, name = 'edgeway'): Logger {
  return pino({ name, level, base: { pid: process.pid } })
}
