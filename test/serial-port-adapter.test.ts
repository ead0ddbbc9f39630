// The serialport adapter (devices/serial/port.ts): the bindings-cpp internal it relies on still has the shape it
// uses, a hung-up tty's 0-byte read becomes a disconnect, and every unplug of a simulated board is reported as lost.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { closeSync, constants, openSync, read } from 'node:fs'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { hangUpAwareRead, loadUnixRead, openSerialPort } from '../devices/serial/port.ts'
import { buildSimBoard, startSimBoard } from './helpers/simavr.ts'
import { scaled, pause } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

test('bindings-cpp internal: unixRead takes fsReadAsync and passes its result and its errors through', async () => {
  const unixRead = loadUnixRead()
  const binding = { isOpen: true, fd: 1_000_000, read: async () => ({ bytesRead: 0, buffer: Buffer.alloc(0) }) }
  const buffer = Buffer.alloc(4)
  const ok = await unixRead({ binding, buffer, offset: 0, length: 4, fsReadAsync: async (_fd, b) => { b[0] = 7; return { bytesRead: 1, buffer: b } } })
  assert.equal(ok.bytesRead, 1)
  assert.equal(buffer[0], 7)
  await assert.rejects(unixRead({ binding, buffer, offset: 0, length: 4, fsReadAsync: async () => { throw Object.assign(new Error('gone'), { code: 'EIO' }) } }), /gone/)
})

test('a hung-up tty reads 0 bytes; hangUpAwareRead turns that into EIO', async () => {
  const build = buildSimBoard({ version: 'hup' })
  cleanups.push(build.cleanup)
  const board = await startSimBoard(build, join(build.dir, 'ttyHUP'))
  cleanups.push(() => board.stop())
  const fd = openSync(board.path, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK)
  cleanups.push(() => closeSync(fd))
  await board.stop()
  const plain = await promisify(read)(fd, Buffer.alloc(64), 0, 64, null)
  assert.equal(plain.bytesRead, 0, 'the premise: reading a tty whose other side is gone gives end of file, not an error')
  await assert.rejects(hangUpAwareRead(fd, Buffer.alloc(64), 0, 64, null), (err: NodeJS.ErrnoException) => err.code === 'EIO')
})

test('every unplug of a board is reported as lost (the hang-up may come during a read or during a poll)', async () => {
  const build = buildSimBoard({ version: 'unplug' })
  cleanups.push(build.cleanup)
  // bindings-cpp alone missed 1 in 8 to 1 in 20 of these in a loop outside the suite (a readable poll, then 0-byte
  // reads forever); the race is too narrow to force here, so the test above checks the cause deterministically. and spun on 0-byte reads instead.
  for (let i = 0; i < 6; i++) {
    const board = await startSimBoard(build, join(build.dir, `ttyU${i}`))
    cleanups.push(() => board.stop())
    let bytes = 0
    let lostAt = 0
    const port = await openSerialPort(board.path, 115200, { data: (c) => { bytes += c.length }, lost: () => { lostAt = Date.now() } })
    cleanups.push(() => port.close())
    const until = Date.now() + scaled(5000)
    while (bytes === 0 && Date.now() < until) await pause(20)
    assert.ok(bytes > 0, `round ${i}: the board sent nothing`)
    await new Promise((r) => setTimeout(r, 200 + ((i * 137) % 1000))) // stop at varied points of the read/poll cycle
    const stopped = Date.now()
    await board.stop()
    while (lostAt === 0 && Date.now() < stopped + scaled(5000)) await pause(20)
    assert.ok(lostAt > 0, `round ${i}: the unplug was not reported within ${scaled(5000)} ms`)
  }
})
