// The Forwarder on its own (issue 12 asked for a direct test): an in-memory outbox with one cursor and a scripted
// upstream. Row order, credit, each outcome (accepted -> ack, released -> offered again after the pause, rejected ->
// dead letter), and a link loss that gives back everything in flight, resent in row order after the reconnect.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino, type Logger } from 'pino'
import { Forwarder, POISON_STRIKES } from '../gateway/upstream/forwarder.ts'
import { Metrics } from '../gateway/metrics.ts'
import type { ClaimedRow, Outbox, OutboxStats } from '../gateway/outbox/types.ts'
import type { Outcome, Upstream, UpstreamStatus } from '../gateway/upstream/types.ts'
import { waitFor, pause } from './helpers/net.ts'

/** One upstream's cursor over rows 1..n: pending, in flight, acked, dead. */
class MemoryOutbox implements Pick<Outbox, 'claim' | 'ack' | 'release' | 'deadLetter' | 'onAppended'> {
  rows: number[] = []
  inflight = new Set<number>()
  acked: number[] = []
  dead: { id: number; reason: string }[] = []
  releases = 0
  /** Rows with a payload larger than the others: extra bytes by row id. */
  big = new Map<number, number>()
  private listeners: ((id: number) => void)[] = []
  add(n: number): void {
    const first = this.rows.length + 1
    for (let i = 0; i < n; i++) this.rows.push(first + i)
    for (const l of this.listeners) l(this.rows.length)
  }
  async claim(_u: string, limit: number): Promise<ClaimedRow[]> {
    const done = new Set([...this.acked, ...this.dead.map((d) => d.id)])
    const out = this.rows.filter((id) => !done.has(id) && !this.inflight.has(id)).slice(0, limit)
    for (const id of out) this.inflight.add(id)
    return out.map((id) => ({ rowId: id, device: 'd', seq: id, msgId: `gw:d:${id}`, deviceSeq: null, ts: id, receivedAt: id, kind: 'json', payload: this.big.has(id) ? `{"v":"${'x'.repeat(this.big.get(id)!)}"}` : '{"v":1}', link: 'mqtt', priority: false }))
  }
  ack(_u: string, ids: number[]): void { for (const id of ids) { this.inflight.delete(id); this.acked.push(id) } }
  release(_u: string, ids?: number[]): void { this.releases++; for (const id of ids ?? [...this.inflight]) this.inflight.delete(id) }
  deadLetter(_u: string, id: number, reason: string): void { this.inflight.delete(id); this.dead.push({ id, reason }) }
  onAppended(l: (id: number) => void): () => void { this.listeners.push(l); return () => { this.listeners = this.listeners.filter((x) => x !== l) } }
  stats(): Promise<OutboxStats> { throw new Error('not used') }
}

/** An upstream whose answer per row is scripted; it holds rows until told to answer. */
class ScriptedUpstream implements Upstream {
  readonly name = 'up'
  connected = false
  maxInflight = 4
  held: { id: number; settle: (id: number, o: Outcome, d?: string) => void }[] = []
  delivered: number[] = []
  private listeners: (() => void)[] = []
  async start(): Promise<void> { /* nothing */ }
  async close(): Promise<void> { /* nothing */ }
  status(): UpstreamStatus { return { connected: this.connected, since: 0, lastError: null } }
  credit(): number { return this.connected ? this.maxInflight - this.held.length : 0 }
  deliver(rows: ClaimedRow[], settle: (id: number, o: Outcome, d?: string) => void): void {
    for (const r of rows) { this.delivered.push(r.rowId); this.held.push({ id: r.rowId, settle }) }
  }
  onChange(l: () => void): void { this.listeners.push(l) }
  setConnected(c: boolean): void { this.connected = c; if (!c) this.held = []; for (const l of this.listeners) l() }
  answer(outcome: (id: number) => Outcome): void {
    const h = this.held
    this.held = []
    for (const x of h) x.settle(x.id, outcome(x.id), `scripted ${outcome(x.id)}`)
  }
}

