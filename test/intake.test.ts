// TelemetryIntake on its own (issue 12): the broker's hand-off of every telemetry publish to the outbox. The ack
// (done / the owner's settle) is the outbox's answer, never earlier; an undecodable MQTT payload is acked, counted,
// logged and told to its device once; outbox failures are counted per reading and logged once per spell.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { pino } from 'pino'
import { TelemetryIntake, type IntakeDeps } from '../gateway/broker/intake.ts'
import { Metrics } from '../gateway/metrics.ts'
import { GatewayBus } from '../gateway/events.ts'
import { RefusalLog } from '../gateway/log/refusals.ts'
import { OutboxError, type AppendOwner } from '../gateway/outbox/types.ts'
import type { RawReading } from '../gateway/readings.ts'

type Done = (err: Error | null, refused?: string) => void

/** The outbox client's side the intake uses: appends wait here until the test commits, refuses or fails them. */
class HeldOutbox {
  readonly waiting: { reading: RawReading; answer: Done }[] = []
  private readonly ev = new EventEmitter()
  append(reading: RawReading, done: Done): void { this.waiting.push({ reading, answer: done }) }
  appendOwned(reading: RawReading, owner: AppendOwner, tag: number): void { this.waiting.push({ reading, answer: (e, r) => owner.settled(tag, e, r) }) }
  onCommitted(l: () => void): void { this.ev.on('committed', l) }
  onRefused(l: (r: { device: string; link: string; reason: string }) => void): void { this.ev.on('refused', l) }
  onAppendFailed(l: (err: OutboxError, count: number) => void): void { this.ev.on('failed', l) }
  commit(): void { for (const w of this.waiting.splice(0)) w.answer(null); this.ev.emit('committed', {}) }
  refuse(reason: string): void {
    for (const w of this.waiting.splice(0)) { this.ev.emit('refused', { device: w.reading.device, link: w.reading.link, reason }); w.answer(null, reason) }
  }
  fail(err: OutboxError): void { const ws = this.waiting.splice(0); for (const w of ws) w.answer(err); this.ev.emit('failed', err, ws.length) }
}

function harness() {
  const outbox = new HeldOutbox()
  const metrics = new Metrics()
  const bus = new GatewayBus()
  const lines: { level: number; msg: string; err?: string; device?: string }[] = []
  const log = pino({ level: 'debug' }, { write: (l: string) => { lines.push(JSON.parse(l) as { level: number; msg: string }) } })
  const reported: { device: string; topic: string; reason: string }[] = []
  const refusalEvents: { reason: string; detail: string; device?: string }[] = []
  bus.on('refusal', (e) => refusalEvents.push(e))
  const deps: IntakeDeps = {
    outbox: outbox as unknown as IntakeDeps['outbox'], metrics, bus, log, refusals: new RefusalLog(log),
    reportError: (device, e) => reported.push({ device, ...e }),
  }
  const intake = new TelemetryIntake(deps)
  const counter = async (reason: string): Promise<number> => {
    const m = (await metrics.refusals.get()).values.find((v) => v.labels.reason === reason)
    return m?.value ?? 0
  }
  return { outbox, intake, lines, reported, refusalEvents, counter }
}

test('the device is answered only when the outbox answers: a publish waits for its commit', () => {
  const h = harness()
  const answers: (Error | null)[] = []
  h.intake.handle('sensor-1', Buffer.from('{"t":21.5}'), (err) => answers.push(err))
  const owner = { got: [] as [number, Error | null, string | undefined][], settled(tag: number, err: Error | null, refused?: string) { this.got.push([tag, err, refused]) } }
  h.intake.handleOwned('sensor-2', Buffer.from('{"t":1}'), owner, 42)
  assert.deepEqual(answers, [], 'no ack before the commit')
  assert.deepEqual(owner.got, [])
  assert.deepEqual(h.outbox.waiting.map((w) => [w.reading.device, w.reading.link, Buffer.from(w.reading.payload).toString()]), [['sensor-1', 'mqtt', '{"t":21.5}'], ['sensor-2', 'mqtt', '{"t":1}']])
  h.outbox.commit()
  assert.deepEqual(answers, [null], 'acked once, after the commit')
  assert.deepEqual(owner.got, [[42, null, undefined]], 'the fast path\'s owner settles its tag')
})

