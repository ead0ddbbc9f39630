// The running gateway's answers on its control socket (`edgeway status`, `flash`, `ota push|cancel`, and the
// revocations `device|client remove|rotate-secret` ask for): each handler is a thin call into the service that
// owns the work; flashes and OTA pushes also go to the device journal.
import type { Logger } from 'pino'
import type { ControlHandler } from '../gateway/control/server.ts'
import type { DeviceJournal } from '../gateway/journal/journal.ts'
import { flashEntry } from '../gateway/journal/entries.ts'
import type { OtaService } from '../gateway/ota/service.ts'
import { FLASH_METHOD, flashHandler, type PausableLink } from '../devices/flash/service.ts'

export interface ControlDeps {
  status: () => Promise<unknown>
  /** Every board link (serial and Firmata): the flasher pauses the one on the port it flashes. */
  boards: () => readonly PausableLink[]
  journal: DeviceJournal
  ota: OtaService
  revoke: (kind: 'device' | 'client', id: string) => Promise<unknown>
  log: Logger
}

export function registerControlHandlers(control: { handle(method: string, handler: ControlHandler): void }, d: ControlDeps): void {
  control.handle('status', async () => d.status())
  const flash = flashHandler({ links: d.boards, log: d.log.child({ component: 'flash' }) })
  control.handle(FLASH_METHOD, async (params, progress) => {
    const p = params as { port?: unknown; board?: unknown } | null
    const port = typeof p?.port === 'string' ? p.port : '?'
    const board = typeof p?.board === 'string' ? p.board : '?'
    try {
      const r = await flash(params, progress) as { device?: string | null; firmware?: string | null }
      if (r.device) d.journal.record(flashEntry(r.device, { ok: true, port, board, firmware: r.firmware ?? null }, Date.now()))
      return r
    } catch (err) {
      const dev = d.boards().find((l) => l.config.path === port)?.config.device
      if (dev) d.journal.record(flashEntry(dev, { ok: false, port, board, error: (err as Error).message }, Date.now()))
      throw err
    }
  })
  control.handle('ota.push', async (params, progress) => {
    const final = await d.ota.push(params, (pr) => { d.journal.ota(pr); progress(pr) })
    d.journal.ota(final)
    return final
  })
  control.handle('ota.cancel', async (params) => d.ota.cancel(params))
  control.handle('access.revoke', async (params) => {
    const p = params as { kind?: unknown; id?: unknown } | null
    if ((p?.kind !== 'device' && p?.kind !== 'client') || typeof p.id !== 'string') throw new Error('access.revoke needs { kind: "device" | "client", id }')
    return d.revoke(p.kind, p.id)
  })
}
