// STK500 version 1, the protocol of the Arduino serial bootloaders (optiboot, ATmegaBOOT): command packets,
// response checks, and a programmer that drives them over any byte transport. No I/O of its own: the transport
// (flasher.ts) owns the port, so this file is unit-tested with bytes.

export const Resp = { OK: 0x10, FAILED: 0x11, INSYNC: 0x14, NOSYNC: 0x15 } as const
export const Cmd = {
  GET_SYNC: 0x30, GET_PARAMETER: 0x41, ENTER_PROGMODE: 0x50, LEAVE_PROGMODE: 0x51, LOAD_ADDRESS: 0x55,
  PROG_PAGE: 0x64, READ_PAGE: 0x74, READ_SIGN: 0x75,
} as const
const EOP = 0x20 // Sync_CRC_EOP: ends every command

export class Stk500Error extends Error {
  constructor(message: string, readonly code: 'no_sync' | 'protocol' | 'signature' | 'verify' | 'timeout') { super(message) }
}

export const packets = {
  getSync: (): Uint8Array => Uint8Array.of(Cmd.GET_SYNC, EOP),
  readSignature: (): Uint8Array => Uint8Array.of(Cmd.READ_SIGN, EOP),
  enterProgMode: (): Uint8Array => Uint8Array.of(Cmd.ENTER_PROGMODE, EOP),
  leaveProgMode: (): Uint8Array => Uint8Array.of(Cmd.LEAVE_PROGMODE, EOP),
  getParameter: (param: number): Uint8Array => Uint8Array.of(Cmd.GET_PARAMETER, param, EOP),
  /** Flash addresses are in 16-bit words, little endian (the one little-endian field of the protocol). */
  loadAddress: (byteAddr: number): Uint8Array => {
    if (byteAddr % 2 !== 0 || byteAddr < 0 || byteAddr >= 0x20000) throw new RangeError(`flash address ${byteAddr} must be even and below 128 KiB`)
    const w = byteAddr >> 1
    return Uint8Array.of(Cmd.LOAD_ADDRESS, w & 0xff, w >> 8, EOP)
  },
  /** Length big endian, memory type 'F' (flash). */
  progPage: (data: Uint8Array): Uint8Array => {
    if (data.length === 0 || data.length > 256) throw new RangeError(`page of ${data.length} bytes (1..256)`)
    const p = new Uint8Array(data.length + 5)
    p.set([Cmd.PROG_PAGE, data.length >> 8, data.length & 0xff, 0x46])
    p.set(data, 4)
    p[p.length - 1] = EOP
    return p
  },
  readPage: (length: number): Uint8Array => Uint8Array.of(Cmd.READ_PAGE, length >> 8, length & 0xff, 0x46, EOP),
}

/** Checks a complete response: INSYNC, `body` bytes, OK. Returns the body. */
export function parseResponse(bytes: Uint8Array, body: number, what: string): Uint8Array {
  if (bytes[0] === Resp.NOSYNC) throw new Stk500Error(`${what}: the bootloader answered NOSYNC (out of step)`, 'protocol')
  if (bytes[0] !== Resp.INSYNC) throw new Stk500Error(`${what}: expected INSYNC (0x14), got 0x${hex(bytes[0] ?? 0)}`, 'protocol')
  const last = bytes[body + 1]
  if (last === Resp.FAILED) throw new Stk500Error(`${what}: the bootloader answered FAILED`, 'protocol')
  if (last !== Resp.OK) throw new Stk500Error(`${what}: expected OK (0x10) after ${body} bytes, got 0x${hex(last ?? 0)}`, 'protocol')
  return bytes.subarray(1, body + 1)
}

export interface ByteTransport {
  write(data: Uint8Array): Promise<void>
  /** Exactly n bytes, or rejects after timeoutMs. */
  read(n: number, timeoutMs: number): Promise<Uint8Array>
  /** Forgets bytes received so far (line noise, an app's output before the reset). */
  discard(): void
}

export interface Progress { phase: 'write' | 'verify'; done: number; total: number }

export class Stk500 {
  /** Page operations recovered after a lost or late answer (resync, then the same page again). */
  retries = 0

  constructor(private readonly t: ByteTransport, private readonly timeoutMs = 1000, private readonly maxRetries = 3) {}

