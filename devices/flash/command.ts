// `edgeway flash`: checks the file and board here, then lets the running gateway flash (it owns the serial link and
// must release the port) or, with no gateway running, flashes directly.
import { readFileSync } from 'node:fs'
import { controlCall, GatewayNotRunning } from '../../gateway/control/client.ts'
import { boardProfile, type BoardProfile } from './boards.ts'
import { flashBoard, type FlashResult } from './flasher.ts'
import { HexError, parseIntelHex, type HexImage } from './ihex.ts'
import { progressDisplay } from '../../gateway/progress.ts'
import { FLASH_METHOD, type FlashAnswer } from './service.ts'
import type { Progress } from './stk500.ts'

export interface FlashCommand { port: string; board: string; baud?: number; file: string; dataDir: string }

const isProgress = (v: unknown): v is Progress => typeof v === 'object' && v !== null && 'total' in v && 'done' in v

/** Resolves with the exit code: 0 flashed and verified, 1 the flash failed, 2 bad arguments or file. */
export async function runFlash(c: FlashCommand, out = process.stdout, err = process.stderr): Promise<number> {
  let board: BoardProfile
  let text: string
  let image: HexImage
  try {
    board = boardProfile(c.board)
    text = readFileSync(c.file, 'utf8')
    image = parseIntelHex(text)
  } catch (e) {
    const msg = e instanceof HexError ? `${c.file} is not a valid Intel HEX file: ${e.message}` : (e as Error).message
    err.write(`edgeway flash: ${msg}\n`)
    return 2
  }
  if (c.baud !== undefined && (!Number.isInteger(c.baud) || c.baud <= 0)) { err.write(`edgeway flash: --baud must be a positive integer\n`); return 2 }
  const baud = c.baud ?? board.baud
  const display = progressDisplay('{step} [{bar}] {percentage}% | {value}/{total} pages', (step, _v, total) => `${step.trim()} ${total} pages`, err)
  const bar = { update: (p: Progress): void => display.update(p.done, p.total, p.phase === 'write' ? 'writing  ' : 'verifying'), stop: (): void => display.stop() }
  const onProgress = (p: unknown): void => {
    if (isProgress(p)) bar.update(p)
    else if (typeof p === 'object' && p !== null && (p as { phase?: string }).phase === 'paused') {
      const device = (p as { device: string | null }).device
      err.write(device ? `gateway: serial link of ${device} paused for the flash\n` : 'gateway: no serial link on this port; flashing\n')
    } else if (typeof p === 'object' && p !== null && (p as { phase?: string }).phase === 'restart') {
      bar.stop()
      err.write('gateway: link resumed, waiting for the board to say hello\n')
    }
  }
  let result: FlashResult | FlashAnswer
  let via = 'directly (no gateway running)'
  try {
    try {
      result = await controlCall(c.dataDir, FLASH_METHOD, { port: c.port, board: board.name, baud, hex: text }, onProgress) as FlashAnswer
      via = 'through the running gateway'
    } catch (e) {
      if (!(e instanceof GatewayNotRunning)) throw e
      result = await flashBoard({ port: c.port, board, baud, image, onProgress: (p) => bar.update(p) })
    }
  } catch (e) {
    bar.stop()
    err.write(`edgeway flash: ${(e as Error).message}\n`)
    return 1
  } finally {
    bar.stop()
  }
  const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`
  out.write(`flashed ${result.bytes} bytes (${result.pages} pages) to ${result.port} ${via}: ${board.chip} signature ${result.signature}, verified by read-back\n` +
    `time ${s(result.totalMs)} (sync ${s(result.syncMs)}, write ${s(result.writeMs)}, verify ${s(result.verifyMs)}) at ${baud} baud${result.retries ? `, ${result.retries} page operation(s) repeated after a lost answer` : ''}\n`)
  if ('device' in result && result.device) {
    out.write(result.firmware ? `${result.device} now reports firmware "${result.firmware}"\n` : `${result.device}: no hello from the board yet (not an edgeway sensor node?)\n`)
  }
  return 0
}
