// Flashes a board through its serial bootloader: open the port (devices/serial/port.ts), reset the board into the
// bootloader, sync, check the chip signature against the board profile, write, read back and verify.
import { openSerialPort, type OpenPort, type PortHandle } from '../serial/port.ts'
import type { BoardProfile } from './boards.ts'
import { CHIPS } from './boards.ts'
import type { HexImage } from './ihex.ts'
import { Stk500, Stk500Error, signatureHex, type ByteTransport, type Progress } from './stk500.ts'

export class FlashError extends Error {
  constructor(message: string, readonly code: 'no_sync' | 'wrong_board' | 'too_large' | 'verify' | 'port' | 'protocol') { super(message) }
}

export interface FlashRequest {
  port: string
  board: BoardProfile
  baud: number
  image: HexImage
  onProgress?: (p: Progress) => void
  /** Reset and sync attempts (GET_SYNC every 200 ms). */
  syncAttempts?: number
  openPort?: OpenPort
}

export interface FlashResult {
  port: string
  board: string
  signature: string
  bytes: number
  pages: number
  syncMs: number
  writeMs: number
  verifyMs: number
  totalMs: number
  /** Page operations repeated after a lost or late answer. */
  retries: number
}

/** Bytes from the port, read by exact counts with a deadline. */
class PortQueue implements ByteTransport {
  private buf = Buffer.alloc(0)
  private wake: (() => void) | null = null
  lost: Error | null = null
  port: PortHandle | null = null

  push(chunk: Buffer): void { this.buf = Buffer.concat([this.buf, chunk]); this.wake?.() }
  fail(err: Error): void { this.lost = err; this.wake?.() }
  discard(): void { this.buf = Buffer.alloc(0) }

  async write(data: Uint8Array): Promise<void> {
    if (this.lost || !this.port) throw new FlashError(`serial port lost: ${this.lost?.message ?? 'not open'}`, 'port')
    await this.port.write(data)
  }

  async read(n: number, timeoutMs: number): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs
    while (this.buf.length < n) {
      if (this.lost) throw new FlashError(`serial port lost: ${this.lost.message}`, 'port')
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('timeout')
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.wake = () => { clearTimeout(t); resolve() }
      })
      this.wake = null
    }
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export async function flashBoard(req: FlashRequest): Promise<FlashResult> {
  const { board, image } = req
  const end = image.base + image.data.length
  if (end > board.appBytes) throw new FlashError(`the image ends at ${end} bytes but the ${board.name} has room for ${board.appBytes} (the bootloader sits above): wrong --board or wrong file?`, 'too_large')
  const started = performance.now()
  const q = new PortQueue()
  const open = req.openPort ?? openSerialPort
  try {
    q.port = await open(req.port, req.baud, { data: (c) => q.push(c), lost: (e) => q.fail(e) })
  } catch (err) {
    const msg = (err as Error).message
    const busy = /lock|busy/i.test(msg) ? ' (another program holds the port: a gateway with another data dir, a serial monitor?)' : ''
    throw new FlashError(`cannot open ${req.port}: ${msg}${busy}`, 'port')
  }
  let port = q.port
  try {
    // The Arduino auto-reset: DTR (and RTS, for boards wired to it) low then high pulls RESET through a capacitor.
    try {
      await port.setSignals({ dtr: false, rts: false })
      await sleep(250)
      await port.setSignals({ dtr: true, rts: true })
      await sleep(50)
    } catch {
      // No modem lines (a pty, an adapter without DTR): close and reopen, which is the DTR edge on a port that
      // has one and the reset of a simulated board, which watches for the port being opened.
      await port.close()
      q.port = null
      await sleep(250)
      try {
        q.port = port = await open(req.port, req.baud, { data: (c) => q.push(c), lost: (e) => q.fail(e) })
      } catch (err) {
        throw new FlashError(`cannot reopen ${req.port}: ${(err as Error).message}`, 'port')
      }
    }
    const stk = new Stk500(q)
    try {
      await stk.sync(req.syncAttempts ?? 15)
    } catch (err) {
      if (err instanceof Stk500Error && err.code === 'no_sync') {
        throw new FlashError(`no answer from a bootloader on ${req.port} at ${req.baud} baud: check --baud (the ${board.name}'s bootloader uses ${board.baud}), that the board is a ${board.description}, and that it resets into its bootloader (DTR)`, 'no_sync')
      }
      throw err
    }
    const syncMs = performance.now() - started
    const sig = signatureHex(await stk.signature())
    if (sig !== board.signature) {
      const chip = CHIPS[sig] ?? 'an unknown chip'
      throw new FlashError(`wrong board: ${req.port} has ${chip} (signature ${sig}) but --board ${board.name} expects ${board.chip} (${board.signature}); nothing was written`, 'wrong_board')
    }
    await stk.enterProgMode()
    let writeDone = 0
    try {
      await stk.program(image.data, image.base, board.pageSize, (p) => {
        if (p.phase === 'verify' && writeDone === 0) writeDone = performance.now()
        req.onProgress?.(p)
      })
    } catch (err) {
      if (err instanceof Stk500Error) throw new FlashError(err.message, err.code === 'verify' ? 'verify' : 'protocol')
      throw err
    }
    const verified = performance.now()
    await stk.leaveProgMode()
    const pages = Math.ceil((end - (image.base - (image.base % board.pageSize))) / board.pageSize)
    return {
      port: req.port, board: board.name, signature: sig, bytes: image.data.length, pages,
      syncMs: Math.round(syncMs), writeMs: Math.round((writeDone || verified) - syncMs - started), verifyMs: Math.round(verified - (writeDone || verified)),
      totalMs: Math.round(performance.now() - started), retries: stk.retries,
    }
  } catch (err) {
    if (err instanceof Stk500Error) throw new FlashError(err.message, 'protocol')
    throw err
  } finally {
    await q.port?.close()
  }
}
