// The device journal, main-thread side: listens to the gateway's events, buffers entries and hands them to the
// journal's side of the records thread (gateway/records/) in batches (every flushMs, or sooner when many are
// waiting); the last payload of each device is kept in memory and flushed less often. Nothing here touches the disk
// or sits on the ack path: a reading costs one Map.set per coalesced "latest" report (a few per second per device).
import type { MessagePort } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { GatewayBus, GatewayEvents } from '../events.ts'
import {
  DEFAULT_BOUNDS, boundedPayload, commandEntry, firmwareEntry, otaEntry, presenceEntry, refusalEntry,
  type Bounds, type EntryKind, type JournalEntry, type LastPayload, type OtaProgressLike,
} from './entries.ts'
import type { DeviceJournalView, FromJournalWorker, ToJournalWorker } from './protocol.ts'
import { RecordsThread } from '../records/thread.ts'

export interface DeviceJournalOptions {
  file: string
  /** The gateway's data dir: the worker reads the device's OTA jobs from its ota.db. */
  dataDir: string
  /** The thread the journal shares with history (default: a thread of its own). */
  thread?: RecordsThread
  bounds?: Partial<Bounds>
  flushMs?: number
  payloadFlushMs?: number
  /** Devices whose last payload is kept in memory (default 10,000). */
  maxDevices?: number
  /** Entries held while the worker is busy or gone; beyond this the oldest are dropped (and counted). */
  maxPending?: number
  log: Logger
  now?: () => number
}

const OTA_ORDER = ['announced', 'downloading', 'applied']
/** announced < downloading < applied < any final state. */
const otaRank = (state: string): number => { const i = OTA_ORDER.indexOf(state); return i < 0 ? OTA_ORDER.length : i }

export class DeviceJournal {
  /** Our side of the channel to the journal in the records thread (null before start, after close or once it died). */
  private port: MessagePort | null = null
  private readonly thread: RecordsThread
  private lastError = ''
  private lastErrorAt = 0
  private pending: JournalEntry[] = []
  private readonly payloads = new Map<string, LastPayload>()
  private readonly dirtyPayloads = new Set<string>()
  private readonly reads = new Map<number, { resolve: (v: DeviceJournalView) => void; reject: (e: Error) => void }>()
  private readonly otaStates = new Map<number, string>()
  private nextId = 1
  private timers: NodeJS.Timeout[] = []
  private readonly unsubscribe: (() => void)[] = []
  private closing: Promise<void> | null = null
  private readonly bounds: Bounds
  private readonly now: () => number
  /** Entries dropped because the worker could not keep up (or died). */
  dropped = 0

  constructor(private readonly o: DeviceJournalOptions) {
    this.bounds = { ...DEFAULT_BOUNDS, ...o.bounds }
    this.now = o.now ?? Date.now
    this.thread = o.thread ?? new RecordsThread()
  }

  async start(): Promise<void> {
    let lost: (reason: string) => void = () => undefined
    const p = this.thread.attach('journal', { file: this.o.file, dataDir: this.o.dataDir, bounds: this.bounds }, [], (reason) => lost(reason))
    await new Promise<void>((resolve, reject) => {
      lost = (reason) => reject(new Error(reason))
      const onMsg = (m: FromJournalWorker): void => {
        if (m.t === 'ready') { p.off('message', onMsg); resolve() }
        else if (m.t === 'error') { p.off('message', onMsg); reject(new Error(m.message)) }
      }
      p.on('message', onMsg)
    }).catch(async (err: Error) => { p.close(); await this.thread.detach('journal'); throw err })
    lost = (reason) => { this.o.log.error({ err: reason }, 'device journal worker failed'); this.ended() }
    p.on('message', (m: FromJournalWorker) => this.onMessage(m))
    // The journal's side closes the port once journal.db is closed (close()), or the thread ended under it.
    p.on('close', () => { if (this.port === p) this.ended() })
    this.port = p
    this.timers.push(
      setInterval(() => this.flush(false), this.o.flushMs ?? 1000),
      setInterval(() => this.flush(true), this.o.payloadFlushMs ?? 5000),
    )
    for (const t of this.timers) t.unref()
  }

  /** Records the device events of the bus (presence, command results, firmware, refusals). */
  attach(bus: GatewayBus): void {
    const on = <K extends keyof GatewayEvents>(event: K, fn: (...a: GatewayEvents[K]) => void): void => {
      bus.on(event, fn as never)
      this.unsubscribe.push(() => bus.off(event, fn as never))
    }
    on('deviceOnline', (e) => this.record(presenceEntry(e, true, this.now())))
    on('deviceOffline', (e) => this.record(presenceEntry(e, false, this.now())))
    on('firmware', (e) => this.record(firmwareEntry(e, this.now())))
    on('refusal', (e) => this.record(refusalEntry(e, this.now())))
    on('commandDone', (e) => this.record(commandEntry(e, this.now())))
  }

