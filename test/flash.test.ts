// Flashing over serial, end to end: the sensor-node firmware version A runs in a simulated Uno with the Arduino
// bootloader, a gateway has its serial link on the board's port, and `edgeway flash` writes version B through the
// bootloader (the gateway pauses its link, flashes, verifies, resumes); the registry then says B. Wrong baud, wrong
// board and a damaged hex file fail with clear messages, directly without a gateway. Flash time of a 16 KiB image.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { runCli, startGatewayProc } from './helpers/gateway.ts'
import { buildSimBoard, requireBootloader, startSimBoard } from './helpers/simavr.ts'
import { tempDir, waitFor } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

/** An Intel HEX file of `data` at address 0 (16-byte records, like avr-objcopy writes). */
function toHex(data: Uint8Array): string {
  const lines: string[] = []
  for (let a = 0; a < data.length; a += 16) {
    const chunk = [...data.subarray(a, a + 16)]
    const bytes = [chunk.length, (a >> 8) & 0xff, a & 0xff, 0, ...chunk]
    const sum = (0x100 - (bytes.reduce((x, y) => x + y, 0) & 0xff)) & 0xff
    lines.push(':' + [...bytes, sum].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(''))
  }
  return lines.join('\n') + '\n:00000001FF\n'
}

test('edgeway flash through the running gateway: A -> B, verified, the registry records B, readings resume', async () => {
  const boot = requireBootloader()
  const a = buildSimBoard({ version: 'A', intervalMs: 200 })
  cleanups.push(a.cleanup)
  const b = buildSimBoard({ version: 'B', intervalMs: 200 })
  cleanups.push(b.cleanup)
  const path = join(a.dir, 'uart0')
  const board = await startSimBoard(a, path, { bootloader: boot })
  cleanups.push(() => board.stop())
  const g = await startGatewayProc({ serial: { ports: [{ device: 'node-1', path, baudRate: 115200, reopenMinMs: 100, reopenMaxMs: 500, offlineAfterMs: 3000 }] } })
  cleanups.push(() => g.cleanup())
  await g.waitLog((l) => l.msg === 'serial device says hello' && l.firmware === 'sensor-node A', 10000)
  await waitFor('readings from A', async () => (await g.metric('edgeway_messages_in_total', { link: 'serial' })) >= 3, 10000)

  const r = await g.cli(['flash', '--port', path, '--board', 'uno', '--baud', '57600', b.hex])
  assert.equal(r.code, 0, r.stderr + r.stdout)
  assert.match(r.stdout, /flashed \d+ bytes \(\d+ pages\) to .* through the running gateway: ATmega328P signature 1e950f, verified by read-back/)
  assert.match(r.stdout, /node-1 now reports firmware "sensor-node B"/)
  assert.match(r.stderr, /serial link of node-1 paused for the flash/)
  assert.match(r.stderr, /writing \d+ pages\nverifying \d+ pages/)
  const show = await g.cli(['device', 'show', 'node-1'])
  assert.equal((JSON.parse(show.stdout) as { firmwareVersion: string }).firmwareVersion, 'sensor-node B')
  assert.ok(g.logs.some((l) => l.msg === 'serial link paused: port released' && l.reason === 'flashing'))
  assert.ok(g.logs.some((l) => l.msg === 'flashed and verified'))
  assert.ok(g.logs.some((l) => l.msg === 'serial device offline' && l.reason === 'flashing'), 'presence follows: offline while flashing')
  const before = await g.metric('edgeway_messages_in_total', { link: 'serial' })
  await waitFor('readings from B', async () => (await g.metric('edgeway_messages_in_total', { link: 'serial' })) >= before + 3, 10000)
  assert.equal(g.proc.exitCode, null)
})

test('without a gateway: wrong baud, wrong board and a damaged file fail clearly; a 16 KiB image flashes and verifies', async () => {
  const boot = requireBootloader()
  const a = buildSimBoard({ version: 'A' })
  cleanups.push(a.cleanup)
  const path = join(a.dir, 'uart0')
  const board = await startSimBoard(a, path, { bootloader: boot })
  cleanups.push(() => board.stop())
  const { dir, cleanup } = tempDir('edgeway-flash-')
  cleanups.push(cleanup)
  const env = { EDGEWAY_GATEWAY__DATA_DIR: join(dir, 'data') }
  const flash = (args: string[]) => runCli(['flash', '--port', path, ...args], env, dir)

  const wrongBaud = await flash(['--board', 'uno', a.hex]) // the Uno's optiboot speaks 115200; this bootloader 57600
  assert.equal(wrongBaud.code, 1, wrongBaud.stderr)
  assert.match(wrongBaud.stderr, /no answer from a bootloader on .* at 115200 baud: check --baud \(the uno's bootloader uses 115200\)/)
  assert.match(board.stderr(), /line at 115200 baud but the UART runs at 58823: bytes garbled/, 'the simulated line really was at the wrong rate')

  const wrongBoard = await flash(['--board', 'diecimila', '--baud', '57600', a.hex])
  assert.equal(wrongBoard.code, 1, wrongBoard.stderr)
  assert.match(wrongBoard.stderr, /wrong board: .* has ATmega328P \(signature 1e950f\) but --board diecimila expects ATmega168 \(1e9406\); nothing was written/)

  const damaged = join(dir, 'damaged.hex')
  const lines = readFileSync(a.hex, 'utf8').split('\n')
  lines[3] = lines[3]!.slice(0, 20) + (lines[3]![20] === '0' ? '1' : '0') + lines[3]!.slice(21)
  writeFileSync(damaged, lines.join('\n'))
  const bad = await flash(['--board', 'uno', '--baud', '57600', damaged])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /damaged\.hex is not a valid Intel HEX file: line 4: checksum .* should be/)
  const missing = await flash(['--board', 'uno', join(dir, 'nope.hex')])
  assert.equal(missing.code, 2)
  assert.match(missing.stderr, /ENOENT|no such file/)
  const tooBig = join(dir, 'big.hex')
  writeFileSync(tooBig, toHex(new Uint8Array(31 * 1024)))
  const big = await flash(['--board', 'nano', tooBig])
  assert.equal(big.code, 1)
  assert.match(big.stderr, /the image ends at 31744 bytes but the nano has room for 30720/)

  // 16 KiB of random bytes: every page differs from erased flash, so write and read-back are both real.
  const image = join(dir, 'image16k.hex')
  writeFileSync(image, toHex(randomBytes(16 * 1024)))
  const ok = await flash(['--board', 'uno', '--baud', '57600', image])
  assert.equal(ok.code, 0, ok.stderr)
  assert.match(ok.stdout, /flashed 16384 bytes \(128 pages\) to .* directly \(no gateway running\).*verified by read-back/)
  const secs = Number(/time ([\d.]+) s/.exec(ok.stdout)![1])
  process.stdout.write(`# flash time for a 16 KiB image at 57600 baud (STK500v1, write + read-back): ${secs} s — ${ok.stdout.split('\n')[1]}\n`)
  assert.ok(secs < 20, `16 KiB flashed in ${secs} s`)
})
