// The one cli-progress importer: a bar on a terminal; without one (logs, CI, pipes) a line each time the step changes.
import { createRequire } from 'node:module'
import type CliProgress from 'cli-progress'

// Loaded on first use: the CLI module graph is also the running gateway's, which never draws a bar.
const load = (): typeof CliProgress => createRequire(import.meta.url)('cli-progress') as typeof CliProgress

export interface ProgressDisplay {
  /** `step` names the current phase or state ({step} in the format); `fields` fill the format's other tokens. */
  update(value: number, total: number, step: string, fields?: Record<string, string>): void
  stop(): void
}

/**
 * `format` is a cli-progress format ({bar}, {percentage}, {value}, {total}, {step} and the caller's fields);
 * `describe` makes the line printed per step when the stream is not a terminal.
 */
export function progressDisplay(format: string, describe: (step: string, value: number, total: number) => string, stream: NodeJS.WriteStream = process.stderr): ProgressDisplay {
  if (!stream.isTTY) {
    let last: string | null = null
    return {
      update(value, total, step) { if (step !== last) { last = step; stream.write(describe(step, value, total) + '\n') } },
      stop() { /* nothing drawn */ },
    }
  }
  const cliProgress = load()
  const bar = new cliProgress.SingleBar({ stream, format, hideCursor: true }, cliProgress.Presets.shades_classic)
  let started = false
  return {
    update(value, total, step, fields = {}) {
      const payload = { step, ...fields }
      if (!started) { bar.start(total, value, payload); started = true; return }
      bar.setTotal(total)
      bar.update(value, payload)
    },
    stop() { if (started) bar.stop() },
  }
}
