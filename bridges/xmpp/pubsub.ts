// Telemetry to PubSub (XEP-0060) as an outbox upstream: each reading is published as an item (id = its stable
// message id) on its device's node, and acked on the IQ result. Rides on the bridge's XMPP stream.
import type { Logger } from 'pino'
import type { ClaimedRow } from '../../gateway/outbox/types.ts'
import type { Outcome, Upstream, UpstreamStatus } from '../../gateway/upstream/types.ts'
import { LinkState } from '../../gateway/upstream/link-state.ts'
import { readingEnvelope } from '../../gateway/readings.ts'
import type { XmppConfig } from './config.ts'
import { IqError, type XmppLink } from './connection.ts'
import { child, discoFeatures, discoInfoQuery, NS, publishErrorOutcome, pubsubCreate, pubsubPublish } from './stanza.ts'

type Settle = (rowId: number, outcome: Outcome, detail?: string) => void

/** The node of a device: `{gateway}` and `{device}` replaced. */
export function nodeFor(template: string, gateway: string, device: string): string {
  return template.replaceAll('{gateway}', gateway).replaceAll('{device}', device)
}

export class PubSubUpstream implements Upstream {
  readonly name: string
  private readonly state: LinkState
  private readonly service: string
  private inflight = 0
  /** Bumped whenever the stream goes down: settlements of an older stream are ignored (the forwarder released them). */
  private generation = 0
  private closed = false
  /** Node creations under way (several readings of a new device wait for the same one). */
  private creating = new Map<string, Promise<void>>()
  private recheck: NodeJS.Timeout | null = null

  constructor(private readonly cfg: XmppConfig, private readonly link: XmppLink, private readonly gatewayId: string, private readonly log: Logger) {
    this.name = cfg.pubsub.upstream
    this.service = cfg.pubsub.service ?? ''
    this.state = new LinkState(log, { service: this.service }, cfg.reconnectMinMs, cfg.reconnectMaxMs)
  }

  async start(): Promise<void> {
    this.state.noteError('xmpp stream not connected yet')
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.recheck) clearTimeout(this.recheck)
    this.generation++
    this.state.down(() => undefined, true)
  }

  status(): UpstreamStatus { return this.state.status() }
  onChange(listener: () => void): void { this.state.onChange(listener) }

  credit(): number {
    return this.state.connected ? Math.max(0, this.cfg.pubsub.maxInflight - this.inflight) : 0
  }

  /** The XMPP stream is up: check that the service really is PubSub before taking readings. */
  linkUp(): void {
    if (this.closed) return
    const gen = ++this.generation
    this.link.request(discoInfoQuery(this.service), this.cfg.pubsub.iqTimeoutMs).then((res) => {
      if (gen !== this.generation) return
      if (!discoFeatures(child(res, 'query', NS.discoInfo)).includes(NS.pubsub)) throw new Error(`${this.service} does not announce ${NS.pubsub}`)
      this.log.info({ service: this.service }, 'pubsub upstream ready')
      this.state.up()
    }).catch((err: unknown) => {
      if (gen !== this.generation) return
      const msg = `no PubSub service at ${this.service} (${(err as Error).message}): readings stay in the outbox; `
        + 'on Prosody add `Component "<pubsub domain>" "pubsub"` and set xmpp.pubsub.service to it'
      this.state.noteError(msg)
      this.log.error({ service: this.service, err: (err as Error).message }, 'xmpp pubsub disabled: no PubSub service')
      this.state.emit()
      // The server may be reconfigured without the stream dropping: look again now and then.
      if (this.recheck) clearTimeout(this.recheck)
      this.recheck = setTimeout(() => { this.recheck = null; if (gen === this.generation && this.link.online) this.linkUp() }, 60000)
      this.recheck.unref()
    })
  }

  linkDown(reason: string): void {
    this.generation++
    this.inflight = 0
    this.state.noteError(`xmpp stream down: ${reason}`)
    // No reconnect from here: the bridge's stream reconnects, and linkUp() follows.
    this.state.down(() => undefined, true)
  }

  deliver(rows: ClaimedRow[], settle: Settle): void {
    if (!this.state.connected) return
    const gen = this.generation
    for (const row of rows) {
      this.inflight++
      const node = nodeFor(this.cfg.pubsub.node, this.gatewayId, row.device)
      const json = readingEnvelope(row)
      const done = (outcome: Outcome, detail?: string): void => {
        if (gen !== this.generation) return
        this.inflight--
        settle(row.rowId, outcome, detail)
        this.state.emit()
      }
      if (Buffer.byteLength(json) > this.cfg.pubsub.maxItemBytes) {
        done('rejected', `reading is ${Buffer.byteLength(json)} bytes, larger than xmpp.pubsub.maxItemBytes (${this.cfg.pubsub.maxItemBytes})`)
        continue
      }
      this.publish(node, row.msgId, json).then(() => done('accepted'), (err: unknown) => {
        if (err instanceof IqError) {
          const outcome = publishErrorOutcome(err.condition, err.type)
          if (outcome === 'released') this.warnOnce(node, err.message)
          done(outcome, `pubsub publish to ${node}: ${err.message}`)
        } else done('released', (err as Error).message)
      })
    }
  }

  /** One warning per node and error until it changes or a minute passed: a refusing server must not flood the log. */
  private lastWarn = new Map<string, { msg: string; at: number }>()
  private warnOnce(node: string, msg: string): void {
    const prev = this.lastWarn.get(node)
    const now = Date.now()
    if (prev && prev.msg === msg && now - prev.at < 60000) { this.log.debug({ node, err: msg }, 'pubsub publish failed again'); return }
    this.lastWarn.set(node, { msg, at: now })
    this.log.warn({ node, err: msg }, 'pubsub publish failed: will retry')
  }

  private async publish(node: string, itemId: string, json: string): Promise<void> {
    const timeout = this.cfg.pubsub.iqTimeoutMs
    const pending = this.creating.get(node)
    if (pending) await pending
    try {
      await this.link.request(pubsubPublish(this.service, node, itemId, json), timeout)
    } catch (err) {
      if (!(err instanceof IqError) || err.condition !== 'item-not-found') throw err
      // The node does not exist yet: create it once (other readings of this device wait), then publish again.
      let creation = this.creating.get(node)
      if (!creation) {
        creation = this.link.request(pubsubCreate(this.service, node, this.cfg.pubsub.maxItems), timeout).then(() => {
          this.log.info({ node }, 'pubsub node created')
        }, (e: unknown) => {
          // conflict: someone else created it meanwhile; anything else fails this publish (released, retried).
          if (!(e instanceof IqError && e.condition === 'conflict')) throw e
        }).finally(() => this.creating.delete(node))
        this.creating.set(node, creation)
      }
      await creation
      await this.link.request(pubsubPublish(this.service, node, itemId, json), timeout)
    }
  }
}
