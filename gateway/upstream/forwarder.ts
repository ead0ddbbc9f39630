// One forwarder per upstream: claims rows from that upstream's outbox cursor while the link has credit,
// and turns each settlement into ack / release / dead-letter. Replays after an outage come out of the same loop.
// A reading that makes the upstream drop the link (a broker that closes on a packet over its size limit without
// saying so: MQTT 3.1.1, RabbitMQ ending the AMQP session, an XMPP server ending the stream) went again after every
// reconnect, first in row order, and nothing behind it ever arrived. So after a link loss the lowest row that was in
// flight goes alone; once it was alone in flight at POISON_STRIKES losses in a row, the row after it goes alone, and
// only if the far end answers that one and the suspect is well over the largest reading accepted is the suspect
// dead-lettered. An upstream that drops the link whatever it is sent (RabbitMQ 3.10 resets the connection on a publish
// to a full reject-publish queue) convicts nothing: the rows wait.
import type { Logger } from 'pino'
import type { ClaimedRow, Outbox } from '../outbox/types.ts'
import type { Metrics } from '../metrics.ts'
import type { Outcome, Upstream } from './types.ts'

export interface ForwarderOptions {
  /** Most rows claimed per round trip to the outbox. */
  batchMax?: number
  /** Pause before rows the upstream released are offered again. */
  retryDelayMs?: number
  /** How long a row sent alone may go unanswered (default SUSPECT_ALONE_MS). */
  suspectAloneMs?: number
}

/** Link losses with a row alone in flight before it is dead-lettered (one is a network fault, three in a row are not). */
export const POISON_STRIKES = 3

/** How long a row sent alone may go unanswered, with the link up, before the window opens again without a verdict. */
const SUSPECT_ALONE_MS = 30_000

/**
 * The row suspected of ending the link, sent alone until it settles or has ended the link POISON_STRIKES times; then
 * `witness` is the row sent alone in its place: answered, and the suspect well over the largest reading this upstream
 * has accepted (tooLargeAbove), the suspect is dead-lettered; lost with the link, or answered otherwise, acquitted.
 */
interface Suspect { rowId: number; bytes: number; strikes: number; witness: number | null }

/** The suspect's strikes are all in: a witness goes in its place. */
const convicting = (s: Suspect | null): s is Suspect => s !== null && s.strikes >= POISON_STRIKES

/**
 * Sizes above this are convicted, given the largest row the upstream accepted. A reading refused for its size is
 * usually many times larger than the others; ordinary readings differ by bytes. The margin keeps a full queue that
 * made room for just the witness from convicting an ordinary reading a little longer than any accepted so far (after
 * a restart during such an outage the witness may be the only row accepted).
 */
function tooLargeAbove(largestAccepted: number): number {
  return largestAccepted * 1.25 + 256
}

/** A row's size as the upstream's limits see it, near enough: payload and user properties. */
function rowBytes(r: ClaimedRow): number {
  return (typeof r.payload === 'string' ? Buffer.byteLength(r.payload) : r.payload.byteLength) + (r.userProperties?.length ?? 0)
}

export class Forwarder {
  private running = false
  /** Bumped on every link state change: a pump from an older link generation stops. */
  private generation = 0
  private wake: (() => void) | null = null
  private unsubscribe: (() => void) | null = null
  private wasConnected = false
  private readonly batchMax: number
  private readonly retryDelayMs: number
  private readonly suspectAloneMs: number
  private released: number[] = []
  /** Bound once: a labelled child increments without hashing its labels per reading. */
  private readonly sent: { inc(): void }
  private releaseTimer: NodeJS.Timeout | null = null
  /** Rows handed to the upstream on the current link and not settled yet, with their size. */
  private readonly inflight = new Map<number, number>()
  /** The largest row (rowBytes) the far end accepted since start (tooLargeAbove). */
  private largestAccepted = 0
  private suspect: Suspect | null = null
  /** A suspect was acquitted (the upstream drops the link whatever it is sent) and no reading was accepted since. */
  private acquitted = false
  /** When the row now alone in flight (suspect or witness) was sent. */
  private aloneSince = 0
  /** Set while the upstream's deliver() runs: a settle then was decided here, not by the far end. */
  private delivering = false