test('forwarder: credit, row order, every outcome, and a link loss resends what was in flight in order', async () => {
  const outbox = new MemoryOutbox()
  const up = new ScriptedUpstream()
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), pino({ level: 'silent' }), { batchMax: 10, retryDelayMs: 50 })
  f.start()
  outbox.add(10)
  await pause(30)
  assert.deepEqual(up.delivered, [], 'nothing is sent while the link is down')
  up.setConnected(true)
  await waitFor('first window', () => up.delivered.length === 4, 2000)
  assert.deepEqual(up.delivered, [1, 2, 3, 4], 'within credit, in row order')
  up.answer((id) => (id === 2 ? 'rejected' : id === 3 ? 'released' : 'accepted'))
  await waitFor('next window', () => up.delivered.length === 8, 2000)
  assert.deepEqual(outbox.acked, [1, 4])
  assert.deepEqual(outbox.dead, [{ id: 2, reason: 'scripted rejected' }])
  assert.deepEqual(up.delivered.slice(4), [5, 6, 7, 8])
  // The link drops with 5..8 unsettled: they go back to pending and come again, in row order, after the reconnect.
  up.setConnected(false)
  assert.ok(outbox.releases >= 1, 'the link loss released the cursor')
  assert.deepEqual([...outbox.inflight], [], 'nothing is left in flight')
  // After a link loss the lowest row that was in flight (5) goes alone, then the window opens again.
  up.setConnected(true)
  await waitFor('resent after the reconnect', () => up.delivered.length >= 9, 2000)
  await waitFor('all settled', () => { up.answer(() => 'accepted'); return outbox.acked.length + outbox.dead.length === 10 }, 3000)
  assert.deepEqual(up.delivered.slice(8), [3, 5, 6, 7, 8, 9, 10], 'the released row and the ones in flight, in row order; 3 and 5 one at a time')
  assert.deepEqual([...outbox.acked].sort((a, b) => a - b), [1, 3, 4, 5, 6, 7, 8, 9, 10])
  f.stop()
})

/** A logger at warn that keeps its lines. */
function warnings(): { lines: { msg: string; level: number }[]; log: Logger } {
  const lines: { msg: string; level: number }[] = []
  return { lines, log: pino({ level: 'warn' }, { write: (l: string) => { lines.push(JSON.parse(l) as { msg: string; level: number }) } }) }
}

/** Scripted like a broker that closes the connection on a packet it refuses: rows before it are acked, it and the rest are lost. */
class ClosingUpstream extends ScriptedUpstream {
  constructor(private readonly poison: (id: number) => boolean) { super() }
  override deliver(rows: ClaimedRow[], settle: (id: number, o: Outcome, d?: string) => void): void {
    super.deliver(rows, settle)
    setImmediate(() => {
      const bad = this.held.findIndex((h) => this.poison(h.id))
      const ok = this.held.splice(0, bad < 0 ? this.held.length : bad)
      for (const x of ok) x.settle(x.id, 'accepted')
      if (bad < 0) return
      this.setConnected(false)
      setTimeout(() => this.setConnected(true), 5)
    })
  }
}

for (const batchMax of [10, 1]) test(`forwarder (batchMax ${batchMax}): a larger row that drops the link whenever it is sent goes alone after the first loss and is dead-lettered after POISON_STRIKES losses once the row after it went through; the rows behind it go`, async () => {
  const outbox = new MemoryOutbox()
  const up = new ClosingUpstream((id) => id === 3)
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), pino({ level: 'silent' }), { batchMax, retryDelayMs: 50 })
  f.start()
  outbox.big.set(3, 2000)
  outbox.add(8)
  up.setConnected(true)
  await waitFor('every row settled', () => outbox.acked.length + outbox.dead.length === 8, 5000)
  assert.deepEqual(outbox.acked.sort((a, b) => a - b), [1, 2, 4, 5, 6, 7, 8])
  assert.equal(outbox.dead.length, 1)
  assert.equal(outbox.dead[0]!.id, 3)
  assert.match(outbox.dead[0]!.reason, new RegExp(`each of the ${POISON_STRIKES} times this reading was the only one in flight`))
  // Once in the first window (with 4 behind it), then alone at each strike.
  assert.equal(up.delivered.filter((id) => id === 3).length, 1 + POISON_STRIKES)
  if (batchMax > 1) {
    assert.deepEqual(up.delivered.slice(0, 4), [1, 2, 3, 4])
    assert.deepEqual(up.delivered.slice(4, 5 + POISON_STRIKES), [...Array(POISON_STRIKES).fill(3), 4], 'the suspect went alone, then the row after it (the witness) alone')
  }
  f.stop()
})

