// Broker-thread side of the outbox: batches appends per event-loop turn and talks to the worker thread.
import { Worker, type MessagePort } from 'node:worker_threads'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { RawReading } from '../readings.ts'
import { OutboxError, type AppendOwner, type ClaimedRow, type Outbox, type OutboxStats, type DropReason } from './types.ts'
import { sharedNow, type FromWorker, type LatestReading, type OutboxRecovery, type ToWorker, type UserPropertiesAt, type WorkerInit } from './protocol.ts'

export interface OutboxClientOptions extends Omit<WorkerInit, 'maintenanceMs' | 'latestEveryMs'> {
  /** Flush a batch to the worker once this many readings wait (else at the end of the event-loop turn). */
  batchRows: number
  maintenanceMs?: number
  /** The checkpointer thread exits after the WAL stayed fully checkpointed this long (default 30 s). */
  checkpointIdleMs?: number
  /** How often each device's newest reading is reported to onLatest listeners (default 250 ms; 0: never). */
  latestEveryMs?: number
  /** Device and link names kept as numbers before the table starts over (default 65536). */
  maxNames?: number
  log: Logger
}

/** `refused` is set when the reading was not stored because it does not decode (it is still acknowledged). */
type Done = (err: Error | null, refused?: string) => void

/** Readings waiting for the next flush, kept as parallel arrays (no object per reading). */
class PendingBatch {
  devices: string[] = []
  links: string[] = []
  payloads: Uint8Array[] = []
  /** A callback per reading, or the owner that is answered with the tag at the same index. */
  owners: (Done | AppendOwner)[] = []
  tags: number[] = []
  /** Only readings with MQTT 5 user properties have an entry: the others pay nothing for them. */
  userProperties: UserPropertiesAt | null = null
  bytes = 0
  get size(): number { return this.devices.length }

  answer(i: number, err: Error | null, refused?: string): void {
    answerAppend(this.owners[i]!, this.tags[i]!, err, refused)
  }
}

/** An append's answer: stored (err null), refused as undecodable (`refused`), or failed. */
function answerAppend(owner: Done | AppendOwner, tag: number, err: Error | null, refused?: string): void {
  if (typeof owner === 'function') owner(err, refused)
  else owner.settled(tag, err, refused)
}

/**
 * Device and link names cross to the worker as numbers: a structured clone of a string per reading was a tenth of
 * the broker thread at 100k readings/s. Each name is sent once; the table starts over when it grows too large
 * (an open broker takes any device id).
 */
const MAX_NAMES = 1 << 16

export interface CommitInfo {
  /** Readings stored by this commit, per device link (mqtt, serial, ...). */
  storedByLink: Map<string, number>
  /** Devices that had readings stored, with their link. */
  devices: Map<string, string>
  latencyMs: number
  /** Where the time went (ms): waiting for the worker, decoding, the SQLite write with its fsync, the way back. */
  phases: { queueMs: number; decodeMs: number; writeMs: number; handBackMs: number }
}

/** Compiled (dist/): the worker module is plain JS. From source: a plain-JS entry registers tsx in the thread first. */
function spawnWorker(module: 'worker' | 'checkpointer', data: object, name: string, transferList: MessagePort[] = []): Worker {
  const compiled = import.meta.url.endsWith('.js')
  if (compiled) return new Worker(new URL(`./${module}.js`, import.meta.url), { workerData: data, name, transferList })
  return new Worker(new URL('./worker-boot.mjs', import.meta.url), { workerData: { ...data, entry: new URL(`./${module}.ts`, import.meta.url).href }, name, transferList })
}

export class OutboxClient implements Outbox {
  private worker: Worker | null = null
  private checkpointer: Worker | null = null
  private pending = new PendingBatch()
  private flushScheduled = false
  private readonly pendingAcks = new Map<string, number[]>()
  private readonly names = new Map<string, number>()
  private newNames: string[] = []
  private nextId = 1
  private readonly inflightAppends = new Map<number, { batch: PendingBatch; sentAt: number; sentAtShared: number }>()
  private readonly requests = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private readonly events = new EventEmitter()
  private closed = false
  private closing = false
  private fatal: Error | null = null
  lastRowId = 0
  /** Set when the outbox file was found corrupted at start, moved aside and salvaged (see salvage.ts). */
  recovery: OutboxRecovery | null = null

  constructor(private readonly opts: OutboxClientOptions) {
    this.events.setMaxListeners(0)
  }

