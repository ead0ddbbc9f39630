// The history HTTP API, behind the dashboard's login (registered through DashboardServer.addRoutes, which runs the
// Host and session checks first):
//   GET /api/history/<device>                                   metrics known, first/last ts, unit, display name
//   GET /api/history/<device>/<metric>?from=&to=&points=        raw points or min/avg/max rollups (says which)
//   GET /api/history/<device>.csv?from=&to=                     CSV export, all metrics, header row
// Parameter parsing is pure (parseRange) and answers precise 400s; the queries run on the history worker.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { DashboardRoutes } from '../dashboard/server.ts'
import { DEVICE_ID_RE } from '../readings.ts'
import type { HistoryService } from './client.ts'
import { csvHeader } from './store.ts'
import { MINUTE_MS } from './rollup.ts'

export const PREFIX = '/api/history/'
export const DEFAULT_POINTS = 1000
export const MAX_POINTS = 10_000
const DEFAULT_SPAN_MS = 24 * 3600_000
/** CSV lines asked of the worker per step, so an export of millions of points never sits in memory at once. */
const CSV_ROWS_PER_STEP = 20_000

export interface MetricMeta { unit: string | null; name: string | null }

export interface HistoryApiDeps {
  history: HistoryService
  /** The device's registry metadata (`metrics: { <metric>: { unit, name } }` gives units and display names). */
  metadata(device: string): Record<string, unknown> | undefined
  now?: () => number
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; status: number; error: string }

export type HistoryPath =
  | { kind: 'metrics'; device: string }
  | { kind: 'csv'; device: string }
  | { kind: 'range'; device: string; metric: string }

/** `/api/history/<device>[.csv | /<metric>]`, segments URL-decoded. `<name>.csv` is the export of device `<name>`. */
export function parsePath(pathname: string): Parsed<HistoryPath> {
  const rest = pathname.slice(PREFIX.length)
  const parts = rest.split('/')
  if (parts.length > 2 || parts[0] === '' || (parts.length === 2 && parts[1] === '')) {
    return { ok: false, status: 404, error: 'not found: use /api/history/<device>, /api/history/<device>/<metric> or /api/history/<device>.csv' }
  }
  let seg: string[]
  try { seg = parts.map((p) => decodeURIComponent(p)) } catch { return { ok: false, status: 400, error: 'bad percent-encoding in the path' } }
  let device = seg[0]!
  const csv = seg.length === 1 && device.endsWith('.csv')
  if (csv) device = device.slice(0, -4)
  if (!DEVICE_ID_RE.test(device)) return { ok: false, status: 400, error: `invalid device id "${device.slice(0, 80)}": letters, digits, "_", "." and "-", 1 to 64 characters` }
  if (csv) return { ok: true, value: { kind: 'csv', device } }
  if (seg.length === 1) return { ok: true, value: { kind: 'metrics', device } }
  const metric = seg[1]!
  if (metric.length === 0 || metric.length > 64) return { ok: false, status: 400, error: 'invalid metric name: 1 to 64 characters' }
  return { ok: true, value: { kind: 'range', device, metric } }
}

export interface RangeParams { from: number; to: number; points: number }

function msParam(name: string, raw: string): Parsed<number> {
  if (!/^\d{1,16}$/.test(raw)) return { ok: false, status: 400, error: `"${name}" must be a time in ms since the epoch (a non-negative integer), got "${raw.slice(0, 40)}"` }
  return { ok: true, value: Number(raw) }
}

/** from/to (ms, default: the last 24 h) and points (1..10000, default 1000); anything else is a 400. */
export function parseRange(query: URLSearchParams, allowed: readonly string[], now: number): Parsed<RangeParams> {
  for (const k of new Set(query.keys())) {
    if (!allowed.includes(k)) return { ok: false, status: 400, error: `unknown parameter "${k.slice(0, 40)}": use ${allowed.join(', ')}` }
    if (query.getAll(k).length > 1) return { ok: false, status: 400, error: `parameter "${k}" given more than once` }
  }
  let to = now
  let from: number | null = null
  const rawTo = query.get('to')
  if (rawTo !== null) { const p = msParam('to', rawTo); if (!p.ok) return p; to = p.value }
  const rawFrom = query.get('from')
  if (rawFrom !== null) { const p = msParam('from', rawFrom); if (!p.ok) return p; from = p.value }
  from ??= Math.max(0, to - DEFAULT_SPAN_MS)
  if (from >= to) return { ok: false, status: 400, error: `"from" (${from}) must be before "to" (${to})` }
  let points = DEFAULT_POINTS
  const rawPoints = query.get('points')
  if (rawPoints !== null) {
    if (!/^\d{1,6}$/.test(rawPoints) || Number(rawPoints) < 1 || Number(rawPoints) > MAX_POINTS) {
      return { ok: false, status: 400, error: `"points" must be an integer from 1 to ${MAX_POINTS}, got "${rawPoints.slice(0, 40)}"` }
    }
    points = Number(rawPoints)
  }
  return { ok: true, value: { from, to, points } }
}

