// Main-thread side of the history store: starts history in the records thread (gateway/records/), hands the outbox
// the port its tap posts committed readings on (outbox worker -> records thread directly: the broker thread never
// sees them), asks the worker side's queries and turns its totals into metrics. Constructors do no I/O; start()
// attaches to the thread.
import { MessageChannel, type MessagePort } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { HistoryConfig } from './config.ts'
import type { FromHistory, HistoryInit, HistoryQuery, HistoryStats, QueryAnswers, ToHistory } from './protocol.ts'
import { RecordsThread } from '../records/thread.ts'

export interface HistoryServiceOptions {
  file: string
  outboxFile: string
  config: HistoryConfig
  log: Logger
  /** The thread history shares with the device journal (default: a thread of its own). */
  thread?: RecordsThread
  /** Called with the growth of the worker's totals at every stats poll (metrics). */
  onStats?: (delta: { points: number; refused: number; pruned: { tier: 'raw' | 'rollup'; reason: 'age' | 'bytes'; n: number }[] }, s: HistoryStats) => void
  commitMs?: number
  pruneMs?: number
  statsMs?: number
}

export class HistoryService {
  private readonly channel = new MessageChannel()
  private tapGiven = false
  private readonly thread: RecordsThread
  /** Our side of the channel to history in the records thread (null before start, after stop or once it died). */
  private port: MessagePort | null = null
  private nextId = 1
  private readonly requests = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private statsTimer: NodeJS.Timeout | null = null
  private last: HistoryStats | null = null
  private failure: string | null = null
  private readonly log: Logger

  private lastError = ''
  private lastErrorAt = 0

  constructor(private readonly opts: HistoryServiceOptions) {
    this.log = opts.log.child({ component: 'history' })
    this.thread = opts.thread ?? new RecordsThread()
  }

  /** The port the outbox worker posts committed readings on (give it to OutboxClient as `tap`, once). */
  tapPort(): MessagePort {
    if (this.tapGiven) throw new Error('history tap port already handed out')
    this.tapGiven = true
    return this.channel.port1
  }

  get raw(): { hours: number } { return { hours: this.opts.config.rawHours } }

  /** Opens history.db in the records thread. Readings queue on the tap until catchUp(), which runs once the outbox is open. */
  async start(): Promise<void> {
    const c = this.opts.config
    const init: HistoryInit & { tap: MessagePort } = {
      file: this.opts.file, outboxFile: this.opts.outboxFile, rawHours: c.rawHours, rollupDays: c.rollupDays, maxBytes: c.maxBytes,
      maxMetricsPerDevice: c.maxMetricsPerDevice, maxSeries: c.maxSeries,
      commitMs: this.opts.commitMs ?? 500, pruneMs: this.opts.pruneMs ?? 60_000, tap: this.channel.port2,
    }
    const port = this.thread.attach('history', init, [this.channel.port2], (reason) => this.die(reason))
    this.port = port
    port.on('message', (m: FromHistory) => this.onMessage(m))
    // History closes its side when it cannot open history.db (it said why in a 'failed' message first).
    port.on('close', () => { if (this.port === port) this.die(this.lastError || 'history closed its side') })
  }

  /** After the outbox opened: reads rows committed past history's position, then follows the tap. */
  async catchUp(): Promise<{ lastRow: number; caughtUp: number }> {
    const w = this.port
    if (!w) return { lastRow: 0, caughtUp: 0 }
    const ready = new Promise<{ lastRow: number; caughtUp: number }>((resolve, reject) => { this.onReady = resolve; this.onStartFailed = reject })
    w.postMessage({ t: 'catchUp' })
    // History is not the data path: a store that cannot open or catch up is logged (die) and the gateway runs on.
    const r = await ready.catch(() => ({ lastRow: 0, caughtUp: 0 }))
    if (r.caughtUp > 0) this.log.info({ rows: r.caughtUp }, 'history caught up with readings committed to the outbox before the last stop')
    this.statsTimer = setInterval(() => { void this.pollStats() }, this.opts.statsMs ?? 5000)
    this.statsTimer.unref()
    return r
  }

  private onReady: ((r: { lastRow: number; caughtUp: number }) => void) | null = null
  private onStartFailed: ((e: Error) => void) | null = null