  async start(): Promise<void> {
    const { log, batchRows: _b, maintenanceMs, latestEveryMs, checkpointIdleMs: _c, maxNames: _n, ...init } = this.opts
    const workerData: WorkerInit = { ...init, autoCheckpoint: false, maintenanceMs: maintenanceMs ?? 250, latestEveryMs: latestEveryMs ?? 250 }
    // history tap (gateway/history/tap.ts): the port moves to the outbox worker, which posts committed readings on it.
    const worker = spawnWorker('worker', workerData, 'edgeway-outbox', init.tap ? [init.tap] : [])
    this.worker = worker
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: FromWorker): void => {
        if (m.t === 'ready') {
          this.lastRowId = m.lastRowId
          this.recovery = m.recovery ?? null
          worker.off('error', reject)
          resolve()
        } else if (m.t === 'error') {
          reject(new Error(m.message))
        }
      }
      worker.on('message', onMessage)
      worker.once('error', reject)
      worker.once('exit', (code) => reject(new Error(`outbox worker exited with code ${code} before it was ready`)))
    })
    worker.on('message', (m: FromWorker) => this.onMessage(m))
    worker.on('error', (err) => this.die(err))
    worker.on('exit', (code) => { if (!this.closed) this.die(new Error(`outbox worker exited unexpectedly (code ${code})`)) })
    log.debug({ file: this.opts.file, lastRowId: this.lastRowId }, 'outbox open')
  }

  /** Started by the first write (append, or an ack whose rows maintenance deletes); it exits by itself when idle. */
  private ensureCheckpointer(): void {
    if (this.checkpointer || this.closing || !this.worker) return
    const cp = spawnWorker('checkpointer', { file: this.opts.file, intervalMs: 200, idleExitMs: this.opts.checkpointIdleMs ?? 30000 }, 'edgeway-checkpoint')
    cp.on('message', (m: { t: string; message?: string }) => {
      if (m.t === 'error') this.opts.log.warn({ err: m.message }, 'outbox checkpoint failed: the WAL file grows until it succeeds (retried every 200 ms, logged once)')
      if (m.t === 'recovered') this.opts.log.info('outbox checkpoints succeed again')
      if (m.t === 'idle' && this.checkpointer === cp) this.checkpointer = null
    })
    cp.on('error', (err) => {
      this.opts.log.error({ err: err.message }, 'outbox checkpointer died: a new one starts with the next write')
      if (this.checkpointer === cp) this.checkpointer = null
    })
    this.checkpointer = cp
  }

  append(reading: RawReading, done: Done): void {
    this.add(reading, done, 0)
  }

  appendOwned(reading: RawReading, owner: AppendOwner, tag: number): void {
    this.add(reading, owner, tag)
  }

  private add(reading: RawReading, owner: Done | AppendOwner, tag: number): void {
    if (this.closed || this.fatal) {
      answerAppend(owner, tag, new OutboxError(this.fatal ? `outbox failed: ${this.fatal.message}` : 'outbox closed', 'closed'))
      return
    }
    const p = this.pending
    p.devices.push(reading.device)
    p.links.push(reading.link)
    p.payloads.push(reading.payload)
    p.owners.push(owner)
    p.tags.push(tag)
    if (reading.userProperties !== undefined) (p.userProperties ??= []).push([p.size - 1, reading.userProperties])
    p.bytes += reading.payload.byteLength
    if (p.size >= this.opts.batchRows) this.flush()
    else if (!this.flushScheduled) {
      this.flushScheduled = true
      // setImmediate: after every packet of this socket read has been parsed, so one read = one batch.
      setImmediate(() => this.flush())
    }
  }

  private flush(): void {
    this.flushScheduled = false
    const batch = this.pending
    if (batch.size === 0 || !this.worker) return
    this.pending = new PendingBatch()
    const id = this.nextId++
    const reset = this.names.size >= (this.opts.maxNames ?? MAX_NAMES)
    if (reset) this.names.clear()
    // One buffer of its own (never Node's shared pool) so it can be transferred to the worker without a copy.
    const data = new Uint8Array(batch.bytes)
    const n = batch.size
    // lengths, device name numbers, link name numbers
    const meta = new Uint32Array(n * 3)
    let off = 0
    for (let i = 0; i < n; i++) {
      const p = batch.payloads[i]!
      data.set(p, off)
      off += p.byteLength
      meta[i] = p.byteLength
      meta[n + i] = this.nameId(batch.devices[i]!)
      meta[2 * n + i] = this.nameId(batch.links[i]!)
    }
    batch.payloads = []
    this.inflightAppends.set(id, { batch, sentAt: performance.now(), sentAtShared: sharedNow() })
    const names = this.newNames
    this.newNames = []
    const m: ToWorker = { t: 'append', id, reset, names, meta, data, receivedAt: Date.now(), ...(batch.userProperties ? { userProperties: batch.userProperties } : {}) }
    this.worker.postMessage(m, [data.buffer, meta.buffer])
  }

  private nameId(name: string): number {
    let k = this.names.get(name)
    if (k === undefined) {
      k = this.names.size
      this.names.set(name, k)
      this.newNames.push(name)
    }
    return k
  }

  claim(upstream: string, limit: number): Promise<ClaimedRow[]> {
    return this.request<ClaimedRow[]>((id) => ({ t: 'claim', id, upstream, limit }))
  }

  /** Upstreams settle one row at a time: acks are gathered and cross to the worker once per event-loop turn. */
  ack(upstream: string, rowIds: number[]): void {
    if (!rowIds.length) return
    this.ensureCheckpointer()
    const ids = this.pendingAcks.get(upstream)
    if (ids) { for (const id of rowIds) ids.push(id); return }
    this.pendingAcks.set(upstream, [...rowIds])
    if (this.pendingAcks.size === 1) setImmediate(() => this.flushAcks())
  }

  private flushAcks(): void {
    if (this.pendingAcks.size === 0) return
    const acks = [...this.pendingAcks]
    this.pendingAcks.clear()
    for (const [upstream, ids] of acks) this.post({ t: 'ack', upstream, ids })
  }

  deadLetter(upstream: string, rowId: number, reason: string): void {
    this.post({ t: 'dead', upstream, id: rowId, reason })
  }

  release(upstream: string, rowIds?: number[]): void {
    this.post(rowIds ? { t: 'release', upstream, ids: rowIds } : { t: 'release', upstream })
  }

  stats(): Promise<OutboxStats> {
    return this.request<OutboxStats>((id) => ({ t: 'stats', id }))
  }

  onAppended(listener: (lastRowId: number) => void): () => void {
    this.events.on('appended', listener)
    return () => this.events.off('appended', listener)
  }

  onDropped(listener: (d: { reason: DropReason; rows: number; bytes: number }) => void): void {
    this.events.on('dropped', listener)
  }

  onFailure(listener: (err: Error) => void): void {
    this.events.on('failure', listener)
  }

  /** Commits what is pending, then closes the database. */
  async close(): Promise<void> {
    if (this.closed || !this.worker) return
    this.closing = true
    this.flush()
    const worker = this.worker
    const cp = this.checkpointer
    if (cp) {
      // Stopped first, so the writer's close is the last connection and folds the WAL into the database.
      const closed = new Promise<void>((resolve) => { cp.once('exit', () => resolve()); cp.once('message', () => resolve()) })
      cp.postMessage({ t: 'close' })
      await closed
      await cp.terminate()
      this.checkpointer = null
    }
    await this.request((id) => ({ t: 'close', id })).catch(() => undefined)
    this.closed = true
    await worker.terminate()
    this.worker = null
  }

  private request<T>(make: (id: number) => ToWorker): Promise<T> {
    if (this.fatal) return Promise.reject(new OutboxError(`outbox failed: ${this.fatal.message}`, 'closed'))
    if (!this.worker || this.closed) return Promise.reject(new OutboxError('outbox closed', 'closed'))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      this.requests.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.post(make(id))
    })
  }

  private post(m: ToWorker): void {
    // Appends must reach the worker before a later claim/ack from this thread, and gathered acks before anything
    // else (a release or claim must see them): flush first.
    if (this.pending.size) this.flush()
    if (this.pendingAcks.size && m.t !== 'ack') this.flushAcks()
    this.worker?.postMessage(m)
  }

  private onMessage(m: FromWorker): void {
    switch (m.t) {
      case 'appended': {
        this.lastRowId = m.lastRowId
        this.ensureCheckpointer()
        const refused = new Map<string, string>()
        for (const r of m.refused) refused.set(`${r.id}:${r.index}`, r.reason)
        const devices = new Map<string, string>()
        const storedByLink = new Map<string, number>()
        // Batches are nearly always one link: count runs, not a map update per reading.
        let runLink: string | null = null
        let run = 0
        let latencyMs = 0
        let queueMs = 0
        for (const id of m.ids) {
          const entry = this.inflightAppends.get(id)
          if (!entry) continue
          this.inflightAppends.delete(id)
          const b = entry.batch
          latencyMs = Math.max(latencyMs, performance.now() - entry.sentAt)
          queueMs = Math.max(queueMs, m.phases.startedAt - entry.sentAtShared)
          for (let i = 0; i < b.size; i++) {
            const why = refused.size > 0 ? refused.get(`${id}:${i}`) : undefined
            if (why !== undefined) {
              this.events.emit('refused', { device: b.devices[i]!, link: b.links[i]!, reason: why })
              b.answer(i, null, why)
              continue
            }
            const link = b.links[i]!
            if (link !== runLink) {
              if (runLink !== null) storedByLink.set(runLink, (storedByLink.get(runLink) ?? 0) + run)
              runLink = link
              run = 0
            }
            run++
            devices.set(b.devices[i]!, link)
            b.answer(i, null)
          }
        }
        if (runLink !== null) storedByLink.set(runLink, (storedByLink.get(runLink) ?? 0) + run)
        const phases = { queueMs, decodeMs: m.phases.decodeMs, writeMs: m.phases.writeMs, handBackMs: sharedNow() - m.phases.sentAt }
        this.events.emit('committed', { storedByLink, devices, latencyMs, phases } satisfies CommitInfo)
        this.events.emit('appended', m.lastRowId)
        break
      }
      case 'appendFailed': {
        const err = new OutboxError(m.code === 'disk_full' ? `outbox disk full: ${m.message}` : `outbox write failed: ${m.message}`, m.code)
        let count = 0
        for (const id of m.ids) {
          const b = this.inflightAppends.get(id)?.batch
          if (!b) continue
          count += b.size
          for (let i = 0; i < b.size; i++) b.answer(i, err)
          this.inflightAppends.delete(id)
        }
        this.events.emit('appendFailed', err, count)
        break
      }
      case 'held':
        this.events.emit('held', new OutboxError(`outbox disk full: ${m.message}`, m.code))
        break
      case 'claimed': this.resolveRequest(m.id, m.rows); break
      case 'stats': this.resolveRequest(m.id, m.stats); break
      case 'closed': this.resolveRequest(m.id, undefined); break
      case 'dropped':
        this.events.emit('dropped', { reason: m.reason, rows: m.rows, bytes: m.bytes })
        break
      case 'latest':
        for (const r of m.readings) this.events.emit('latest', r)
        break
      case 'error':
        if (m.id !== undefined && this.requests.has(m.id)) {
          const r = this.requests.get(m.id)!
          this.requests.delete(m.id)
          r.reject(new Error(m.message))
        } else {
          this.opts.log.error({ err: m.message }, 'outbox worker error')
        }
        break
      case 'ready': break
    }
  }

  /** After each commit: how many readings were stored and for which devices (metrics, last-seen). */
  onCommitted(listener: (info: CommitInfo) => void): void {
    this.events.on('committed', listener)
  }

  /** Each device's newest stored reading, at most once per latestEveryMs per device (live views). */
  onLatest(listener: (r: LatestReading) => void): void {
    this.events.on('latest', listener)
  }

  /** The disk is full: appends wait unacknowledged (up to diskFullHoldMs) and are retried; once per full spell. */
  onAppendHeld(listener: (err: OutboxError) => void): void {
    this.events.on('held', listener)
  }

  /** A commit failed: none of its `count` readings was stored or acknowledged. */
  onAppendFailed(listener: (err: OutboxError, count: number) => void): void {
    this.events.on('appendFailed', listener)
  }

  /** A reading that does not decode: acknowledged (done(null, reason)) but not stored. */
  onRefused(listener: (r: { device: string; link: string; reason: string }) => void): void {
    this.events.on('refused', listener)
  }

  private resolveRequest(id: number, value: unknown): void {
    const r = this.requests.get(id)
    if (!r) return
    this.requests.delete(id)
    r.resolve(value)
  }

  private die(err: Error): void {
    if (this.fatal) return
    this.fatal = err
    this.opts.log.fatal({ err }, 'outbox worker died: no reading will be acknowledged')
    const e = new OutboxError(`outbox failed: ${err.message}`, 'closed')
    const batches = [...[...this.inflightAppends.values()].map((x) => x.batch), this.pending]
    this.inflightAppends.clear()
    this.pending = new PendingBatch()
    for (const b of batches) for (let i = 0; i < b.size; i++) b.answer(i, e)
    for (const r of this.requests.values()) r.reject(e)
    this.requests.clear()
    this.events.emit('failure', err)
  }
}