/** Units and display names from the device's metadata: `metrics: { temperature: { unit: "°C", name: "Temperature" } }`. */
export function metricMeta(metadata: Record<string, unknown> | undefined, metric: string): MetricMeta {
  const all = metadata?.metrics
  const m = all && typeof all === 'object' && !Array.isArray(all) ? (all as Record<string, unknown>)[metric] : undefined
  if (!m || typeof m !== 'object' || Array.isArray(m)) return { unit: null, name: null }
  const { unit, name } = m as { unit?: unknown; name?: unknown }
  return { unit: typeof unit === 'string' && unit.length > 0 ? unit : null, name: typeof name === 'string' && name.length > 0 ? name : null }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }).end(JSON.stringify(body))
}

function fail(res: ServerResponse, p: { status: number; error: string }): void { json(res, p.status, { error: p.error }) }

/** The routes, for DashboardServer.addRoutes. */
export function historyRoutes(deps: HistoryApiDeps): DashboardRoutes {
  return { register(route) { route(`${PREFIX}*`, 'api', (req, res) => handle(deps, req, res)) } }
}

async function handle(deps: HistoryApiDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('use GET\n'); return }
  const url = new URL(req.url ?? '/', 'http://x')
  const path = parsePath(url.pathname)
  if (!path.ok) { fail(res, path); return }
  const now = (deps.now ?? Date.now)()
  const { history } = deps
  const p = path.value
  const metadata = deps.metadata(p.device)
  try {
    if (p.kind === 'metrics') {
      for (const k of url.searchParams.keys()) { fail(res, { status: 400, error: `unknown parameter "${k.slice(0, 40)}": this path takes none` }); return }
      const series = await history.query({ q: 'series', device: p.device })
      if (series.length === 0 && !metadata) { fail(res, { status: 404, error: `no history for device "${p.device}"` }); return }
      json(res, 200, {
        device: p.device, rawHours: history.raw.hours,
        metrics: series.map((s) => ({ metric: s.metric, ...metricMeta(metadata, s.metric), firstTs: s.firstTs, lastTs: s.lastTs })),
      })
      return
    }
    if (p.kind === 'range') {
      const r = parseRange(url.searchParams, ['from', 'to', 'points'], now)
      if (!r.ok) { fail(res, r); return }
      const out = await history.query({ q: 'range', device: p.device, metric: p.metric, ...r.value })
      if (!out) { fail(res, { status: 404, error: `no history for metric "${p.metric}" of device "${p.device}"` }); return }
      json(res, 200, { device: p.device, metric: p.metric, ...metricMeta(metadata, p.metric), from: r.value.from, to: r.value.to, points: out.t.length, ...out })
      return
    }
    const r = parseRange(url.searchParams, ['from', 'to'], now)
    if (!r.ok) { fail(res, r); return }
    const plan = await history.query({ q: 'csvPlan', device: p.device, from: r.value.from, to: r.value.to })
    if (plan.series.length === 0 && !metadata) { fail(res, { status: 404, error: `no history for device "${p.device}"` }); return }
    res.writeHead(200, {
      'content-type': 'text/csv; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff',
      'content-disposition': `attachment; filename="${p.device}-${new Date(r.value.from).toISOString().slice(0, 10)}.csv"`,
      'x-edgeway-tier': plan.tier,
    })
    if (req.method === 'HEAD') { res.end(); return }
    res.write(csvHeader(plan))
    // Time slices of about CSV_ROWS_PER_STEP points each (whole minutes, so a rollup row is never split).
    const steps = Math.max(1, Math.ceil(plan.count / CSV_ROWS_PER_STEP))
    const slice = Math.max(MINUTE_MS, Math.ceil((plan.to + 1 - plan.from) / steps / MINUTE_MS) * MINUTE_MS)
    for (let a = plan.from; a <= plan.to; a += slice) {
      const b = Math.min(a + slice, plan.to + 1)
      const text = await history.query({ q: 'csvRows', plan, a, b })
      if (text && !res.write(text)) await new Promise((resolve) => res.once('drain', resolve))
      if (res.destroyed) return
    }
    res.end()
  } catch (err) {
    if (!res.headersSent) json(res, 503, { error: `history unavailable: ${(err as Error).message}` })
    else res.destroy()
  }
}
