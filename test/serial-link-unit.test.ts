// Serial link logic at the frame level: duplicates from retransmits are stored once, ACK waits for the commit,
// NACK on outbox failure; and the JSON-line framing through a real pty pair (socat).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, openSync, writeSync, createReadStream } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import { GatewayBus } from '../gateway/events.ts'
import type { RawReading } from '../gateway/readings.ts'
import { SerialLink, type SerialLinkConfig } from '../devices/serial/link.ts'
import type { OpenPort, PortEvents } from '../devices/serial/port.ts'
import { CobsDecoder, encodeFrame, encodeReadingPayload, FrameType, type Frame } from '../devices/serial/framing.ts'
import { tempDir, waitFor } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const log = pino({ level: 'silent' })
const registry = { setOnline: () => undefined, setFirmware: () => undefined }
const cfg = (over: Partial<SerialLinkConfig> = {}): SerialLinkConfig =>
  ({ device: 'd1', path: '/dev/fake', baudRate: 115200, framing: 'cobs', reopenMinMs: 10, reopenMaxMs: 100, offlineAfterMs: 5000, ...over })

test('retransmitted readings are stored once; ACK only after the commit; NACK when the outbox fails', async () => {
  let ev: PortEvents | undefined
  const written: Frame[] = []
  const dec = new CobsDecoder()
  dec.on('data', (f: Frame) => written.push(f))
  const openPort: OpenPort = async (path, _b, on) => { ev = on; return { path, write: async (d) => { dec.write(Buffer.from(d)) }, setSignals: async () => undefined, close: async () => undefined } }
  const commits: { raw: RawReading; done: (err: Error | null) => void }[] = []
  const outbox = { append: (raw: RawReading, done: (err: Error | null) => void) => { commits.push({ raw, done }) } }
  const link = new SerialLink(cfg(), { outbox, registry, bus: new GatewayBus(), log, openPort })
  cleanups.push(() => link.stop())
  link.start()
  await waitFor('open', () => ev !== undefined)
  const reading = (seq: number) => encodeFrame({ type: FrameType.READING, seq, payload: encodeReadingPayload({ v: seq }) })
  const acks = () => written.filter((f) => f.type === FrameType.ACK).map((f) => f.seq)

  ev!.data(reading(5))
  ev!.data(reading(5)) // retransmit while the commit is under way
  await new Promise((r) => setImmediate(r))
  assert.equal(commits.length, 1)
  assert.deepEqual(acks(), [], 'no ACK before the commit')
  commits[0]!.done(null)
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(acks(), [5])
  assert.deepEqual(JSON.parse(Buffer.from(commits[0]!.raw.payload).toString()), { v: 5, seq: 5 })

  ev!.data(reading(5)) // our ACK was lost: ack again, store nothing
  await new Promise((r) => setImmediate(r))
  assert.equal(commits.length, 1)
  assert.deepEqual(acks(), [5, 5])
  assert.equal(link.status().duplicates, 2)

  ev!.data(reading(6))
  commits[1]!.done(new Error('disk full'))
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(written.filter((f) => f.type === FrameType.NACK).map((f) => f.seq), [6])

  // A HELLO answering ours (same boot counter) is no reboot: seq 5 is still a duplicate.
  ev!.data(encodeFrame({ type: FrameType.HELLO, seq: 7, payload: Buffer.from('sensor-node 9') }))
  ev!.data(encodeFrame({ type: FrameType.HELLO, seq: 7, payload: Buffer.from('sensor-node 9') }))
  ev!.data(reading(5))
  await new Promise((r) => setImmediate(r))
  assert.equal(commits.length, 2)
  // A new boot counter is a rebooted board: the same seq is a new reading.
  ev!.data(encodeFrame({ type: FrameType.HELLO, seq: 8, payload: Buffer.from('sensor-node 9') }))
  ev!.data(reading(5))
  await new Promise((r) => setImmediate(r))
  assert.equal(commits.length, 3)
  assert.equal(link.status().firmware, 'sensor-node 9')
})

test('JSON-line framing over a real pty pair: objects become readings, banners and garbage are counted', async (t) => {
  if (spawnSync('sh', ['-c', 'command -v socat']).status !== 0) throw new Error("socat not found: apt-get install -y socat (or bash scripts/setup.sh)")
  const { dir, cleanup } = tempDir('edgeway-pty-')
  cleanups.push(cleanup)
  const board = join(dir, 'board')
  const gw = join(dir, 'gw')
  const socat = spawn('socat', [`pty,raw,echo=0,link=${board}`, `pty,raw,echo=0,link=${gw}`], { stdio: 'ignore' })
  cleanups.push(() => { socat.kill('SIGTERM') })
  await waitFor('pty pair', () => existsSync(board) && existsSync(gw), 5000)
  const got: string[] = []
  const outbox = { append: (raw: RawReading, done: (err: Error | null) => void) => { got.push(Buffer.from(raw.payload).toString()); setImmediate(() => done(null)) } }
  const link = new SerialLink(cfg({ path: gw, framing: 'json' }), { outbox, registry, bus: new GatewayBus(), log })
  cleanups.push(() => link.stop())
  link.start()
  await waitFor('open', () => link.status().open, 5000)
  const fd = openSync(board, 'r+')
  // The stream owns the fd from here: destroying it closes the fd once its pending read is done.
  const lines: string[] = []
  const rs = createReadStream('', { fd, autoClose: true })
  rs.on('data', (d) => lines.push(d.toString()))
  rs.on('error', () => undefined)
  t.after(() => { rs.destroy() })
  writeSync(fd, 'booting sketch v2...\r\n{"temp":21.5,')
  writeSync(fd, '"ok":true}\n\x01\x02\xff garbage\n{"hum":40}\n')
  await waitFor('two readings', () => got.length === 2, 5000)
  assert.deepEqual(got, ['{"temp":21.5,"ok":true}', '{"hum":40}'])
  assert.equal(link.status().framing.badFrames, 2)
  assert.equal(link.status().online, true)
  // Commands go down as one JSON line.
  assert.equal(await link.send({ op: 'setOutput', pin: 13, value: true }), 'sent')
  await waitFor('command line', () => lines.join('').includes('\n'), 5000)
  assert.deepEqual(JSON.parse(lines.join('')), { op: 'setOutput', pin: 13, value: true })
})
