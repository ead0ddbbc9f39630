// A simulated networked node (ESP32 class) implementing the device side of the OTA protocol (devices/ota/README.md)
// with MQTT.js against the real gateway: pulls chunks with a window of requests, keeps its last good offset across
// connection drops (as firmware keeps it in flash), verifies SHA-256 (and optionally an Ed25519 signature), reports
// status, "reboots" and comes back with the new version — or misbehaves as a test asks.
import { createHash, verify, type KeyObject } from 'node:crypto'
import { connect, endClient, type MqttClient } from './mqtt.ts'
import { otaTopics, decodeAnnounce, decodeChunk, encodeRequest, encodeStatus, type Announce, type DeviceStatus } from '../../gateway/ota/protocol.ts'

export interface OtaNodeOptions {
  url: string
  device: string
  secret: string
  /** Firmware version running at start. */
  version: string
  /** Requests kept outstanding. */
  window?: number
  /** What the node does after `applied`: come back healthy with the new version, never come back, come back with the old one, or unhealthy. */
  afterApply?: 'healthy' | 'never' | 'old' | 'unhealthy'
  /** Cut the connection (no DISCONNECT) once, when this many bytes are verified. */
  dropAfterBytes?: number
  reconnectDelayMs?: number
  rebootMs?: number
  /** Flip one bit of the received image before hashing (a node that computes a different hash). */
  corrupt?: boolean
  /** Verify the announce's signature over the image with this Ed25519 key. */
  publicKey?: KeyObject
  requestTimeoutMs?: number
  /** Stop asking for chunks once this many bytes are verified, until the next announce (e.g. after a reconnect). */
  pauseAtBytes?: number
  /** Stay "rebooting" after `applied` until powerOn() is called (a test decides when the node comes back). */
  holdReboot?: boolean
}

interface Download { a: Announce; buf: Buffer; good: number; pending: Map<number, Buffer>; next: number; inflight: Set<number>; reported: number }

export class OtaSimNode {
  version: string
  session = 0
  /** Every chunk request sent, with the connection it was sent in. */
  readonly requests: { offset: number; session: number }[] = []
  readonly statuses: DeviceStatus[] = []
  readonly log: string[] = []
  /** performance.now() of the first request and of the last chunk of the latest download (transfer time). */
  transfer: { start: number; end: number } | null = null
  private c: MqttClient | null = null
  private dl: Download | null = null
  private dropped = false
  private stopped = false
  private timer: NodeJS.Timeout | null = null
  private readonly t: ReturnType<typeof otaTopics>
  private release: (() => void) | null = null
  /** Holding at pauseAtBytes. */
  paused = false
  private pausedOnce = false
  /** True while held in reboot (holdReboot). */
  get holding(): boolean { return this.release !== null }

  constructor(private readonly o: OtaNodeOptions) {
    this.version = o.version
    this.t = otaTopics(o.device)
  }

  get connected(): boolean { return this.c?.connected ?? false }
  get goodOffset(): number { return this.dl?.good ?? 0 }

  async start(): Promise<void> { await this.boot() }

