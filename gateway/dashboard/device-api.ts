// The device page's server side: the page itself (/device/<id>), its data (GET /api/devices/<id>: registry facts,
// journal, last payload, OTA jobs) and its actions (command, rotate secret, remove, edit metadata, OTA push from an
// uploaded image, OTA cancel). Registered on the dashboard through addRoutes(), so every request passes the
// dashboard's Host, session and Origin checks. Actions take the same paths as the CLI: the registry, then the
// running broker's revocation; the OTA service's push (`ota.push` on the control socket).
import { createWriteStream } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { sendJson } from '../http/server.ts'
import { DEVICE_ID_RE } from '../readings.ts'
import type { Device } from '../registry/registry.ts'
import type { Command, CommandResult } from '../commands/router.ts'
import type { OtaProgress } from '../ota/service.ts'
import type { OtaJob } from '../ota/job.ts'
import type { DeviceJournal } from '../journal/journal.ts'
import { adminEntry } from '../journal/entries.ts'
import { assetDirs, sendFile } from './assets.ts'
import { checkMetadata, declaredCommands } from './device-metadata.ts'
import type { DashboardRoutes, GuardedRoute } from './server.ts'

export interface DeviceApiDeps {
  registry: { get(id: string): Device | undefined; rotateSecret(id: string): Promise<string>; remove(id: string): boolean; setMetadata(id: string, m: Record<string, unknown>): boolean }
  /** The running broker's revocation (`access.revoke`): closes the device's live connections, purges a removed one's sessions. */
  revoke(id: string): Promise<{ disconnected: number; purgedSessions: number }>
  isOnline(id: string): boolean
  journal: Pick<DeviceJournal, 'read' | 'record' | 'ota'>
  dispatch(cmd: Command): Promise<CommandResult>
  ota: { push(raw: unknown, progress: (p: OtaProgress) => void): Promise<OtaProgress>; cancel(raw: unknown): OtaProgress; jobFor(device: string): OtaJob | undefined }
  /** Uploaded OTA images wait here until the OTA service has copied them (inside the data dir: the service may write nowhere else). */
  uploadsDir: string
  log: Logger
}

const MAX_JSON_BODY = 64 * 1024
const VIEW_LIMITS = { presence: 200, command: 100, refusal: 100, ota: 50, firmware: 50, flash: 50, admin: 50 }
const MAX_IMAGE_BYTES = 64 * 1024 * 1024

class HttpError extends Error { constructor(readonly status: number, message: string) { super(message) } }

/** "/api/devices/<id>[/<action>[/<sub>]]" -> its parts, or null. */
export function parseDevicePath(path: string, prefix: string): { id: string; action: string[] } | null {
  if (!path.startsWith(prefix)) return null
  const parts = path.slice(prefix.length).split('/')
  let id: string
  try { id = decodeURIComponent(parts[0] ?? '') } catch { return null }
  if (!DEVICE_ID_RE.test(id)) return null
  return { id, action: parts.slice(1).filter((p) => p !== '') }
}

export class DeviceApi implements DashboardRoutes {
  private readonly log: Logger

  constructor(private readonly d: DeviceApiDeps) { this.log = d.log.child({ component: 'device-page' }) }