  constructor(private readonly up: Upstream, private readonly outbox: Outbox, private readonly metrics: Metrics, private readonly log: Logger, opts: ForwarderOptions = {}) {
    this.batchMax = opts.batchMax ?? 500
    this.retryDelayMs = opts.retryDelayMs ?? 1000
    this.suspectAloneMs = opts.suspectAloneMs ?? SUSPECT_ALONE_MS
    this.sent = metrics.messagesOut.labels({ upstream: up.name })
  }

  start(): void {
    this.running = true
    this.unsubscribe = this.outbox.onAppended(() => this.poke())
    this.up.onChange(() => this.onChange())
    this.onChange()
  }

  stop(): void {
    this.running = false
    if (this.releaseTimer) clearTimeout(this.releaseTimer)
    this.generation++
    this.unsubscribe?.()
    this.poke()
  }

  private onChange(): void {
    const connected = this.up.status().connected
    if (connected !== this.wasConnected) {
      this.wasConnected = connected
      this.generation++
      this.metrics.upstreamConnected.set({ upstream: this.up.name }, connected ? 1 : 0)
      if (!connected) this.suspectAfterLoss()
      // Whatever was in flight on the old link is unsettled: back to pending, resent in row order.
      this.outbox.release(this.up.name)
      if (connected && this.running) void this.pump(this.generation)
    }
    this.poke()
  }

  /** The link was lost: the lowest row in flight is the suspect, with a strike if it was alone. */
  private suspectAfterLoss(): void {
    const inflight = this.inflight
    if (inflight.size === 0) return
    let head = Infinity
    for (const id of inflight.keys()) if (id < head) head = id
    const bytes = inflight.get(head)!
    const alone = inflight.size === 1
    inflight.clear()
    const s = this.suspect
    if (s && s.witness !== null) {
      // The row after the suspect lost the link too: this upstream drops it whatever it is sent.
      this.acquit(s)
      return
    }
    if (!s || s.rowId !== head) { this.suspect = { rowId: head, bytes, strikes: alone ? 1 : 0, witness: null }; return }
    if (alone) s.strikes++
  }

  /** Not the suspect's fault. Said once until a reading is accepted again (a full queue can do this for hours). */
  private acquit(s: Suspect): void {
    if (!this.acquitted) this.log.warn({ upstream: this.up.name, rowId: s.rowId, witness: s.witness },
      'the upstream dropped the link with other readings alone in flight too: not one reading\'s fault; they wait and go again')
    this.acquitted = true
    this.suspect = null
  }

  /** The witness was answered and the suspect is well over anything accepted: the suspect is what drops the link. */
  private convict(s: Suspect): void {
    this.suspect = null
    const reason = `the upstream's link was lost each of the ${POISON_STRIKES} times this reading was the only one in flight, ` +
      'and the reading after it went through (a broker that closes on a packet over its size limit does this: for an MQTT 3.1.1 upstream set maxPacketSize)'
    this.log.error({ upstream: this.up.name, rowId: s.rowId, strikes: s.strikes }, 'reading dead-lettered: the upstream drops the link whenever it is sent')
    this.metrics.refusals.inc({ reason: 'upstream_link_lost' })
    this.outbox.deadLetter(this.up.name, s.rowId, reason)
  }

