// OTA over MQTT, gateway side: announces an image on the device's topic, serves chunks the device asks for, follows
// its reports through the job state machine, and keeps jobs durable so a restart resumes. MQTT stays in the broker:
// this module only gets `publish` and the device's uplink messages.
import { createReadStream, createWriteStream } from 'node:fs'
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { createHash, randomBytes } from 'node:crypto'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { isAbsolute, join } from 'node:path'
import { z } from 'zod'
import type { Logger } from 'pino'
import type { GatewayBus } from '../events.ts'
import type { Metrics } from '../metrics.ts'
import type { Device } from '../registry/registry.ts'
import { DEVICE_ID_RE } from '../readings.ts'
import { step, afterRestart, isFinal, type OtaEvent, type OtaJob } from './job.ts'
import type { OtaStore } from './store.ts'
import {
  otaTopics, encodeAnnounce, chunkHeader, chunkRange, parseRequest, parseStatus, CHUNK_HEADER_BYTES, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE,
} from './protocol.ts'

export interface OtaDeps {
  publish(topic: string, payload: string | Buffer, qos: 0 | 1, retain: boolean): Promise<void>
  registry: { get(id: string): Device | undefined; setFirmware(id: string, version: string): void }
  bus: GatewayBus
  store: OtaStore
  log: Logger
  metrics?: Pick<Metrics, 'otaJobs' | 'otaBytes'>
  /** How often the reboot deadline is checked. */
  tickMs?: number
  /** After a gateway restart an applied job's device gets at least this long to report (it could not while we were down). */
  restartGraceMs?: number
}

export const pushParams = z.object({
  device: z.string().regex(DEVICE_ID_RE, 'invalid device id'),
  file: z.string().refine(isAbsolute, 'file must be an absolute path (the CLI resolves it)'),
  version: z.string().min(1).max(64),
  signature: z.string().base64().max(16384).nullable().default(null),
  deadlineMs: z.number().int().min(1000).max(7 * 24 * 3600 * 1000).default(120_000),
  chunkSize: z.number().int().min(MIN_CHUNK_SIZE).max(MAX_CHUNK_SIZE).default(4096),
  /** false: answer once the image is announced; true: answer with the final state (progress meanwhile). */
  wait: z.boolean().default(true),
}).strict()
export type PushParams = z.input<typeof pushParams>
const cancelParams = z.object({ device: z.string().regex(DEVICE_ID_RE, 'invalid device id') }).strict()

/** What progress callbacks and the final answer carry. */
export interface OtaProgress { job: number; device: string; version: string; state: OtaJob['state']; offset: number; size: number; reason: string | null }

interface Active {
  job: OtaJob
  fh: FileHandle
  /** Chunks are read and published one after another per device, so a device sees them in the order it asked. */
  serving: Promise<void>
  watchers: Set<(p: OtaProgress) => void>
  lastProgressAt: number
  lastSavedAt: number
  /** No request seen yet in the device's current connection: the next one is logged as (re)start. */
  fresh: boolean
}

const MAX_IMAGE_BYTES = 64 * 1024 * 1024

export class OtaError extends Error {}

export class OtaService {
  private readonly active = new Map<string, Active>()
  private timer: NodeJS.Timeout | null = null
  private readonly onOnline = ({ device }: { device: string }): void => {
    const a = this.active.get(device)
    if (a) a.fresh = true
    this.event(device, { type: 'online' })
  }
  private readonly onFirmware = ({ device, version, healthy }: { device: string; version: string; healthy: boolean | null }): void =>
    this.event(device, { type: 'firmware', version, healthy })

  constructor(private readonly d: OtaDeps) {}