  register(route: (path: string, kind: 'page' | 'api', handler: GuardedRoute) => void): void {
    const publicDir = assetDirs().publicDir
    route('/device/*', 'page', async (req, res) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET' }).end(); return }
      await sendFile(res, join(publicDir, 'device.html'))
    })
    route('/api/devices/*', 'api', (req, res, who) => this.api(req, res, who.user).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500
      if (status === 500) this.log.error({ err: (err as Error).message, path: req.url }, 'device api failed')
      req.resume()
      if (!res.headersSent) sendJson(res, status, { error: (err as Error).message })
      else res.end()
    }))
  }

  private async api(req: IncomingMessage, res: ServerResponse, user: string): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x')
    const p = parseDevicePath(url.pathname, '/api/devices/')
    if (!p) throw new HttpError(404, 'not a device path: /api/devices/<id>')
    const { id } = p
    const route = `${req.method} ${p.action.join('/')}`
    // CSRF, beside the dashboard's Origin check: a cross-site form can only send "simple" content types, and anything
    // else needs a CORS preflight that nothing here answers. So every state-changing request states its type.
    if (req.method === 'POST' || req.method === 'PUT') {
      const type = req.headers['content-type'] ?? ''
      const want = route === 'POST ota' ? /^application\/octet-stream\b/i : /^application\/json\b/i
      if (!want.test(type)) throw new HttpError(415, `send ${route === 'POST ota' ? 'the image as application/octet-stream' : 'application/json'}`)
    }
    switch (route) {
      case 'GET ': case 'HEAD ': return sendJson(res, 200, await this.view(id))
      case 'POST commands': return this.command(req, res, id)
      case 'POST rotate-secret': return this.rotate(res, id, user)
      case 'DELETE ': return this.remove(res, id, user)
      case 'PUT metadata': return this.metadata(req, res, id, user)
      case 'POST ota': return this.otaPush(req, res, id, url, user)
      case 'POST ota/cancel': return this.otaCancel(res, id, user)
      default: throw new HttpError(p.action.length === 0 || ['commands', 'rotate-secret', 'metadata', 'ota'].includes(p.action.join('/')) ? 405 : 404, `no ${route.trim()} on a device`)
    }
  }

  private device(id: string): Device {
    const dev = this.d.registry.get(id)
    if (!dev) throw new HttpError(404, `no device "${id}"`)
    return dev
  }

  private async view(id: string): Promise<object> {
    const dev = this.device(id)
    // What the page lists (its timeline needs a day of presence changes); the rest stays in journal.db.
    const journal = await this.d.journal.read(id, VIEW_LIMITS)
    const active = this.d.ota.jobFor(id)
    return {
      now: Date.now(),
      device: {
        id: dev.id, online: this.d.isOnline(id), link: dev.link, firmware: dev.firmwareVersion, lastSeen: dev.lastSeen,
        firstSeen: dev.firstSeen, createdAt: dev.createdAt, hasSecret: dev.hasSecret, metadata: dev.metadata,
      },
      declaredCommands: declaredCommands(dev.metadata, dev.link),
      journal: journal.entries,
      lastPayload: journal.lastPayload,
      ota: {
        active: active ? { job: active.id, version: active.version, state: active.state, offset: active.offset, size: active.size, reason: active.reason } : null,
        jobs: journal.otaJobs.map((j) => ({ job: j.id, version: j.version, previousVersion: j.previousVersion, state: j.state, reason: j.reason, offset: j.offset, size: j.size, createdAt: j.createdAt, updatedAt: j.updatedAt })),
      },
    }
  }

  private async command(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    const body = await readJson(req) as { name?: unknown; args?: unknown }
    if (typeof body.name !== 'string') throw new HttpError(400, 'a command needs a "name" string')
    const cmdId = `dash-${randomBytes(8).toString('hex')}`
    this.log.info({ device: id, command: body.name, id: cmdId }, 'device page command')
    // The result (and its journal entry, through the router's commandDone) comes back when the device answers.
    sendJson(res, 200, await this.d.dispatch({ id: cmdId, device: id, name: body.name, args: body.args ?? null }))
  }

  private async rotate(res: ServerResponse, id: string, user: string): Promise<void> {
    this.device(id)
    const secret = await this.d.registry.rotateSecret(id)
    const r = await this.d.revoke(id)
    this.d.journal.record(adminEntry(id, 'rotate-secret', user, Date.now(), { disconnected: r.disconnected }))
    this.log.info({ device: id, user, disconnected: r.disconnected }, 'device page: secret rotated')
    // The only time this secret exists in plaintext: not logged, not journaled.
    sendJson(res, 200, { device: id, secret, disconnected: r.disconnected })
  }

  private async remove(res: ServerResponse, id: string, user: string): Promise<void> {
    this.device(id)
    if (!this.d.registry.remove(id)) throw new HttpError(404, `no device "${id}"`)
    const r = await this.d.revoke(id)
    this.d.journal.record(adminEntry(id, 'remove', user, Date.now(), { disconnected: r.disconnected, purgedSessions: r.purgedSessions }))
    this.log.info({ device: id, user, ...r }, 'device page: device removed')
    sendJson(res, 200, { device: id, removed: true, ...r })
  }

  private async metadata(req: IncomingMessage, res: ServerResponse, id: string, user: string): Promise<void> {
    this.device(id)
    const body = await readJson(req) as { metadata?: unknown }
    const m = checkMetadata(body.metadata)
    if (!m.ok) throw new HttpError(400, m.error)
    if (!this.d.registry.setMetadata(id, m.value)) throw new HttpError(404, `no device "${id}"`)
    this.d.journal.record(adminEntry(id, 'metadata', user, Date.now(), { keys: Object.keys(m.value).slice(0, 20) }))
    this.log.info({ device: id, user }, 'device page: metadata saved')
    sendJson(res, 200, { device: id, metadata: m.value })
  }

  /** The body is the image itself (application/octet-stream); version and deadline in the query. */
  private async otaPush(req: IncomingMessage, res: ServerResponse, id: string, url: URL, user: string): Promise<void> {
    this.device(id)
    const version = url.searchParams.get('version') ?? ''
    if (version.length < 1 || version.length > 64) throw new HttpError(400, 'version: 1 to 64 characters')
    const deadlineSeconds = Number(url.searchParams.get('deadlineSeconds') ?? '120')
    if (!Number.isFinite(deadlineSeconds) || deadlineSeconds < 1 || deadlineSeconds > 7 * 24 * 3600) throw new HttpError(400, 'deadlineSeconds: 1 to 604800')
    const declared = Number(req.headers['content-length'] ?? '0')
    if (declared > MAX_IMAGE_BYTES) throw new HttpError(413, `the image is ${declared} bytes; the limit is ${MAX_IMAGE_BYTES}`)
    await mkdir(this.d.uploadsDir, { recursive: true })
    const file = join(this.d.uploadsDir, `upload-${randomBytes(6).toString('hex')}.bin`)
    let n = 0
    try {
      await pipeline(req, new Transform({
        transform(c: Buffer, _e, cb) { n += c.length; cb(n > MAX_IMAGE_BYTES ? new HttpError(413, `the image is over ${MAX_IMAGE_BYTES} bytes`) : null, c) },
      }), createWriteStream(file))
    } catch (err) {
      await rm(file, { force: true })
      throw err instanceof HttpError ? err : new HttpError(400, `upload failed: ${(err as Error).message}`)
    }
    // wait: true keeps the service's progress reports coming after the announce (the journal records each state);
    // the answer goes out at the announce, when the service has copied the image and the upload can go.
    let answered = false
    const announced = new Promise<OtaProgress>((resolve, reject) => {
      this.d.ota.push({ device: id, file, version, deadlineMs: Math.round(deadlineSeconds * 1000), wait: true }, (p) => {
        this.d.journal.ota(p)
        if (!answered) { answered = true; resolve(p) }
      }).then((final) => { this.d.journal.ota(final) }, (err: Error) => { if (!answered) { answered = true; reject(new HttpError(409, err.message)) } })
    })
    try {
      const p = await announced
      this.d.journal.record(adminEntry(id, 'ota-push', user, Date.now(), { job: p.job, version, size: n }))
      this.log.info({ device: id, user, job: p.job, version, size: n }, 'device page: ota push')
      sendJson(res, 200, p)
    } finally { await rm(file, { force: true }) }
  }

  private otaCancel(res: ServerResponse, id: string, user: string): void {
    let p: OtaProgress
    try { p = this.d.ota.cancel({ device: id }) } catch (err) { throw new HttpError(409, (err as Error).message) }
    this.d.journal.record(adminEntry(id, 'ota-cancel', user, Date.now(), { job: p.job }))
    sendJson(res, 200, p)
  }
}

/** A JSON object body. application/json only: a cross-site form cannot send that without a CORS preflight, which nothing here answers. */
async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) throw new HttpError(415, 'send application/json')
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of req) {
    n += (c as Buffer).length
    if (n > MAX_JSON_BODY) throw new HttpError(413, `body over ${MAX_JSON_BODY} bytes`)
    chunks.push(c as Buffer)
  }
  let v: unknown
  try { v = JSON.parse(Buffer.concat(chunks).toString('utf8')) } catch (err) { throw new HttpError(400, `invalid JSON: ${(err as Error).message}`) }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new HttpError(400, 'the body must be a JSON object')
  return v as Record<string, unknown>
}