  /** Ends a held reboot: the node boots the new image. */
  powerOn(): void { const r = this.release; this.release = null; r?.() }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    if (this.c) await endClient(this.c)
    this.c = null
  }

  private async boot(): Promise<void> {
    await this.connectSession()
    // After (re)boot the node says what it runs: this is what the gateway's registry and OTA job follow.
    await this.c!.publishAsync(`devices/${this.o.device}/state`, JSON.stringify({ firmware: this.version, healthy: this.o.afterApply !== 'unhealthy' || this.version === this.o.version }), { qos: 1, retain: true })
  }

  private async connectSession(): Promise<void> {
    const c = await connect(this.o.url, { clientId: `${this.o.device}:${Math.random().toString(16).slice(2, 8)}`, username: this.o.device, password: this.o.secret, clean: true })
    this.c = c
    this.session++
    this.log.push(`session ${this.session} connected`)
    // An unplanned loss (the gateway went away): keep trying, as firmware would.
    c.on('close', () => { if (this.c === c) { this.c = null; this.log.push(`session ${this.session} lost`); this.reconnectSoon() } })
    c.on('message', (topic, payload) => {
      try { this.onMessage(topic, payload) } catch (err) { this.log.push(`message error: ${(err as Error).message}`) }
    })
    const granted = await c.subscribeAsync([this.t.announce, this.t.chunk], { qos: 1 })
    if (granted.some((g) => g.qos === 128)) throw new Error(`ota subscription refused: ${JSON.stringify(granted)}`)
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (topic === this.t.announce) return this.onAnnounce(payload)
    if (topic === this.t.chunk) return this.onChunk(payload)
  }

  private onAnnounce(payload: Buffer): void {
    const a = decodeAnnounce(payload)
    if (!a) return
    if (a.version === this.version) { this.log.push(`announce of ${a.version}: already running it`); return }
    if (this.dl && this.dl.a.job === a.job && this.dl.a.sha256 === a.sha256) {
      this.log.push(`resume job ${a.job} at ${this.dl.good}`)
    } else {
      this.dl = { a, buf: Buffer.alloc(a.size), good: 0, pending: new Map(), next: 0, inflight: new Set(), reported: 0 }
      this.transfer = { start: performance.now(), end: 0 }
      this.log.push(`new job ${a.job}: ${a.size} bytes of ${a.version}`)
    }
    const d = this.dl
    this.paused = false
    d.next = d.good
    d.inflight.clear()
    d.pending.clear()
    this.status({ job: a.job, state: 'downloading', offset: d.good })
    this.pump()
  }

  private onChunk(payload: Buffer): void {
    const d = this.dl
    if (!d) return
    const { job, offset, data } = decodeChunk(payload)
    if (job !== d.a.job || offset < d.good) return
    d.inflight.delete(offset)
    if (offset > d.good) { d.pending.set(offset, Buffer.from(data)); return this.pump() }
    data.copy(d.buf, offset)
    d.good += data.length
    for (let p = d.pending.get(d.good); p; p = d.pending.get(d.good)) { d.pending.delete(d.good); p.copy(d.buf, d.good); d.good += p.length }
    if (d.good - d.reported >= 64 * 1024 && d.good < d.a.size) { d.reported = d.good; this.status({ job: d.a.job, state: 'downloading', offset: d.good }) }
    if (this.o.dropAfterBytes !== undefined && !this.dropped && d.good >= this.o.dropAfterBytes) { this.drop(); return }
    if (this.o.pauseAtBytes !== undefined && !this.pausedOnce && d.good >= this.o.pauseAtBytes) {
      this.pausedOnce = this.paused = true
      if (this.timer) clearTimeout(this.timer)
      return
    }
    if (d.good >= d.a.size) { void this.complete(); return }
    this.pump()
  }

  private pump(): void {
    const d = this.dl
    const c = this.c
    if (!d || !c?.connected || this.paused) return
    const window = this.o.window ?? 4
    while (d.inflight.size < window && d.next < d.a.size) {
      const offset = d.next
      d.inflight.add(offset)
      d.next += d.a.chunkSize
      this.requests.push({ offset, session: this.session })
      c.publish(this.t.request, encodeRequest({ job: d.a.job, offset, length: null }), { qos: 0 })
    }
    // No answer for a while: ask again from the last good offset.
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      if (!this.dl || this.stopped) return
      this.log.push(`timeout: re-requesting from ${this.dl.good}`)
      this.dl.next = this.dl.good
      this.dl.inflight.clear()
      this.pump()
    }, this.o.requestTimeoutMs ?? 3000)
  }

  private drop(): void {
    this.dropped = true
    this.log.push(`dropping the connection at ${this.dl?.good}`)
    if (this.timer) clearTimeout(this.timer)
    const c = this.c!
    this.c = null
    c.stream.destroy()
    void endClient(c)
    this.reconnectSoon()
  }

  private reconnectSoon(): void {
    setTimeout(() => {
      if (this.stopped || this.c) return
      this.connectSession().catch((err: Error) => { this.log.push(`reconnect failed: ${err.message}`); this.reconnectSoon() })
    }, this.o.reconnectDelayMs ?? 300)
  }

  private async complete(): Promise<void> {
    if (this.timer) clearTimeout(this.timer)
    if (this.transfer) this.transfer.end = performance.now()
    const d = this.dl!
    if (this.o.corrupt) d.buf[Math.floor(d.buf.length / 2)]! ^= 0x01
    const got = createHash('sha256').update(d.buf).digest('hex')
    this.dl = null
    if (got !== d.a.sha256) {
      await this.status({ job: d.a.job, state: 'failed', reason: `sha256 mismatch: announced ${d.a.sha256}, computed ${got}` })
      return
    }
    if (this.o.publicKey && !(d.a.signature && verify(null, d.buf, this.o.publicKey, Buffer.from(d.a.signature, 'base64')))) {
      await this.status({ job: d.a.job, state: 'failed', reason: 'signature does not verify' })
      return
    }
    await this.status({ job: d.a.job, state: 'applied' })
    // Reboot into the new image.
    const c = this.c
    this.c = null
    if (c) await endClient(c)
    const behaviour = this.o.afterApply ?? 'healthy'
    this.log.push(`rebooting (${behaviour})`)
    if (behaviour === 'never') return
    if (behaviour !== 'old') this.version = d.a.version
    await new Promise((r) => setTimeout(r, this.o.rebootMs ?? 200))
    if (this.o.holdReboot) await new Promise<void>((r) => { this.release = r })
    // The gateway may be down meanwhile: keep trying, as firmware would.
    while (!this.stopped) {
      try { await this.boot(); return } catch (err) {
        this.log.push(`boot connect failed: ${(err as Error).message}`)
        await new Promise((r) => setTimeout(r, this.o.reconnectDelayMs ?? 300))
      }
    }
  }

  private status(s: DeviceStatus): Promise<void> {
    this.statuses.push(s)
    const c = this.c
    if (!c) return Promise.resolve()
    return c.publishAsync(this.t.status, encodeStatus(s), { qos: 1 }).then(() => undefined, (err: Error) => { this.log.push(`status not sent: ${err.message}`) })
  }
}