  query<K extends HistoryQuery['q']>(query: Extract<HistoryQuery, { q: K }>): Promise<QueryAnswers[K]> {
    if (!this.port) return Promise.reject(new Error(this.failure ?? 'history is not running'))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.requests.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.port!.postMessage({ t: 'query', id, query } satisfies ToHistory)
    })
  }

  /** Totals since start (the last poll), or null before the first. */
  get stats(): HistoryStats | null { return this.last }

  /** Polls the worker's totals and reports their growth (metrics). */
  async pollStats(): Promise<HistoryStats | null> {
    let s: HistoryStats
    try { s = await this.query({ q: 'stats' }) } catch { return null }
    const p = this.last
    const pruned: { tier: 'raw' | 'rollup'; reason: 'age' | 'bytes'; n: number }[] = []
    for (const tier of ['raw', 'rollup'] as const) {
      for (const reason of ['age', 'bytes'] as const) {
        const n = s.pruned[tier][reason] - (p?.pruned[tier][reason] ?? 0)
        if (n > 0) pruned.push({ tier, reason, n })
      }
    }
    const bytes = pruned.filter((x) => x.reason === 'bytes')
    if (bytes.length) this.log.warn({ maxBytes: this.opts.config.maxBytes, pruned: Object.fromEntries(bytes.map((x) => [x.tier, x.n])) }, 'history reached maxBytes: the oldest points were pruned')
    for (const d of s.refusedDevices) this.log.warn({ device: d, maxMetricsPerDevice: this.opts.config.maxMetricsPerDevice, maxSeries: this.opts.config.maxSeries }, 'history refused new metrics of a device: series bound reached')
    this.opts.onStats?.({ points: s.points - (p?.points ?? 0), refused: s.refused - (p?.refused ?? 0), pruned }, s)
    this.last = s
    return s
  }

  /** After the outbox closed (its tap flushed): writes what is gathered and closes history.db. */
  async stop(): Promise<void> {
    if (this.statsTimer) clearInterval(this.statsTimer)
    const w = this.port
    if (!w) { this.channel.port1.close(); return }
    await this.pollStats()
    // From here on the port closing (history's side does once it closed history.db) is the expected end, not a death.
    this.port = null
    const id = this.nextId++
    const closed = new Promise<void>((resolve) => { this.requests.set(id, { resolve: () => resolve(), reject: () => resolve() }) })
    w.postMessage({ t: 'close', id } satisfies ToHistory)
    w.once('close', () => this.resolveRequest(id, undefined))
    await Promise.race([closed, new Promise((r) => setTimeout(r, 10_000).unref())])
    w.close()
    await this.thread.detach('history')
    if (!this.tapGiven) this.channel.port1.close()
  }

  private onMessage(m: FromHistory): void {
    switch (m.t) {
      case 'ready': this.onReady?.({ lastRow: m.lastRow, caughtUp: m.caughtUp }); this.onReady = null; this.onStartFailed = null; break
      case 'answer': this.resolveRequest(m.id, m.value); break
      case 'closed': this.resolveRequest(m.id, undefined); break
      case 'failed':
        if (m.id !== undefined && this.requests.has(m.id)) {
          const r = this.requests.get(m.id)!
          this.requests.delete(m.id)
          r.reject(new Error(m.message))
        } else if (this.onStartFailed) {
          this.onStartFailed(new Error(m.message))
          this.onStartFailed = null
        } else if (m.message !== this.lastError || Date.now() - this.lastErrorAt > 60_000) {
          // Once per distinct error a minute: a full disk fails every commit (twice a second) until space is back.
          this.lastError = m.message
          this.lastErrorAt = Date.now()
          this.log.error({ err: m.message }, 'history worker error (history goes on; repeats within a minute are not logged)')
        }
        break
    }
  }

  private resolveRequest(id: number, value: unknown): void {
    const r = this.requests.get(id)
    if (!r) return
    this.requests.delete(id)
    r.resolve(value)
  }

  /** History is not the data path: a dead worker is logged and its queries fail; ingest and acks carry on. */
  private die(message: string): void {
    if (this.failure) return
    this.failure = message
    const w = this.port
    this.port = null
    if (w) { w.close(); void this.thread.detach('history') }
    this.log.error({ err: message }, 'history worker stopped: charts have no history until a restart')
    this.onStartFailed?.(new Error(message))
    for (const r of this.requests.values()) r.reject(new Error(message))
    this.requests.clear()
  }
}
