// Pure parts of flashing: Intel HEX parsing (with its errors) and STK500v1 packets and responses, with bytes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { HexError, parseIntelHex } from '../devices/flash/ihex.ts'
import { Stk500, Stk500Error, packets, parseResponse, type ByteTransport } from '../devices/flash/stk500.ts'
import { boardProfile } from '../devices/flash/boards.ts'

/** One Intel HEX data record (checksum computed). */
function rec(type: number, addr: number, data: number[]): string {
  const bytes = [data.length, addr >> 8, addr & 0xff, type, ...data]
  const sum = (0x100 - (bytes.reduce((a, b) => a + b, 0) & 0xff)) & 0xff
  return ':' + [...bytes, sum].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join('')
}

test('Intel HEX: data records, gaps filled with 0xFF, extended linear address, CRLF', () => {
  const img = parseIntelHex([rec(0, 0, [1, 2, 3, 4]), rec(0, 8, [9]), ':00000001FF', ''].join('\r\n'))
  assert.equal(img.base, 0)
  assert.deepEqual([...img.data], [1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 9])
  assert.equal(img.bytesSet, 5)
  const hi = parseIntelHex([rec(4, 0, [0x00, 0x01]), rec(0, 0x10, [0xaa]), ':00000001FF'].join('\n'))
  assert.equal(hi.base, 0x10010)
  // a real file from avr-objcopy (first line of Debian's bootloader) parses too
  assert.equal(parseIntelHex(':107800000C94343C0C94513C0C94513C0C94513CE1\n:00000001FF\n').base, 0x7800)
})

test('Intel HEX: damaged files are refused with the line and the reason', () => {
  const good = rec(0, 0, [1, 2, 3, 4])
  const badSum = good.slice(0, -2) + '00'
  assert.throws(() => parseIntelHex([rec(0, 0, [0]), badSum, ':00000001FF'].join('\n')), (e: Error) => e instanceof HexError && /line 2: checksum 00 should be/.test(e.message))
  assert.throws(() => parseIntelHex(good + '\n'), /no end-of-file record/)
  assert.throws(() => parseIntelHex('hello world\n:00000001FF'), /line 1: a record starts with ':'/)
  assert.throws(() => parseIntelHex(':0400000001\n:00000001FF'), /line 1: record says 4 data bytes but has 0/)
  assert.throws(() => parseIntelHex(':zz\n'), /line 1: not a well-formed record/)
  assert.throws(() => parseIntelHex(':00000001FF\n' + good), /line 2: data after the end-of-file record/)
  assert.throws(() => parseIntelHex(':00000001FF\n'), /no data records/)
  assert.throws(() => parseIntelHex([rec(7, 0, []), ':00000001FF'].join('\n')), /unknown record type 07/)
})

test('STK500v1 packets: bytes as the bootloaders expect them', () => {
  assert.deepEqual([...packets.getSync()], [0x30, 0x20])
  assert.deepEqual([...packets.readSignature()], [0x75, 0x20])
  assert.deepEqual([...packets.loadAddress(0x1234 * 2)], [0x55, 0x34, 0x12, 0x20], 'word address, little endian')
  assert.deepEqual([...packets.progPage(Uint8Array.of(7, 8))], [0x64, 0x00, 0x02, 0x46, 7, 8, 0x20], 'length big endian, F = flash')
  assert.deepEqual([...packets.readPage(256)], [0x74, 0x01, 0x00, 0x46, 0x20])
  assert.throws(() => packets.loadAddress(3), /even/)
  assert.deepEqual([...parseResponse(Uint8Array.of(0x14, 0x1e, 0x95, 0x0f, 0x10), 3, 'sig')], [0x1e, 0x95, 0x0f])
  assert.throws(() => parseResponse(Uint8Array.of(0x15, 0x10), 0, 'x'), /NOSYNC/)
  assert.throws(() => parseResponse(Uint8Array.of(0x14, 0x11), 0, 'x'), /FAILED/)
  assert.throws(() => parseResponse(Uint8Array.of(0x14, 0x00, 0x00), 0, 'x'), /expected OK/)
  assert.throws(() => boardProfile('mega'), /unknown board "mega" \(known: uno, nano, diecimila\)/)
})

