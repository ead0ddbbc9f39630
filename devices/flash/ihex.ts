// Intel HEX -> a flat memory image. Pure: text in, bytes out, every malformed line named with its number.
// Record types: 00 data, 01 end of file, 02 extended segment address, 03 start segment (ignored: a CPU start
// address means nothing to a bootloader), 04 extended linear address, 05 start linear (ignored).

export class HexError extends Error {}

export interface HexImage {
  /** Bytes from address `base`; gaps between records are 0xFF (erased flash). */
  data: Uint8Array
  base: number
  /** Bytes that some record actually set (gaps excluded). */
  bytesSet: number
}

/** Largest image accepted: 16 MiB covers any AVR/ARM part and bounds memory on a corrupt extended address. */
const MAX_SPAN = 16 * 1024 * 1024

export function parseIntelHex(text: string): HexImage {
  const chunks: { addr: number; bytes: Uint8Array }[] = []
  let upper = 0
  let sawEof = false
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    const n = i + 1
    if (line === '') continue
    if (sawEof) throw new HexError(`line ${n}: data after the end-of-file record`)
    if (line[0] !== ':') throw new HexError(`line ${n}: a record starts with ':' (is this an Intel HEX file?)`)
    const hex = line.slice(1)
    if (hex.length < 10 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) throw new HexError(`line ${n}: not a well-formed record`)
    const rec = Buffer.from(hex, 'hex')
    const len = rec[0]!
    if (rec.length !== len + 5) throw new HexError(`line ${n}: record says ${len} data bytes but has ${rec.length - 5}`)
    let sum = 0
    for (const b of rec) sum = (sum + b) & 0xff
    if (sum !== 0) {
      const expected = (0x100 - ((sum - rec[rec.length - 1]!) & 0xff)) & 0xff
      throw new HexError(`line ${n}: checksum ${hex2(rec[rec.length - 1]!)} should be ${hex2(expected)} (file damaged?)`)
    }
    const offset = (rec[1]! << 8) | rec[2]!
    const type = rec[3]!
    const payload = rec.subarray(4, 4 + len)
    switch (type) {
      case 0x00: chunks.push({ addr: upper + offset, bytes: payload }); break
      case 0x01: sawEof = true; break
      case 0x02: if (len !== 2) throw new HexError(`line ${n}: extended segment address needs 2 bytes`); upper = ((payload[0]! << 8) | payload[1]!) * 16; break
      case 0x04: if (len !== 2) throw new HexError(`line ${n}: extended linear address needs 2 bytes`); upper = ((payload[0]! << 8) | payload[1]!) * 65536; break
      case 0x03: case 0x05: break
      default: throw new HexError(`line ${n}: unknown record type ${hex2(type)}`)
    }
  }
  if (!sawEof) throw new HexError('no end-of-file record (:00000001FF): the file is truncated')
  if (chunks.length === 0) throw new HexError('no data records: nothing to write')
  const base = Math.min(...chunks.map((c) => c.addr))
  const end = Math.max(...chunks.map((c) => c.addr + c.bytes.length))
  if (end - base > MAX_SPAN) throw new HexError(`the records span ${end - base} bytes (over ${MAX_SPAN}): a stray address record?`)
  const data = new Uint8Array(end - base).fill(0xff)
  const set = new Uint8Array(end - base)
  for (const c of chunks) {
    data.set(c.bytes, c.addr - base)
    set.fill(1, c.addr - base, c.addr - base + c.bytes.length)
  }
  return { data, base, bytesSet: set.reduce((a, b) => a + b, 0) }
}

function hex2(b: number): string { return b.toString(16).toUpperCase().padStart(2, '0') }