  record(e: JournalEntry | null): void {
    if (!e || this.closing) return
    this.pending.push(e)
    const max = this.o.maxPending ?? 10_000
    if (this.pending.length > max) { this.dropped += this.pending.length - max; this.pending.splice(0, this.pending.length - max) }
    if (this.pending.length >= 500) this.flush(false)
  }

  /** A device's newest stored reading (the outbox's coalesced "latest" report): memory only until the next payload flush. */
  latest(r: { device: string; link: string; ts: number; seq: number | null; payload: string | null }): void {
    if (this.closing) return
    // Least recently reporting first in the Map: beyond maxDevices (anonymous clients can invent names) they go first.
    this.payloads.delete(r.device)
    this.payloads.set(r.device, { device: r.device, link: r.link, ts: r.ts, seq: r.seq, at: this.now(), payload: boundedPayload(r.payload) })
    this.dirtyPayloads.add(r.device)
    if (this.payloads.size > (this.o.maxDevices ?? 10_000)) {
      const oldest = this.payloads.keys().next().value as string
      this.payloads.delete(oldest)
      this.dirtyPayloads.delete(oldest)
    }
  }

  /** OTA progress (from a push by the dashboard or the CLI): one entry per job state, not per chunk. */
  ota(p: OtaProgressLike): void {
    // Progress can report "announced" after the first chunk was served (the push reports it once the announce is
    // published): a job's states only move forward here.
    const prev = this.otaStates.get(p.job)
    if (prev !== undefined && otaRank(p.state) <= otaRank(prev)) return
    this.otaStates.set(p.job, p.state)
    if (this.otaStates.size > 1000) this.otaStates.delete(this.otaStates.keys().next().value as number)
    this.record(otaEntry(p, this.now()))
  }

  /** One device's journal, newest first per kind; what is still buffered is flushed first, so it is included. */
  async read(device: string, limits: Partial<Record<EntryKind, number>> = {}): Promise<DeviceJournalView> {
    this.flush(false)
    if (!this.port) throw new Error('the device journal is not running')
    const id = this.nextId++
    const view = await new Promise<DeviceJournalView>((resolve, reject) => {
      this.reads.set(id, { resolve, reject })
      this.post({ t: 'read', id, device, limits })
    })
    // The in-memory payload is newer than the flushed one.
    const mem = this.payloads.get(device)
    if (mem && (!view.lastPayload || mem.at >= view.lastPayload.at)) view.lastPayload = mem
    return view
  }

  /** Flushes everything and stops the worker. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const t of this.timers) clearInterval(t)
      for (const u of this.unsubscribe.splice(0)) u()
      this.flush(true)
      const p = this.port
      if (!p) return
      await new Promise<void>((resolve) => {
        p.once('close', () => resolve())
        this.post({ t: 'close' })
      })
      this.ended()
    })()
    return this.closing
  }

  get pendingEntries(): number { return this.pending.length }

  private flush(withPayloads: boolean): void {
    if (!this.port) return
    const payloads: LastPayload[] = []
    if (withPayloads) {
      for (const d of this.dirtyPayloads) { const p = this.payloads.get(d); if (p) payloads.push(p) }
      this.dirtyPayloads.clear()
    }
    if (this.pending.length === 0 && payloads.length === 0) return
    const entries = this.pending
    this.pending = []
    this.post({ t: 'write', entries, payloads })
  }

  private post(m: ToJournalWorker): void { this.port?.postMessage(m) }

  /** The journal's side is gone (closed, or the thread ended): pending reads fail, and the thread may end. */
  private ended(): void {
    const p = this.port
    if (!p) return
    this.port = null
    p.close()
    for (const r of this.reads.values()) r.reject(new Error('the device journal is closed'))
    this.reads.clear()
    void this.thread.detach('journal')
  }

  private onMessage(m: FromJournalWorker): void {
    if (m.t === 'read') {
      const r = this.reads.get(m.id)
      if (!r) return
      this.reads.delete(m.id)
      if (m.view) r.resolve(m.view)
      else r.reject(new Error(m.error ?? 'journal read failed'))
    } else if (m.t === 'error') {
      // Once per distinct error a minute: a full disk fails every flush until space is back.
      const now = Date.now()
      if (m.message === this.lastError && now - this.lastErrorAt < 60_000) return
      this.lastError = m.message
      this.lastErrorAt = now
      this.o.log.warn({ err: m.message }, 'device journal write failed (the journal goes on; repeats within a minute are not logged)')
    }
  }
}

