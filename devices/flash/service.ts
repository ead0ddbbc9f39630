// The running gateway's side of `edgeway flash`: the control method "flash" pauses the serial link that owns the
// port (if any), flashes through the bootloader streaming progress, resumes the link, and waits for the board's
// HELLO so the answer (and the registry) carries the new firmware version.
import { realpathSync } from 'node:fs'
import type { Logger } from 'pino'
import { z } from 'zod'
import { boardProfile } from './boards.ts'
import { flashBoard, type FlashResult } from './flasher.ts'
import { parseIntelHex } from './ihex.ts'
import type { ControlHandler } from '../../gateway/control/server.ts'

export const FLASH_METHOD = 'flash'

export const FlashParams = z.object({
  port: z.string().min(1),
  board: z.string().min(1),
  baud: z.number().int().positive().optional(),
  /** The Intel HEX text (the CLI reads the file: the gateway may not see the CLI's working directory). */
  hex: z.string().min(1),
}).strict()
export type FlashParams = z.infer<typeof FlashParams>

export interface FlashAnswer extends FlashResult {
  device: string | null
  /** The version the board said in its first HELLO after the flash (null: no serial link, or no HELLO in time). */
  firmware: string | null
}

export interface PausableLink {
  config: { device: string; path: string }
  /** Where the link's port really is, when that differs from config.path (a port found by USB identity). */
  readonly devicePath?: string | null
  pause(reason: string): Promise<void>
  resume(): void
  status(): { firmware: string | null; hellos: number }
}

export interface FlashServiceDeps {
  links: () => readonly PausableLink[]
  log: Logger
  /** How long to wait for the board's HELLO after the flash. */
  helloTimeoutMs?: number
}

function real(p: string): string { try { return realpathSync(p) } catch { return p } }

export function flashHandler(d: FlashServiceDeps): ControlHandler {
  const busy = new Set<string>()
  return async (params, progress) => {
    const parsed = FlashParams.safeParse(params)
    if (!parsed.success) throw new Error(`bad flash request: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'params'}: ${i.message}`).join('; ')}`)
    const p = parsed.data
    const board = boardProfile(p.board)
    const image = parseIntelHex(p.hex)
    const key = real(p.port)
    // the configured path may be a by-id symlink and the CLI given its target, or the other way round
    const link = d.links().find((l) => l.config.path === p.port || real(l.config.path) === key || (l.devicePath != null && real(l.devicePath) === key))
    if (busy.has(key)) throw new Error(`${p.port} is being flashed already`)
    busy.add(key)
    const log = d.log.child({ port: p.port, board: board.name, device: link?.config.device })
    try {
      const hellos = link?.status().hellos ?? 0
      if (link) await link.pause('flashing')
      progress({ phase: 'paused', device: link?.config.device ?? null })
      log.info({ bytes: image.data.length }, 'flashing through the bootloader')
      let result: FlashResult
      try {
        result = await flashBoard({ port: p.port, board, baud: p.baud ?? board.baud, image, onProgress: progress })
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'flash failed')
        throw err
      } finally {
        link?.resume()
      }
      // port and board are bindings of `log` already
      const { port: _port, board: _board, ...figures } = result
      log.info(figures, 'flashed and verified')
      let firmware: string | null = null
      if (link) {
        progress({ phase: 'restart' })
        const deadline = Date.now() + (d.helloTimeoutMs ?? 15000)
        while (Date.now() < deadline && link.status().hellos === hellos) await new Promise((r) => setTimeout(r, 50))
        firmware = link.status().hellos !== hellos ? link.status().firmware : null
        if (firmware === null) log.warn('no HELLO from the board after the flash: is the new firmware an edgeway sensor node?')
      }
      const answer: FlashAnswer = { ...result, device: link?.config.device ?? null, firmware }
      return answer
    } finally {
      busy.delete(key)
    }
  }
}