  private poke(): void {
    const w = this.wake
    this.wake = null
    w?.()
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.wake = null; resolve() }, ms)
      this.wake = () => { clearTimeout(t); resolve() }
    })
  }

  private async pump(gen: number): Promise<void> {
    const name = this.up.name
    const live = (): boolean => this.running && gen === this.generation
    while (live()) {
      // A suspect (or its witness) goes alone: nothing else is claimed while a row is in flight, then one at a time.
      let s = this.suspect
      if (s && this.inflight.size > 0 && Date.now() - this.aloneSince >= this.suspectAloneMs) {
        // No answer and no link loss: nothing to learn from waiting longer, and the others should not wait for it.
        this.log.warn({ upstream: name, rowId: s.rowId, waitedMs: this.suspectAloneMs }, 'a reading sent alone after a link loss got no answer: the window opens again')
        this.suspect = s = null
      }
      const credit = s ? (this.inflight.size === 0 ? Math.min(1, this.up.credit()) : 0) : Math.min(this.up.credit(), this.batchMax)
      if (credit <= 0) { await this.sleep(1000); continue }
      let rows
      try {
        // One more than the credit while convicting: the suspect itself (if it comes first) stays behind.
        rows = await this.outbox.claim(name, credit + (convicting(s) ? 1 : 0))
      } catch (err) {
        this.log.error({ upstream: name, err: (err as Error).message }, 'claim from outbox failed')
        await this.sleep(1000)
        continue
      }
      if (!live()) return // claimed under an old link: the release at the state change gives them back
      s = this.suspect
      const suspectId = s?.rowId
      if (suspectId !== undefined && !rows.some((r) => r.rowId === suspectId) && (rows.find((r) => !r.priority)?.rowId ?? 0) > suspectId) {
        // Rows come in row order (after the priority lane): a later one first means the suspect is no longer pending
        // (retention dropped it, or it was settled): sent alone, nothing would ever clear it.
        this.suspect = null
        this.outbox.release(name, rows.map((r) => r.rowId))
        continue
      }
      if (convicting(s)) {
        if (rows.some((r) => r.rowId === s.rowId)) this.outbox.release(name, [s.rowId])
        rows = rows.filter((r) => r.rowId !== suspectId)
      }
      const limit = s ? 1 : credit
      if (rows.length > limit) { this.outbox.release(name, rows.slice(limit).map((r) => r.rowId)); rows = rows.slice(0, limit) }
      if (rows.length === 0) { await this.sleep(1000); continue }
      if (convicting(s)) s.witness = rows[0]!.rowId
      for (const r of rows) this.inflight.set(r.rowId, rowBytes(r))
      if (s) this.aloneSince = Date.now()
      let threw = false
      this.delivering = true
      try {
        this.up.deliver(rows, (rowId, outcome, detail) => this.settle(rowId, outcome, detail))
      } catch (err) {
        // A bug in an upstream must not end this loop (nor the process): its rows go back and are offered again.
        this.log.error({ upstream: name, err: (err as Error).message }, 'upstream deliver() threw: its rows go back to pending')
        const ids = rows.map((r) => r.rowId).filter((id) => this.inflight.delete(id))
        if (ids.length > 0) this.outbox.release(name, ids)
        threw = true
      } finally {
        this.delivering = false
      }
      if (threw) await this.sleep(1000)
    }
  }

  private settle(rowId: number, outcome: Outcome, detail?: string): void {
    const name = this.up.name
    const bytes = this.inflight.get(rowId)
    this.inflight.delete(rowId)
    if (outcome === 'accepted' && !this.delivering && bytes !== undefined && bytes > this.largestAccepted) this.largestAccepted = bytes
    const s = this.suspect
    // The suspect settled one way or another: the upstream took it (or told why not) without dropping the link.
    if (s?.rowId === rowId) this.suspect = null
    else if (s && s.witness === rowId) {
      // Only an answer from the far end shows the link survives a send: a refusal made here in deliver() (over a
      // known size limit), an at-most-once settle, or a release (not taken, e.g. an IQ timeout) shows nothing.
      // Answered, the suspect is convicted only if it is well over the largest reading accepted (the witness's own
      // size included): a full queue that made room just for the witness must not cost an ordinary reading its place.
      if (this.delivering || outcome === 'released') this.suspect = null // no verdict: back to the normal window
      else if (s.bytes > tooLargeAbove(this.largestAccepted)) this.convict(s)
      else this.acquit(s)
    }
    switch (outcome) {
      case 'accepted':
        this.acquitted = false
        this.outbox.ack(name, [rowId])
        this.sent.inc()
        break
      case 'rejected':
        this.log.error({ upstream: name, rowId, reason: detail }, 'upstream rejected a reading: moved to the dead-letter table')
        this.metrics.refusals.inc({ reason: 'upstream_rejected' })
        this.outbox.deadLetter(name, rowId, detail ?? 'rejected')
        break
      case 'released':
        // The upstream could not take it now (e.g. AMQP released/modified): back to pending, resent after a pause.
        this.released.push(rowId)
        if (!this.releaseTimer) {
          this.releaseTimer = setTimeout(() => {
            this.releaseTimer = null
            this.outbox.release(name, this.released.splice(0))
            this.poke()
          }, this.retryDelayMs)
        }
        break
    }
    this.poke()
  }
}
