// The history store: every numeric metric of every stored reading, per device, in history.db beside the outbox.
// Two tiers: raw points (series, ts, value) for `rawHours`, and 1-minute rollups (min/max/sum/count) for `rollupDays`;
// both pruned by age, and the whole file bounded by `maxBytes` with the oldest points going first (raw, then
// rollups). Synchronous like better-sqlite3; runs on the history worker thread (worker.ts), also directly in tests.
import { openDatabase, type Db, type Statement } from '../store/sqlite.ts'
import { addToBucket, bucketMinutes, chooseTier, minuteOf, MINUTE_MS, numericMetrics, type Bucket, type Tier } from './rollup.ts'

export interface HistoryStoreOptions {
  file: string
  rawHours: number
  rollupDays: number
  maxBytes: number
  maxMetricsPerDevice: number
  maxSeries: number
  now?: () => number
}

export interface SeriesInfo { metric: string; firstTs: number | null; lastTs: number }

export type RangeResult =
  | { tier: 'raw'; bucketMs: null; t: number[]; v: number[] }
  | { tier: 'rollup'; bucketMs: number; t: number[]; min: number[]; avg: number[]; max: number[]; n: number[] }

export interface PruneCounts { raw: { age: number; bytes: number }; rollup: { age: number; bytes: number } }

export interface CsvPlan { tier: Tier; series: { id: number; metric: string }[]; from: number; to: number; count: number }

/** Rows per multi-row INSERT (3 parameters each). */
const RAW_ROWS = 100
/** Raw points gathered between commits at most (a failing disk must not grow the worker's heap without bound). */
const MAX_PENDING_RAW = 2_000_000
/** Prune by bytes down to this share of maxBytes, so the bound is not hit again on the next commit. */
const BYTES_TARGET = 0.9

export class HistoryStore {
  private db!: Db
  private stmt!: {
    insertRaw: Statement; insertRawMany: Statement; upsertRollup: Statement; addSeries: Statement; touchSeries: Statement
    setMeta: Statement; firstRaw: Statement; firstRollup: Statement; pruneRaw: Statement; pruneRollup: Statement
    rawCount: Statement; rawRange: Statement; rollupRange: Statement; seriesOf: Statement; lastRaw: Statement
  }
  private readonly now: () => number
  /** device -> metric -> series id */
  private readonly ids = new Map<string, Map<string, number>>()
  private seriesCount = 0
  private readonly lastTs = new Map<number, number>()
  // Points ingested since the last commit.
  private rawSid: number[] = []
  private rawTs: number[] = []
  private rawVal: number[] = []
  private buckets = new Map<number, Map<number, Bucket>>()
  private touched = new Map<number, number>()
  private pendingRow = 0
  /** Highest outbox row id whose points are committed here (restart catch-up starts after it). */
  lastRow = 0
  /** Running totals since open (the worker turns them into metrics). */
  readonly totals = { points: 0, refused: 0, pruned: { raw: { age: 0, bytes: 0 }, rollup: { age: 0, bytes: 0 } } as PruneCounts }
  /** Series refused since open, by device (for one log line per device). */
  readonly refusedDevices = new Set<string>()

  constructor(private readonly opts: HistoryStoreOptions) {
    this.now = opts.now ?? Date.now
  }

  get rawWindowMs(): number { return this.opts.rawHours * 3600_000 }
  get rollupWindowMs(): number { return this.opts.rollupDays * 86400_000 }