  /**
   * A page operation with recovery: on a machine that stalls (or a noisy line) an answer can come late and put
   * every later answer out of step. Writing or reading a page again is harmless, so resync and repeat it.
   */
  private async withRetry<T>(what: string, op: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try { return await op() } catch (err) {
        if (!(err instanceof Stk500Error) || (err.code !== 'timeout' && err.code !== 'protocol') || attempt >= this.maxRetries) throw err
        this.retries++
        await this.sync(5, this.timeoutMs).catch(() => { throw new Stk500Error(`${what}: lost the bootloader (${err.message}) and could not resync`, 'no_sync') })
      }
    }
  }

  private async command(packet: Uint8Array, body: number, what: string, timeoutMs = this.timeoutMs): Promise<Uint8Array> {
    await this.t.write(packet)
    let bytes: Uint8Array
    try { bytes = await this.t.read(body + 2, timeoutMs) } catch {
      throw new Stk500Error(`${what}: no answer within ${timeoutMs} ms`, 'timeout')
    }
    return parseResponse(bytes, body, what)
  }

  /**
   * GET_SYNC until the bootloader answers; a wrong baud rate or an app that is not a bootloader never does. Tries
   * sent while the bootloader was still starting may all be answered at once: after the first answer, let the line
   * go quiet, drop the stragglers and confirm with one more GET_SYNC, so later answers line up with their commands.
   */
  async sync(attempts: number, perTryMs = 200, quietMs = 60): Promise<number> {
    for (let i = 1; i <= attempts; i++) {
      this.t.discard()
      await this.t.write(packets.getSync())
      try {
        const r = await this.t.read(2, perTryMs)
        if (r[0] !== Resp.INSYNC || r[1] !== Resp.OK) continue
        await new Promise((res) => setTimeout(res, quietMs))
        this.t.discard()
        await this.t.write(packets.getSync())
        const c = await this.t.read(2, perTryMs)
        if (c[0] === Resp.INSYNC && c[1] === Resp.OK) return i
      } catch { /* silence: try again */ }
    }
    throw new Stk500Error(`no sync with the bootloader after ${attempts} attempts`, 'no_sync')
  }

  async signature(): Promise<Uint8Array> { return Uint8Array.from(await this.command(packets.readSignature(), 3, 'read signature')) }
  async enterProgMode(): Promise<void> { await this.command(packets.enterProgMode(), 0, 'enter programming mode') }
  async leaveProgMode(): Promise<void> { await this.command(packets.leaveProgMode(), 0, 'leave programming mode') }

  async writePage(addr: number, data: Uint8Array): Promise<void> {
    await this.withRetry(`write page at 0x${addr.toString(16)}`, async () => {
      await this.command(packets.loadAddress(addr), 0, `load address 0x${addr.toString(16)}`)
      // a page write erases and programs (~4.5 ms on the chip) before the answer
      await this.command(packets.progPage(data), 0, `write page at 0x${addr.toString(16)}`, this.timeoutMs + 100)
    })
  }

  async readPage(addr: number, length: number): Promise<Uint8Array> {
    return await this.withRetry(`read page at 0x${addr.toString(16)}`, async () => {
      await this.command(packets.loadAddress(addr), 0, `load address 0x${addr.toString(16)}`)
      return Uint8Array.from(await this.command(packets.readPage(length), length, `read page at 0x${addr.toString(16)}`))
    })
  }

  /** Writes `image` (which starts at flash address `base`) page by page, then reads every page back and compares. */
  async program(image: Uint8Array, base: number, pageSize: number, onProgress: (p: Progress) => void = () => undefined): Promise<void> {
    const first = base - (base % pageSize)
    const pages: number[] = []
    for (let a = first; a < base + image.length; a += pageSize) pages.push(a)
    // A page the image covers only partly keeps 0xFF (erased) elsewhere: the bootloader rewrites whole pages.
    const page = (a: number): Uint8Array => {
      const p = new Uint8Array(pageSize).fill(0xff)
      for (let k = 0; k < pageSize; k++) {
        const i = a + k - base
        if (i >= 0 && i < image.length) p[k] = image[i]!
      }
      return p
    }
    for (let i = 0; i < pages.length; i++) {
      await this.writePage(pages[i]!, page(pages[i]!))
      onProgress({ phase: 'write', done: i + 1, total: pages.length })
    }
    for (let i = 0; i < pages.length; i++) {
      const a = pages[i]!
      const want = page(a)
      const got = await this.readPage(a, pageSize)
      const at = want.findIndex((b, k) => got[k] !== b)
      if (at >= 0) throw new Stk500Error(`verify failed at 0x${(a + at).toString(16)}: wrote 0x${hex(want[at]!)}, read back 0x${hex(got[at]!)}`, 'verify')
      onProgress({ phase: 'verify', done: i + 1, total: pages.length })
    }
  }
}

export function hex(b: number): string { return b.toString(16).padStart(2, '0') }
export function signatureHex(s: Uint8Array): string { return Array.from(s, hex).join('') }