  async start(): Promise<void> {
    const { store, log } = this.d
    store.open()
    // Listen first: a device may already be back (the broker is up) and report its version any moment.
    this.d.bus.on('deviceOnline', this.onOnline)
    this.d.bus.on('firmware', this.onFirmware)
    const now = Date.now()
    const announce: OtaJob[] = []
    for (const stored of store.active()) {
      const job = afterRestart(stored, now, this.d.restartGraceMs ?? 30_000)
      let fh: FileHandle
      try { fh = await open(store.imagePath(job.id), 'r') } catch (err) {
        this.finish({ ...job, state: 'failed', reason: `image file lost while the gateway was down: ${(err as Error).message}`, updatedAt: now }, null)
        continue
      }
      // A stored image that no longer matches its hash would only fail on the device after a full download.
      const got = job.state === 'applied' ? job.sha256 : await sha256File(store.imagePath(job.id)).catch((err: Error) => err.message)
      if (got !== job.sha256) {
        await fh.close()
        this.finish({ ...job, state: 'failed', reason: `stored image corrupted while the gateway was down (sha256 ${got.slice(0, 64)})`, updatedAt: now }, null)
        continue
      }
      this.active.set(job.device, { job, fh, serving: Promise.resolve(), watchers: new Set(), lastProgressAt: 0, lastSavedAt: now, fresh: true })
      if (job.state === 'announced' || job.state === 'downloading') announce.push(job)
      log.info({ job: job.id, device: job.device, state: job.state, offset: job.offset }, 'ota job resumed after restart')
    }
    for (const job of announce) await this.announce(job)
    this.timer = setInterval(() => { for (const device of [...this.active.keys()]) this.event(device, { type: 'tick' }) }, this.d.tickMs ?? 500)
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.d.bus.off('deviceOnline', this.onOnline)
    this.d.bus.off('firmware', this.onFirmware)
    for (const a of this.active.values()) {
      await a.serving.catch(() => undefined)
      this.d.store.save(a.job)
      await a.fh.close().catch(() => undefined)
    }
    this.active.clear()
    this.d.store.close()
  }

  jobFor(device: string): OtaJob | undefined { return this.active.get(device)?.job }

  /** The `ota.push` control method. */
  async push(raw: unknown, progress: (p: OtaProgress) => void = () => undefined): Promise<OtaProgress> {
    const parsed = pushParams.safeParse(raw)
    if (!parsed.success) throw new OtaError(`ota push: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'params'}: ${i.message}`).join('; ')}`)
    const p = parsed.data
    const { store, log } = this.d
    const dev = this.d.registry.get(p.device)
    if (!dev) throw new OtaError(`ota push: unknown device "${p.device}" (add it with \`edgeway device add\`)`)
    const busy = this.active.get(p.device)
    if (busy) throw new OtaError(`ota push: device "${p.device}" already has OTA job ${busy.job.id} (${busy.job.state}); wait for it to finish`)
    let size: number
    try { size = (await stat(p.file)).size } catch (err) { throw new OtaError(`ota push: cannot read ${p.file}: ${(err as Error).message}`) }
    if (size === 0) throw new OtaError(`ota push: ${p.file} is empty`)
    if (size > MAX_IMAGE_BYTES) throw new OtaError(`ota push: ${p.file} is ${size} bytes; the limit is ${MAX_IMAGE_BYTES}`)