test('forwarder: link losses with a good row alone in flight do not add up once it is acked (a flapping network dead-letters nothing)', async () => {
  const outbox = new MemoryOutbox()
  const up = new ScriptedUpstream()
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), pino({ level: 'silent' }), { batchMax: 10, retryDelayMs: 50 })
  f.start()
  outbox.add(6)
  up.setConnected(true)
  await waitFor('first window', () => up.delivered.length === 4, 2000)
  for (const round of [1, 2]) {
    // POISON_STRIKES - 1 losses with the suspect alone, then it is acked: its count starts over.
    up.setConnected(false)
    for (let i = 0; i < POISON_STRIKES - 1; i++) {
      up.setConnected(true)
      await waitFor(`suspect resent alone (round ${round}, loss ${i + 1})`, () => up.held.length === 1, 2000)
      up.setConnected(false)
    }
    up.setConnected(true)
    await waitFor(`suspect resent alone (round ${round})`, () => up.held.length === 1, 2000)
    up.answer(() => 'accepted')
    await waitFor(`window open again (round ${round})`, () => up.held.length > 1 || outbox.acked.length === 6, 2000)
  }
  await waitFor('all settled', () => { up.answer(() => 'accepted'); return outbox.acked.length === 6 }, 3000)
  assert.deepEqual(outbox.dead, [], 'no row was dead-lettered')
  f.stop()
})

test('forwarder: an upstream that drops the link whatever it is sent (a full reject-publish queue) convicts no row: nothing is dead-lettered, all go once it takes them again, and it is said once', async () => {
  const outbox = new MemoryOutbox()
  let full = true
  const up = new ClosingUpstream(() => full)
  const { lines, log } = warnings()
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), log, { batchMax: 10, retryDelayMs: 50 })
  f.start()
  outbox.add(6)
  up.setConnected(true)
  // Enough losses for two whole rounds of suspect, strikes and witness.
  await waitFor('two rounds of acquittals', () => up.delivered.length >= 2 * (2 + POISON_STRIKES) + 1, 5000)
  assert.deepEqual(outbox.dead, [], 'no row was dead-lettered while the upstream refused everything')
  assert.deepEqual(outbox.acked, [])
  full = false
  await waitFor('every row acked once the upstream takes them', () => outbox.acked.length === 6, 5000)
  assert.deepEqual(outbox.dead, [])
  const said = lines.filter((l) => l.msg.startsWith('the upstream dropped the link with other readings alone in flight too'))
  assert.equal(said.length, 1, 'said once, not once per round')
  assert.equal(said[0]!.level, 40, 'a warning')
  f.stop()
})

test('forwarder: a witness refused here in deliver() (over a known size limit) convicts nobody', async () => {
  const outbox = new MemoryOutbox()
  let full = true
  const up = new ClosingUpstream(() => full)
  up.maxInflight = 1
  // Row 2 is refused by the upstream itself, synchronously, like a reading over the broker's announced limit.
  const deliver = up.deliver.bind(up)
  up.deliver = (rows, settle) => {
    const local = rows.filter((r) => r.rowId === 2)
    for (const r of local) { up.delivered.push(r.rowId); settle(r.rowId, 'rejected', 'too large (local)') }
    const rest = rows.filter((r) => r.rowId !== 2)
    if (rest.length > 0) deliver(rest, settle)
  }
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), pino({ level: 'silent' }), { batchMax: 10, retryDelayMs: 50 })
  f.start()
  outbox.add(4)
  up.setConnected(true)
  // 1 alone at each strike, then 2 as witness (refused here), then 3 as witness: lost with the link, 1 acquitted.
  await waitFor('row 3 went as a witness', () => up.delivered.includes(3), 5000)
  await pause(50)
  assert.deepEqual(outbox.dead.map((d) => d.id), [2], 'only the row refused here is dead')
  full = false
  await waitFor('the rest acked once the upstream takes them', () => outbox.acked.length === 3, 5000)
  assert.deepEqual(outbox.acked.sort((a, b) => a - b), [1, 3, 4])
  assert.deepEqual(outbox.dead.map((d) => d.id), [2])
  f.stop()
})