test('an MQTT payload that does not decode: acked, counted, logged, told to the device on its errors topic, once', async () => {
  const h = harness()
  const answers: [Error | null, string | undefined][] = []
  h.intake.handle('sensor-1', Buffer.from('{"t":'), (err, refused?: string) => answers.push([err, refused]))
  h.outbox.refuse('invalid JSON: Unexpected end of JSON input')
  assert.deepEqual(answers, [[null, 'invalid JSON: Unexpected end of JSON input']], 'acked so the device does not resend it forever')
  assert.deepEqual(h.reported, [{ device: 'sensor-1', topic: 'devices/sensor-1/telemetry', reason: 'invalid JSON: Unexpected end of JSON input' }])
  assert.deepEqual(h.refusalEvents, [{ reason: 'decode', detail: 'invalid JSON: Unexpected end of JSON input', device: 'sensor-1' }])
  assert.equal(await h.counter('decode'), 1)
  assert.ok(h.lines.some((l) => l.msg === 'telemetry refused: payload does not decode' && l.level === 40))
})

test('refusals of other links\' readings are not the broker\'s to report', async () => {
  const h = harness()
  // The serial link's appends share the outbox client: their refusals reach every onRefused listener.
  h.outbox.append({ device: 'board-1', link: 'serial', payload: Buffer.from('{"x":') }, () => undefined)
  h.outbox.refuse('invalid JSON')
  assert.deepEqual(h.reported, [], 'nothing published to an MQTT errors topic for a serial board')
  assert.deepEqual(h.refusalEvents, [])
  assert.equal(await h.counter('decode'), 0)
})

test('outbox failures: no ack (the device retries), every reading counted, one log line per spell, one when it recovers', async () => {
  const h = harness()
  const answers: (Error | null)[] = []
  for (let i = 0; i < 3; i++) h.intake.handle('sensor-1', Buffer.from(`{"v":${i}}`), (err) => answers.push(err))
  h.outbox.fail(new OutboxError('outbox write failed: SQLITE_IOERR', 'io'))
  h.intake.handle('sensor-1', Buffer.from('{"v":3}'), (err) => answers.push(err))
  h.outbox.fail(new OutboxError('outbox write failed: SQLITE_IOERR', 'io'))
  assert.equal(answers.length, 4)
  assert.ok(answers.every((e) => e instanceof OutboxError), 'each failed: the connection closes without an ack')
  assert.equal(await h.counter('outbox_unavailable'), 4, 'every reading counted')
  const failed = (): number => h.lines.filter((l) => l.msg === 'outbox write failed: withholding acks, devices will retry').length
  const recovered = (): number => h.lines.filter((l) => l.msg === 'outbox writes succeed again: acknowledging readings').length
  assert.equal(failed(), 1, 'one line for the spell')
  h.intake.handle('sensor-1', Buffer.from('{"v":4}'), () => undefined)
  h.outbox.commit()
  h.outbox.commit()
  assert.equal(recovered(), 1, 'one line when writes succeed again')
  h.outbox.fail(new OutboxError('outbox write failed: SQLITE_IOERR', 'io'))
  assert.equal(failed(), 2, 'a new spell is logged again')
})

test('a full disk is counted but not logged here (main logs one DISK FULL line per spell)', async () => {
  const h = harness()
  h.intake.handle('sensor-1', Buffer.from('{"v":1}'), () => undefined)
  h.outbox.fail(new OutboxError('outbox disk full: SQLITE_FULL', 'disk_full'))
  assert.equal(await h.counter('outbox_unavailable'), 1)
  assert.equal(h.lines.filter((l) => l.level >= 50).length, 0)
  h.outbox.commit()
  assert.equal(h.lines.filter((l) => l.msg === 'outbox writes succeed again: acknowledging readings').length, 0, 'nothing to recover from in this log')
})