    // Copy into the data dir (the job must survive the source file going away), hashing on the way.
    const tmp = join(store.imagesDir, `incoming-${randomBytes(6).toString('hex')}.bin`)
    const hash = createHash('sha256')
    let copied = 0
    try {
      await pipeline(createReadStream(p.file), new Transform({ transform(c: Buffer, _e, cb) { hash.update(c); copied += c.length; cb(null, c) } }), createWriteStream(tmp))
    } catch (err) {
      await rm(tmp, { force: true })
      throw new OtaError(`ota push: cannot copy ${p.file}: ${(err as Error).message}`)
    }
    if (this.active.has(p.device)) { await rm(tmp, { force: true }); throw new OtaError(`ota push: device "${p.device}" got another OTA job meanwhile`) }
    const now = Date.now()
    const job = store.create({
      device: p.device, version: p.version, previousVersion: dev.firmwareVersion, size: copied, sha256: hash.digest('hex'),
      chunkSize: p.chunkSize, signature: p.signature, state: 'announced', reason: null, offset: 0, createdAt: now, updatedAt: now,
      appliedAt: null, deadlineMs: p.deadlineMs, deadlineAt: null, reconnected: false, lastHealth: null,
    })
    let fh: FileHandle
    try {
      await rename(tmp, store.imagePath(job.id))
      fh = await open(store.imagePath(job.id), 'r')
    } catch (err) {
      store.remove(job.id)
      await rm(tmp, { force: true })
      throw new OtaError(`ota push: cannot store the image: ${(err as Error).message}`)
    }
    const a: Active = { job, fh, serving: Promise.resolve(), watchers: new Set(), lastProgressAt: 0, lastSavedAt: now, fresh: true }
    this.active.set(p.device, a)
    log.info({ job: job.id, device: job.device, version: job.version, previous: job.previousVersion, size: job.size, sha256: job.sha256, chunkSize: job.chunkSize, signed: job.signature !== null }, 'ota job announced')
    const done = p.wait ? new Promise<OtaProgress>((resolve) => {
      const w = (pr: OtaProgress): void => {
        progress(pr)
        if (isFinal(pr.state)) { a.watchers.delete(w); resolve(pr) }
      }
      a.watchers.add(w)
    }) : null
    await this.announce(job)
    progress(toProgress(job))
    return done ? await done : toProgress(job)
  }

  /** The `ota.cancel` control method: ends the device's unfinished job (its announce is cleared; chunks stop). */
  cancel(raw: unknown): OtaProgress {
    const p = cancelParams.safeParse(raw)
    if (!p.success) throw new OtaError(`ota cancel: ${p.error.issues.map((i) => i.message).join('; ')}`)
    const a = this.active.get(p.data.device)
    if (!a) throw new OtaError(`ota cancel: device "${p.data.device}" has no unfinished OTA job`)
    this.event(p.data.device, { type: 'cancel', reason: `cancelled by the operator in state ${a.job.state}` })
    return toProgress(this.d.store.get(a.job.id) ?? a.job)
  }

  /** A device published to `devices/<id>/ota/request` or `.../ota/status` (the broker's ACL let only that device do it). */
  handleUplink(device: string, kind: 'request' | 'status', payload: Buffer): void {
    const a = this.active.get(device)
    if (kind === 'status') {
      const s = parseStatus(payload)
      if (!s.ok) return this.badInput(device, 'status', s.error)
      if (!a || a.job.id !== s.value.job) return this.badInput(device, 'status', `job ${s.value.job} is not this device's active OTA job${a ? ` (that is ${a.job.id})` : ''}`)
      const st = s.value
      this.event(device, st.state === 'downloading' ? { type: 'downloading', offset: st.offset } : st.state === 'applied' ? { type: 'applied' } : { type: 'failed', reason: st.reason })
      return
    }
    const r = parseRequest(payload)
    if (!r.ok) return this.badInput(device, 'request', r.error)
    if (!a || a.job.id !== r.value.job) return this.badInput(device, 'request', `job ${r.value.job} is not this device's active OTA job${a ? ` (that is ${a.job.id})` : ''}`)
    if (a.job.state !== 'announced' && a.job.state !== 'downloading') return this.badInput(device, 'request', `job ${a.job.id} is ${a.job.state}: no more chunks`)
    const range = chunkRange(r.value, a.job.size, a.job.chunkSize)
    if (!range.ok) return this.badInput(device, 'request', range.error)
    const { offset, length } = range.value
    if (a.fresh) {
      a.fresh = false
      this.d.log.info({ job: a.job.id, device, offset, served: a.job.offset }, offset === 0 ? 'ota transfer started' : `ota transfer resumed at offset ${offset}`)
    }
    a.serving = a.serving.then(async () => {
      if (this.active.get(device) !== a) return // the job ended (cancelled) while this request waited
      // Read just this chunk into the outgoing buffer: images are never loaded whole.
      const buf = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + length)
      chunkHeader(a.job.id, offset, buf)
      const { bytesRead } = await a.fh.read(buf, CHUNK_HEADER_BYTES, length, offset)
      await this.d.publish(otaTopics(device).chunk, bytesRead === length ? buf : buf.subarray(0, CHUNK_HEADER_BYTES + bytesRead), 0, false)
      this.d.metrics?.otaBytes.inc(bytesRead)
      if (this.active.get(device) === a) this.event(device, { type: 'served', end: offset + bytesRead })
    }).catch((err: Error) => this.d.log.warn({ job: a.job.id, device, offset, err: err.message }, 'ota chunk not sent'))
  }

  private event(device: string, ev: OtaEvent): void {
    const a = this.active.get(device)
    if (!a) return
    const now = Date.now()
    const s = step(a.job, ev, now)
    if (!s.changed) return
    a.job = s.job
    if (isFinal(s.job.state)) return this.finish(s.job, a)
    if (s.transition) {
      this.d.store.save(s.job)
      a.lastSavedAt = now
      this.d.log.info({ job: s.job.id, device, state: s.job.state, offset: s.job.offset }, `ota job ${s.job.state}`)
      // After `applied` the device reboots: it must not find the announce again and download once more.
      if (s.job.state === 'applied') this.clearAnnounce(device)
    } else if (ev.type === 'downloading' || now - a.lastSavedAt > 1000) {
      this.d.store.save(s.job)
      a.lastSavedAt = now
    }
    if (s.transition || now - a.lastProgressAt >= 100) {
      a.lastProgressAt = now
      for (const w of [...a.watchers]) w(toProgress(s.job))
    }
  }

  private finish(job: OtaJob, a: Active | null): void {
    const { store, log } = this.d
    store.save(job)
    this.active.delete(job.device)
    this.clearAnnounce(job.device)
    if (job.state === 'succeeded') this.d.registry.setFirmware(job.device, job.version)
    this.d.metrics?.otaJobs.inc({ state: job.state })
    const line = { job: job.id, device: job.device, version: job.version, state: job.state, reason: job.reason }
    if (job.state === 'succeeded' || job.state === 'cancelled') log.info(line, `ota job ${job.state}`)
    else log.warn(line, `ota job ${job.state}: ${job.reason}`)
    if (a) {
      for (const w of [...a.watchers]) w(toProgress(job))
      void a.serving.finally(() => a.fh.close().catch(() => undefined))
    }
    void rm(store.imagePath(job.id), { force: true }).catch(() => undefined)
  }

  private announce(job: OtaJob): Promise<void> {
    return this.d.publish(otaTopics(job.device).announce, encodeAnnounce({
      job: job.id, version: job.version, size: job.size, sha256: job.sha256, chunkSize: job.chunkSize, signature: job.signature,
    }), 1, true)
  }

  private clearAnnounce(device: string): void {
    this.d.publish(otaTopics(device).announce, '', 1, true).catch((err: Error) => this.d.log.warn({ device, err: err.message }, 'ota announce not cleared'))
  }

  /** Bad input from a device: a log line, and the reason on the device's errors topic; nothing else changes. */
  private badInput(device: string, what: 'request' | 'status', reason: string): void {
    this.d.log.warn({ device, topic: otaTopics(device)[what], reason }, `ota ${what} refused: ${reason}`)
    this.d.publish(`devices/${device}/errors`, JSON.stringify({ topic: otaTopics(device)[what], reason, at: new Date().toISOString() }), 0, false)
      .catch(() => undefined)
  }
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const c of createReadStream(file)) h.update(c as Buffer)
  return h.digest('hex')
}

function toProgress(j: OtaJob): OtaProgress {
  return { job: j.id, device: j.device, version: j.version, state: j.state, offset: j.offset, size: j.size, reason: j.reason }
}