test('forwarder: a suspect that is no longer pending (retention dropped it) does not keep the upstream at one row at a time', async () => {
  const outbox = new MemoryOutbox()
  const up = new ScriptedUpstream()
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), pino({ level: 'silent' }), { batchMax: 10, retryDelayMs: 50 })
  f.start()
  outbox.add(8)
  up.setConnected(true)
  await waitFor('first window', () => up.held.length === 4, 2000)
  up.setConnected(false) // 1..4 unsettled: 1 is the suspect
  outbox.rows = outbox.rows.filter((id) => id !== 1)
  up.setConnected(true)
  await waitFor('the window open again', () => up.held.length === 4, 3000)
  assert.deepEqual(up.held.map((h) => h.id), [2, 3, 4, 5])
  await waitFor('all settled', () => { up.answer(() => 'accepted'); return outbox.acked.length === 7 }, 3000)
  assert.deepEqual(outbox.dead, [])
  f.stop()
})

test('forwarder: a row sent alone that gets no answer while the link stays up does not stall the others: the window opens again', async () => {
  const outbox = new MemoryOutbox()
  const up = new ScriptedUpstream()
  const { lines, log } = warnings()
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), log, { batchMax: 10, retryDelayMs: 50, suspectAloneMs: 100 })
  f.start()
  outbox.add(8)
  up.setConnected(true)
  await waitFor('first window', () => up.held.length === 4, 2000)
  up.setConnected(false)
  up.setConnected(true)
  await waitFor('the suspect alone', () => up.held.length === 1, 2000)
  assert.equal(up.held[0]!.id, 1)
  // Never answered: after suspectAloneMs the others go beside it.
  await waitFor('the window open again', () => up.held.length === 4, 5000)
  assert.deepEqual(up.held.map((h) => h.id), [1, 2, 3, 4])
  assert.ok(lines.some((l) => l.msg === 'a reading sent alone after a link loss got no answer: the window opens again'))
  f.stop()
})

test('forwarder: a suspect not well over the largest reading accepted is acquitted when its witness goes through, even if nothing but the witness was accepted (size is the one cause convicted)', async () => {
  const outbox = new MemoryOutbox()
  // Drops the link on row 1, a little longer than the others: nothing but the witness is ever accepted before the
  // verdict, as after a restart during a full-queue outage when the queue made room just for the witness.
  let refusing = true
  const up = new ClosingUpstream((id) => refusing && id === 1)
  outbox.big.set(1, 40)
  const { lines, log } = warnings()
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), log, { batchMax: 10, retryDelayMs: 50 })
  f.start()
  outbox.add(8)
  up.setConnected(true)
  await waitFor('the witness answered and the suspect acquitted', () => lines.some((l) => l.msg.startsWith('the upstream dropped the link with other readings alone in flight too')), 5000)
  assert.ok(outbox.acked.length >= 1 && !outbox.acked.includes(1), `only witnesses were accepted (${outbox.acked.join(',')})`)
  assert.deepEqual(outbox.dead, [])
  refusing = false
  await waitFor('every row acked', () => outbox.acked.length === 8, 5000)
  assert.deepEqual(outbox.dead, [], 'not dead-lettered: 40 bytes over the witness is not a reading refused for its size')
  assert.ok(lines.some((l) => l.msg.startsWith('the upstream dropped the link with other readings alone in flight too')))
  f.stop()
})

test('forwarder: an upstream whose deliver() throws does not stop the forwarder: its rows go back and are offered again', async () => {
  const outbox = new MemoryOutbox()
  const up = new ScriptedUpstream()
  let throws = 1
  const deliver = up.deliver.bind(up)
  up.deliver = (rows, settle) => { if (throws-- > 0) throw new Error('scripted bug'); deliver(rows, settle) }
  const { lines, log } = warnings()
  const f = new Forwarder(up, outbox as unknown as Outbox, new Metrics(), log, { batchMax: 10, retryDelayMs: 50 })
  f.start()
  outbox.add(3)
  up.setConnected(true)
  await waitFor('offered again after the throw', () => up.held.length === 3, 5000)
  up.answer(() => 'accepted')
  await waitFor('acked', () => outbox.acked.length === 3, 2000)
  assert.ok(lines.some((l) => l.msg === 'upstream deliver() threw: its rows go back to pending' && l.level === 50))
  f.stop()
})