  open(): void {
    // synchronous=NORMAL: history is not the durable copy (the outbox is); a power cut may cost its last commits.
    const db = openDatabase(this.opts.file, { synchronous: 'NORMAL' })
    this.db = db
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, device TEXT NOT NULL, metric TEXT NOT NULL,
        last_ts INTEGER NOT NULL, UNIQUE (device, metric));
      CREATE TABLE IF NOT EXISTS raw (series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
        PRIMARY KEY (series, ts)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS rollup (series INTEGER NOT NULL, minute INTEGER NOT NULL, min REAL NOT NULL,
        max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (series, minute)) WITHOUT ROWID;
    `)
    const rawValues = Array.from({ length: RAW_ROWS }, () => '(?, ?, ?)').join(', ')
    this.stmt = {
      insertRaw: db.prepare('INSERT OR REPLACE INTO raw (series, ts, value) VALUES (?, ?, ?)'),
      insertRawMany: db.prepare(`INSERT OR REPLACE INTO raw (series, ts, value) VALUES ${rawValues}`),
      upsertRollup: db.prepare(`INSERT INTO rollup (series, minute, min, max, sum, count) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (series, minute) DO UPDATE SET min = MIN(min, excluded.min), max = MAX(max, excluded.max),
        sum = sum + excluded.sum, count = count + excluded.count`),
      addSeries: db.prepare('INSERT INTO series (device, metric, last_ts) VALUES (?, ?, ?)'),
      touchSeries: db.prepare('UPDATE series SET last_ts = ? WHERE id = ? AND last_ts < ?'),
      setMeta: db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)'),
      firstRaw: db.prepare('SELECT ts FROM raw WHERE series = ? ORDER BY ts LIMIT 1').pluck(),
      lastRaw: db.prepare('SELECT ts FROM raw WHERE series = ? ORDER BY ts DESC LIMIT 1').pluck(),
      firstRollup: db.prepare('SELECT minute FROM rollup WHERE series = ? ORDER BY minute LIMIT 1').pluck(),
      pruneRaw: db.prepare('DELETE FROM raw WHERE series = ? AND ts < ?'),
      pruneRollup: db.prepare('DELETE FROM rollup WHERE series = ? AND minute < ?'),
      rawCount: db.prepare('SELECT COUNT(*) FROM (SELECT 1 FROM raw WHERE series = ? AND ts >= ? AND ts <= ? LIMIT ?)').pluck(),
      rawRange: db.prepare('SELECT ts, value FROM raw WHERE series = ? AND ts >= ? AND ts <= ? ORDER BY ts').raw(),
      // CAST: better-sqlite3 binds JS numbers as REAL, and minute / 5.0 would not group at all.
      rollupRange: db.prepare(`SELECT CAST(minute / ? AS INTEGER) * ? AS b, MIN(min), SUM(sum), MAX(max), SUM(count) FROM rollup
        WHERE series = ? AND minute >= ? AND minute <= ? GROUP BY CAST(minute / ? AS INTEGER) ORDER BY b`).raw(),
      seriesOf: db.prepare('SELECT id, metric, last_ts FROM series WHERE device = ? ORDER BY metric'),
    }
    for (const r of db.prepare('SELECT id, device, metric, last_ts FROM series').all() as { id: number; device: string; metric: string; last_ts: number }[]) {
      this.remember(r.device, r.metric, r.id)
      this.lastTs.set(r.id, r.last_ts)
    }
    const last = db.prepare("SELECT value FROM meta WHERE key = 'last_row'").pluck().get() as string | undefined
    this.lastRow = last === undefined ? 0 : Number(last)
  }

  private remember(device: string, metric: string, id: number): void {
    let m = this.ids.get(device)
    if (!m) { m = new Map(); this.ids.set(device, m) }
    m.set(metric, id)
    this.seriesCount++
  }

  /** The series id, created if the bounds allow (else null: refused, counted). */
  private seriesId(device: string, metric: string, ts: number): number | null {
    const byMetric = this.ids.get(device)
    const id = byMetric?.get(metric)
    if (id !== undefined) return id
    if (this.seriesCount >= this.opts.maxSeries || (byMetric?.size ?? 0) >= this.opts.maxMetricsPerDevice) {
      this.totals.refused++
      this.refusedDevices.add(device)
      return null
    }
    const created = Number(this.stmt.addSeries.run(device, metric, ts).lastInsertRowid)
    this.remember(device, metric, created)
    this.lastTs.set(created, ts)
    return created
  }

  /** One stored reading's JSON payload; its numeric metrics are written by the next commit(). */
  ingest(device: string, ts: number, payload: string, rowId = 0): number {
    if (rowId > this.pendingRow) this.pendingRow = rowId
    const now = this.now()
    if (ts < now - this.rollupWindowMs) return 0
    const rawToo = ts >= now - this.rawWindowMs
    const minute = minuteOf(ts)
    let n = 0
    for (const [metric, v] of numericMetrics(payload)) {
      const sid = this.seriesId(device, metric, ts)
      if (sid === null) continue
      // While commits fail (disk full) the gathered raw points stop growing here; rollups stay bounded by minute.
      if (rawToo && this.rawSid.length < MAX_PENDING_RAW) { this.rawSid.push(sid); this.rawTs.push(ts); this.rawVal.push(v) }
      let bySid = this.buckets.get(sid)
      if (!bySid) { bySid = new Map(); this.buckets.set(sid, bySid) }
      bySid.set(minute, addToBucket(bySid.get(minute), v))
      if (ts > (this.touched.get(sid) ?? -Infinity)) this.touched.set(sid, ts)
      n++
    }
    this.totals.points += n
    return n
  }

  get pending(): number { return this.rawSid.length + this.buckets.size }

  /** Writes what ingest() gathered in one transaction (raw points, rollup upserts, series' last ts, position). */
  commit(): void {
    if (this.rawSid.length === 0 && this.buckets.size === 0 && this.pendingRow <= this.lastRow) return
    const { rawSid, rawTs, rawVal, buckets, touched } = this
    const row = Math.max(this.pendingRow, this.lastRow)
    this.db.transaction(() => {
      const n = rawSid.length
      const params: number[] = new Array(RAW_ROWS * 3)
      let i = 0
      for (; i + RAW_ROWS <= n; i += RAW_ROWS) {
        for (let k = 0; k < RAW_ROWS; k++) { params[3 * k] = rawSid[i + k]!; params[3 * k + 1] = rawTs[i + k]!; params[3 * k + 2] = rawVal[i + k]! }
        this.stmt.insertRawMany.run(params)
      }
      for (; i < n; i++) this.stmt.insertRaw.run(rawSid[i], rawTs[i], rawVal[i])
      for (const [sid, byMinute] of buckets) {
        for (const [minute, b] of byMinute) this.stmt.upsertRollup.run(sid, minute, b.min, b.max, b.sum, b.count)
      }
      for (const [sid, ts] of touched) {
        if (ts > (this.lastTs.get(sid) ?? -Infinity)) { this.stmt.touchSeries.run(ts, sid, ts); this.lastTs.set(sid, ts) }
      }
      this.stmt.setMeta.run('last_row', String(row))
    })()
    this.lastRow = row
    this.rawSid = []; this.rawTs = []; this.rawVal = []
    this.buckets = new Map()
    this.touched = new Map()
  }

  /** Bytes of the database in use (pages not on the free list): what maxBytes bounds. */
  usedBytes(): number {
    const pages = Number(this.db.pragma('page_count', { simple: true }))
    const free = Number(this.db.pragma('freelist_count', { simple: true }))
    return (pages - free) * Number(this.db.pragma('page_size', { simple: true }))
  }

  private allSeries(): number[] { return [...this.lastTs.keys()] }

  /** Age, then bytes: returns what this call pruned (also added to totals). */
  prune(): PruneCounts {
    this.commit()
    const now = this.now()
    const out: PruneCounts = { raw: { age: 0, bytes: 0 }, rollup: { age: 0, bytes: 0 } }
    const rawCut = now - this.rawWindowMs
    const rollupCut = minuteOf(now - this.rollupWindowMs)
    this.db.transaction(() => {
      for (const sid of this.allSeries()) {
        out.raw.age += this.stmt.pruneRaw.run(sid, rawCut).changes
        out.rollup.age += this.stmt.pruneRollup.run(sid, rollupCut).changes
      }
    })()
    this.pruneBytes(out)
    this.forgetEmptySeries(now)
    for (const t of ['raw', 'rollup'] as const) { this.totals.pruned[t].age += out[t].age; this.totals.pruned[t].bytes += out[t].bytes }
    return out
  }

  /** Oldest first: raw points (the rollups still cover those minutes), then rollups; each step a slice of the time span. */
  private pruneBytes(out: PruneCounts): void {
    const target = this.opts.maxBytes * BYTES_TARGET
    for (let step = 0; step < 64; step++) {
      const used = this.usedBytes()
      if (used <= this.opts.maxBytes && step === 0) return
      if (used <= target) return
      const share = Math.min(1, Math.max(0.02, ((used - target) / used) * 1.2))
      const tier = this.oldestSpan('raw') ? 'raw' : 'rollup'
      const span = this.oldestSpan(tier)
      if (!span) return
      const cut = span.first + Math.max(tier === 'raw' ? 1000 : MINUTE_MS, Math.ceil((span.last - span.first) * share))
      let n = 0
      this.db.transaction(() => {
        for (const sid of this.allSeries()) {
          n += tier === 'raw' ? this.stmt.pruneRaw.run(sid, cut).changes : this.stmt.pruneRollup.run(sid, minuteOf(cut)).changes
        }
      })()
      out[tier].bytes += n
      if (n === 0 && tier === 'rollup' && span.last <= span.first) return
    }
  }

  /** First and last timestamp (ms) of a tier over all series, or null when the tier is empty. */
  private oldestSpan(tier: Tier): { first: number; last: number } | null {
    let first = Infinity
    let last = -Infinity
    for (const sid of this.allSeries()) {
      const f = (tier === 'raw' ? this.stmt.firstRaw.get(sid) : this.stmt.firstRollup.get(sid)) as number | undefined
      if (f === undefined) continue
      const ms = tier === 'raw' ? f : f * MINUTE_MS
      if (ms < first) first = ms
      const l = this.lastTs.get(sid) ?? ms
      if (l > last) last = l
    }
    return first === Infinity ? null : { first, last: Math.max(first, last) }
  }

  /** A series whose points are all gone and that has not reported within the rollup window stops counting against the bounds. */
  private forgetEmptySeries(now: number): void {
    for (const [device, byMetric] of this.ids) {
      for (const [metric, sid] of byMetric) {
        if ((this.lastTs.get(sid) ?? 0) >= now - this.rollupWindowMs) continue
        if (this.stmt.firstRaw.get(sid) !== undefined || this.stmt.firstRollup.get(sid) !== undefined) continue
        this.db.prepare('DELETE FROM series WHERE id = ?').run(sid)
        byMetric.delete(metric)
        this.lastTs.delete(sid)
        this.seriesCount--
      }
      if (byMetric.size === 0) this.ids.delete(device)
    }
  }

  // ------------------------------------------------------------------------------------------------ queries

  devices(): string[] { return [...this.ids.keys()].sort() }

  get seriesTotal(): number { return this.seriesCount }

  /** The device's series with the first point still stored (raw or rollup) and the newest. */
  series(device: string): SeriesInfo[] {
    this.commit()
    return (this.stmt.seriesOf.all(device) as { id: number; metric: string; last_ts: number }[]).map((r) => {
      const raw = this.stmt.firstRaw.get(r.id) as number | undefined
      const minute = this.stmt.firstRollup.get(r.id) as number | undefined
      // The exact first point while its minute is still raw; the start of the oldest rollup minute once older ones are only rollups.
      const firstTs = raw !== undefined && (minute === undefined || minuteOf(raw) <= minute) ? raw : minute === undefined ? null : minute * MINUTE_MS
      return { metric: r.metric, firstTs, lastTs: r.last_ts }
    })
  }

  /** Points of one series in [from, to] (ms, inclusive): raw when the range is in the raw window and small enough, else rollups. */
  range(device: string, metric: string, from: number, to: number, points: number): RangeResult | null {
    this.commit()
    const sid = this.ids.get(device)?.get(metric)
    if (sid === undefined) return null
    const tier = chooseTier({ from, now: this.now(), rawWindowMs: this.rawWindowMs, points },
      () => this.stmt.rawCount.get(sid, from, to, points + 1) as number)
    if (tier === 'raw') {
      const rows = this.stmt.rawRange.all(sid, from, to) as [number, number][]
      return { tier, bucketMs: null, t: rows.map((r) => r[0]), v: rows.map((r) => r[1]) }
    }
    const k = bucketMinutes(from, to, points)
    const rows = this.stmt.rollupRange.all(k, k, sid, minuteOf(from), minuteOf(to), k) as [number, number, number, number, number][]
    const out: RangeResult = { tier, bucketMs: k * MINUTE_MS, t: [], min: [], avg: [], max: [], n: [] }
    for (const [b, mn, sum, mx, n] of rows) {
      out.t.push(b * MINUTE_MS); out.min.push(mn); out.avg.push(sum / n); out.max.push(mx); out.n.push(n)
    }
    return out
  }

  /** What a CSV export of [from, to] holds: raw points when the range is inside the raw window, else 1-minute rollups. */
  csvPlan(device: string, from: number, to: number): CsvPlan {
    this.commit()
    const series = (this.stmt.seriesOf.all(device) as { id: number; metric: string }[]).map((r) => ({ id: r.id, metric: r.metric }))
    const tier: Tier = from >= this.now() - this.rawWindowMs ? 'raw' : 'rollup'
    const start = tier === 'rollup' ? minuteOf(from) * MINUTE_MS : from
    let count = 0
    if (series.length) {
      const ids = series.map((s) => s.id).join(',')
      count = tier === 'raw'
        ? this.db.prepare(`SELECT COUNT(*) FROM raw WHERE series IN (${ids}) AND ts >= ? AND ts <= ?`).pluck().get(start, to) as number
        : this.db.prepare(`SELECT COUNT(*) FROM rollup WHERE series IN (${ids}) AND minute >= ? AND minute <= ?`).pluck().get(minuteOf(start), minuteOf(to)) as number
    }
    return { tier, series, from: start, to, count }
  }

  /** CSV lines (no header) for [a, b) of a plan, one line per timestamp (raw) or minute (rollup). */
  csvRows(plan: CsvPlan, a: number, b: number): string {
    if (plan.series.length === 0) return ''
    const col = new Map(plan.series.map((s, i) => [s.id, i]))
    const ids = plan.series.map((s) => s.id).join(',')
    const width = plan.tier === 'raw' ? plan.series.length : plan.series.length * 3
    const rows = plan.tier === 'raw'
      ? this.db.prepare(`SELECT ts, series, value FROM raw WHERE series IN (${ids}) AND ts >= ? AND ts < ? ORDER BY ts, series`).raw().all(a, b) as [number, number, number][]
      : this.db.prepare(`SELECT minute * ${MINUTE_MS}, series, min, sum / count, max FROM rollup WHERE series IN (${ids}) AND minute >= ? AND minute < ? ORDER BY minute, series`)
        .raw().all(Math.ceil(a / MINUTE_MS), Math.ceil(b / MINUTE_MS)) as [number, number, number, number, number][]
    let out = ''
    let cur: number | null = null
    let cells: string[] = []
    const emit = (): void => { if (cur !== null) out += `${new Date(cur).toISOString()},${cur},${cells.join(',')}\n` }
    for (const r of rows) {
      if (r[0] !== cur) { emit(); cur = r[0]; cells = new Array(width).fill('') }
      const i = col.get(r[1])!
      if (plan.tier === 'raw') cells[i] = String(r[2])
      else { const x = r as [number, number, number, number, number]; cells[3 * i] = String(x[2]); cells[3 * i + 1] = String(x[3]); cells[3 * i + 2] = String(x[4]) }
    }
    emit()
    return out
  }

  close(): void {
    if (!this.db?.open) return
    try { this.commit() } finally { this.db.close() }
  }
}

/** The CSV header of a plan: time (ISO, UTC), ts_ms, then one column per metric (raw) or metric_min/_avg/_max (rollup). */
export function csvHeader(plan: CsvPlan): string {
  const cols = ['time', 'ts_ms']
  for (const s of plan.series) {
    if (plan.tier === 'raw') cols.push(csvCell(s.metric))
    else cols.push(csvCell(`${s.metric}_min`), csvCell(`${s.metric}_avg`), csvCell(`${s.metric}_max`))
  }
  return cols.join(',') + '\n'
}

/** Quoted when needed; a leading = + - @ is defused, so a device's metric name cannot become a spreadsheet formula. */
export function csvCell(s: string): string {
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe
}