/**
 * A scripted line: records what the programmer writes and answers from a byte script. Only for what the real
 * bootloader cannot be made to do (a page that reads back wrong); test/flash.test.ts runs the real one.
 */
function scripted(answer: (cmd: Uint8Array) => number[]): ByteTransport & { sent: number[][] } {
  let buf: number[] = []
  const sent: number[][] = []
  return {
    sent,
    async write(d) { sent.push([...d]); buf.push(...answer(d)) },
    async read(n) { if (buf.length < n) throw new Error('timeout'); const r = buf.slice(0, n); buf = buf.slice(n); return Uint8Array.from(r) },
    discard() { buf = [] },
  }
}

test('STK500v1 programmer: sync drops straggling answers, pages go out in order, read-back catches a bad byte', async () => {
  const flash = new Uint8Array(512).fill(0xff)
  let addr = 0
  let syncs = 0
  const t = scripted((c) => {
    if (c[0] === 0x30) return ++syncs === 1 ? [] : [0x14, 0x10, 0x14, 0x10].slice(0, syncs === 2 ? 4 : 2) // 1st lost, 2nd answered twice
    if (c[0] === 0x55) { addr = (c[1]! | (c[2]! << 8)) * 2; return [0x14, 0x10] }
    if (c[0] === 0x64) { flash.set(c.subarray(4, c.length - 1), addr); if (addr === 128) flash[130] = 0x00; return [0x14, 0x10] }
    if (c[0] === 0x74) { const n = (c[1]! << 8) | c[2]!; return [0x14, ...flash.subarray(addr, addr + n), 0x10] }
    return [0x14, 0x10]
  })
  const stk = new Stk500(t)
  assert.equal(await stk.sync(5), 2)
  const image = Uint8Array.from({ length: 200 }, (_v, i) => i)
  const seen: string[] = []
  await assert.rejects(stk.program(image, 0, 128, (p) => seen.push(`${p.phase}${p.done}`)),
    (e: Error) => e instanceof Stk500Error && e.code === 'verify' && /verify failed at 0x82: wrote 0x82, read back 0x00/.test(e.message))
  assert.deepEqual(seen, ['write1', 'write2', 'verify1'])
  const pages = t.sent.filter((s) => s[0] === 0x64)
  assert.equal(pages.length, 2)
  assert.deepEqual(pages[1]!.slice(4, 4 + 72), [...image.subarray(128)], 'second page carries the rest')
  assert.ok(pages[1]!.slice(4 + 72, -1).every((b) => b === 0xff), 'the tail of the last page is erased flash')
  const silent = new Stk500(scripted(() => []))
  await assert.rejects(silent.sync(3, 10), (e: Error) => e instanceof Stk500Error && e.code === 'no_sync')
})

test('STK500v1 programmer: a lost answer is recovered by resync and the same page again', async () => {
  const flash = new Uint8Array(256).fill(0xff)
  let addr = 0
  let dropped = false
  const t = scripted((c) => {
    if (c[0] === 0x30) return [0x14, 0x10]
    if (c[0] === 0x55) { addr = (c[1]! | (c[2]! << 8)) * 2; return [0x14, 0x10] }
    if (c[0] === 0x64) {
      flash.set(c.subarray(4, c.length - 1), addr)
      if (addr === 128 && !dropped) { dropped = true; return [] } // written, but the answer never arrives
      return [0x14, 0x10]
    }
    if (c[0] === 0x74) { const n = (c[1]! << 8) | c[2]!; return [0x14, ...flash.subarray(addr, addr + n), 0x10] }
    return [0x14, 0x10]
  })
  const stk = new Stk500(t, 20)
  const image = Uint8Array.from({ length: 256 }, (_v, i) => 255 - i)
  await stk.program(image, 0, 128)
  assert.equal(stk.retries, 1)
  assert.deepEqual([...flash], [...image])
  assert.equal(t.sent.filter((s) => s[0] === 0x64).length, 3, 'page 2 written twice')
})
