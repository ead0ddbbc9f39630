// The flash progress display: a cli-progress bar on a terminal, one line per phase otherwise (logs, CI).
import cliProgress from 'cli-progress'
import type { Progress } from './stk500.ts'

export function progressDisplay(stream: NodeJS.WriteStream = process.stderr): { update(p: Progress): void; stop(): void } {
  if (!stream.isTTY) {
    let phase = ''
    return {
      update(p) { if (p.phase !== phase) { phase = p.phase; stream.write(`${p.phase === 'write' ? 'writing' : 'verifying'} ${p.total} pages\n`) } },
      stop() { /* nothing drawn */ },
    }
  }
  const bar = new cliProgress.SingleBar({ stream, format: '{phase} [{bar}] {percentage}% | {value}/{total} pages', hideCursor: true }, cliProgress.Presets.shades_classic)
  let started = false
  return {
    update(p) {
      const phase = p.phase === 'write' ? 'writing  ' : 'verifying'
      if (!started) { bar.start(p.total, p.done, { phase }); started = true } else bar.update(p.done, { phase })
    },
    stop() { if (started) bar.stop() },
  }
}
