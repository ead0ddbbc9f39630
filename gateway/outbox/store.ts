// Synchronous SQLite outbox: rows, per-device sequences, one cursor per upstream, retention.
// Runs inside the outbox worker thread (see worker.ts); also used directly by the CLI and tests.
import { openDatabase, isDiskFull, type Db, type Statement } from '../store/sqlite.ts'
import { messageId, type ReadingInput } from '../readings.ts'
import type { ClaimedRow, DropReason, OutboxStats, UpstreamCursorStats } from './types.ts'
import type { Salvage } from './salvage.ts'

export interface DeadRow extends ClaimedRow {
  upstream: string
  reason: string
  /** When it was dead-lettered (ms since epoch). */
  at: number
}

export interface OutboxStoreOptions {
  file: string
  gatewayId: string
  upstreams: string[]
  maxBytes: number
  maxAgeMs: number
  synchronous?: 'FULL' | 'NORMAL'
  /** false when a checkpointer thread keeps the WAL short (see checkpointer.ts). */
  autoCheckpoint?: boolean
  now?: () => number
}

/** Rows deleted per maintenance step, so one step never stalls the commits and claims queued behind it for long. */
const DELETE_CHUNK = 1000

interface Cursor {
  ackedUpto: number
  /** Acked ids above ackedUpto (acks can come out of order). */
  acked: Set<number>
  inflight: Set<number>
  /** Next id to look at when claiming. */
  scanFrom: number
  /** Next id to look at when claiming from the priority lane. */
  prioScanFrom: number
}

interface RowRecord {
  id: number; device: string; seq: number; dseq: number | null; ts: number; recv: number; kind: number; link: string; payload: string | Buffer
  prio?: number
  /** MQTT 5 user properties (JSON text), null for most readings. */
  user_props?: string | null
}

/** How far a device's sequence jumps after a salvage that could not read the sequence table. */
const SEQ_GAP = 1_000_000

/** Rows per multi-row INSERT statement (11 parameters each, far below SQLite's 32766). */
const INSERT_ROWS = 32
/** Bytes a row counts for retention: payload plus a fixed estimate of the row's own overhead. */
const ROW_OVERHEAD = 48

export class OutboxStore {
  private db!: Db
  private nextId = 1
  private readonly seqs = new Map<string, number>()
  private readonly cursors = new Map<string, Cursor>()
  private depth = 0
  private bytes = 0
  private appended = 0
  private commits = 0
  private diskFull = false
  private lastError: string | null = null
  /** The last maintenance step left delivered rows to delete: the caller runs the next one soon. */
  deleteBehind = false
  /** Highest row id in the priority lane (0: none): lets claims skip that lane's query. */
  private lastPrioId = 0
  private readonly drops: Record<DropReason, number> = { retention_bytes: 0, retention_age: 0 }
  private cursorsDirty = false
  private dead = 0
  private requeued = 0
  private stmt!: {
    insert: Statement; insertMany: Statement; insertProps: Statement; upsertSeq: Statement; claim: Statement; claimPrio: Statement; rangeStats: Statement; deleteUpto: Statement
    oldest: Statement; setCursor: Statement; retentionScan: Statement; ageCut: Statement; nthId: Statement
    getMeta: Statement; setMeta: Statement
  }
  private readonly now: () => number

  constructor(private readonly opts: OutboxStoreOptions) {
    this.now = opts.now ?? Date.now
  }

  open(): void {
    const db = this.db = openDatabase(this.opts.file, { synchronous: this.opts.synchronous ?? 'FULL', autoCheckpoint: this.opts.autoCheckpoint ?? true })
    db.exec(`
      CREATE TABLE IF NOT EXISTS readings (
        id INTEGER PRIMARY KEY, device TEXT NOT NULL, seq INTEGER NOT NULL, dseq INTEGER,
        ts INTEGER NOT NULL, recv INTEGER NOT NULL, kind INTEGER NOT NULL, link TEXT NOT NULL,
        payload BLOB NOT NULL, bytes INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS cursors (upstream TEXT PRIMARY KEY, acked_upto INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS dead (
        upstream TEXT NOT NULL, id INTEGER NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, dseq INTEGER,
        ts INTEGER NOT NULL, recv INTEGER NOT NULL, kind INTEGER NOT NULL, link TEXT NOT NULL, payload BLOB NOT NULL,
        reason TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (upstream, id));
    `)
    addDeadRetryColumn(db)
    // ... and no priority lane (a constant default: O(1) on any table size).
    const cols = (db.prepare('PRAGMA table_info(readings)').all() as { name: string }[]).map((c) => c.name)
    if (!cols.includes('prio')) db.exec('ALTER TABLE readings ADD COLUMN prio INTEGER NOT NULL DEFAULT 0')
    // Only priority rows are in this index: routine appends do not pay for it.
    db.exec('CREATE INDEX IF NOT EXISTS readings_prio ON readings (id) WHERE prio > 0')
    // ... and no user properties (MQTT 5 metadata): a nullable column, O(1) on any table size; rows without any store
    // nothing for it. The dead-letter table keeps them too.
    if (!cols.includes('user_props')) db.exec('ALTER TABLE readings ADD COLUMN user_props TEXT')
    addDeadUserPropsColumn(db)
    this.stmt = {
      insert: db.prepare('INSERT INTO readings (id, device, seq, dseq, ts, recv, kind, link, payload, bytes, prio) VALUES (?,?,?,?,?,?,?,?,?,?,?)'),
      insertMany: db.prepare(`INSERT INTO readings (id, device, seq, dseq, ts, recv, kind, link, payload, bytes, prio) VALUES ${Array(INSERT_ROWS).fill('(?,?,?,?,?,?,?,?,?,?,?)').join(',')}`),
      insertProps: db.prepare('INSERT INTO readings (id, device, seq, dseq, ts, recv, kind, link, payload, bytes, prio, user_props) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)'),
      upsertSeq: db.prepare('INSERT INTO device_seq (device, seq) VALUES (?, ?) ON CONFLICT(device) DO UPDATE SET seq = excluded.seq'),
      claim: db.prepare('SELECT id, device, seq, dseq, ts, recv, kind, link, payload, prio, user_props FROM readings WHERE id >= ? ORDER BY id LIMIT ?'),
      claimPrio: db.prepare('SELECT id, device, seq, dseq, ts, recv, kind, link, payload, prio, user_props FROM readings WHERE prio > 0 AND id >= ? ORDER BY id LIMIT ?'),
      rangeStats: db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM readings WHERE id <= ?'),
      deleteUpto: db.prepare('DELETE FROM readings WHERE id <= ?'),
      oldest: db.prepare('SELECT id, recv FROM readings ORDER BY id LIMIT 1'),
      nthId: db.prepare('SELECT id FROM readings WHERE id <= ? ORDER BY id LIMIT 1 OFFSET ?'),
      setCursor: db.prepare('INSERT INTO cursors (upstream, acked_upto) VALUES (?, ?) ON CONFLICT(upstream) DO UPDATE SET acked_upto = excluded.acked_upto'),
      retentionScan: db.prepare('SELECT id, bytes FROM readings WHERE id > ? ORDER BY id LIMIT 1000'),
      ageCut: db.prepare('SELECT MAX(id) AS id FROM (SELECT id, recv FROM readings WHERE id > ? ORDER BY id LIMIT 1000) WHERE recv < ?'),
      getMeta: db.prepare('SELECT value FROM meta WHERE key = ?').pluck(),
      setMeta: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
    }
    const meta = this.stmt.getMeta.get('gateway_id') as string | undefined
    if (meta === undefined) this.stmt.setMeta.run('gateway_id', this.opts.gatewayId)
    for (const r of db.prepare('SELECT device, seq FROM device_seq').all() as { device: string; seq: number }[]) this.seqs.set(r.device, r.seq)
    const last = db.prepare('SELECT MAX(id) AS id FROM readings').get() as { id: number | null }
    this.lastPrioId = (db.prepare('SELECT MAX(id) AS id FROM readings WHERE prio > 0').get() as { id: number | null }).id ?? 0
    const lastCursor = db.prepare('SELECT MAX(acked_upto) AS id FROM cursors').get() as { id: number | null }
    const lastMeta = Number(this.stmt.getMeta.get('last_id') ?? 0)
    // Ids are never reused, even after every row was delivered and deleted.
    this.nextId = Math.max(last.id ?? 0, lastCursor.id ?? 0, lastMeta) + 1
    const totals = db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM readings').get() as { n: number; b: number }
    this.depth = totals.n
    this.bytes = totals.b
    const saved = new Map((db.prepare('SELECT upstream, acked_upto FROM cursors').all() as { upstream: string; acked_upto: number }[]).map((r) => [r.upstream, r.acked_upto]))
    for (const name of this.opts.upstreams) {
      const ackedUpto = saved.get(name) ?? 0
      this.cursors.set(name, { ackedUpto, acked: new Set(), inflight: new Set(), scanFrom: ackedUpto + 1, prioScanFrom: ackedUpto + 1 })
    }
    // Forget cursors of upstreams no longer configured, so they do not pin rows forever.
    for (const name of saved.keys()) if (!this.cursors.has(name)) db.prepare('DELETE FROM cursors WHERE upstream = ?').run(name)
    this.cursorsDirty = true
    this.maintain()
  }

  /** Forgotten upstream cursors that were removed at open (for a log line). */
  get upstreamNames(): string[] { return [...this.cursors.keys()] }

  /**
   * Appends all readings in one transaction (group commit). Returns the last row id, or throws;
   * on failure nothing of the batch is stored and ids/sequences are rolled back.
   */
  appendBatch(readings: ReadingInput[], receivedAt = this.now()): number {
    const firstId = this.nextId
    const touched = new Map<string, number>()
    let addBytes = 0
    let prioId = 0
    const tx = this.db.transaction(() => {
      let id = firstId
      // Rows go in INSERT_ROWS at a time (one statement step instead of one per row), the rest one by one.
      const params: unknown[] = new Array(INSERT_ROWS * 11)
      let k = 0
      for (const r of readings) {
        const seq = (touched.get(r.device) ?? this.seqs.get(r.device) ?? 0) + 1
        touched.set(r.device, seq)
        const size = (typeof r.payload === 'string' ? Buffer.byteLength(r.payload) : r.payload.byteLength) + r.device.length + ROW_OVERHEAD
        addBytes += size
        const payload = typeof r.payload === 'string' ? r.payload : Buffer.from(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength)
        if (r.userProperties !== undefined) {
          // rare: a row of its own (ids are explicit, so it need not sit in the multi-row statement's order)
          const withProps = size + r.userProperties.length
          addBytes += withProps - size
          this.stmt.insertProps.run(id, r.device, seq, r.deviceSeq, r.ts, receivedAt, r.kind === 'json' ? 0 : 1, r.link, payload, withProps, r.priority ? 1 : 0, r.userProperties)
          if (r.priority) prioId = id
          id++
          continue
        }
        params[k++] = id; params[k++] = r.device; params[k++] = seq; params[k++] = r.deviceSeq; params[k++] = r.ts; params[k++] = receivedAt
        params[k++] = r.kind === 'json' ? 0 : 1; params[k++] = r.link; params[k++] = payload; params[k++] = size; params[k++] = r.priority ? 1 : 0
        if (k === params.length) { this.stmt.insertMany.run(params); k = 0 }
        if (r.priority) prioId = id
        id++
      }
      for (let i = 0; i < k; i += 11) this.stmt.insert.run(params.slice(i, i + 11))
      for (const [device, seq] of touched) this.stmt.upsertSeq.run(device, seq)
      this.writeCursors()
    })
    try {
      tx()
    } catch (err) {
      this.lastError = (err as Error).message
      if (isDiskFull(err)) this.diskFull = true
      throw err
    }
    for (const [device, seq] of touched) this.seqs.set(device, seq)
    if (prioId) this.lastPrioId = prioId
    this.nextId = firstId + readings.length
    this.depth += readings.length
    this.bytes += addBytes
    this.appended += readings.length
    this.commits++
    this.diskFull = false
    return this.nextId - 1
  }

  get lastRowId(): number { return this.nextId - 1 }

  /**
   * Up to `limit` rows neither acked nor in flight: the priority lane first, then everything in row order. Each lane
   * keeps per-device order; a priority reading may overtake its device's routine readings (that is its purpose).
   */
  claim(upstream: string, limit: number): ClaimedRow[] {
    const c = this.cursor(upstream)
    const out: ClaimedRow[] = []
    // No query at all while no priority row is pending.
    if (c.prioScanFrom <= this.lastPrioId) this.scan(c, this.stmt.claimPrio, 'prioScanFrom', limit, out)
    this.scan(c, this.stmt.claim, 'scanFrom', limit, out)
    return out
  }

  private scan(c: Cursor, stmt: Statement, from: 'scanFrom' | 'prioScanFrom', limit: number, out: ClaimedRow[]): void {
    while (out.length < limit) {
      const rows = stmt.all(c[from], limit - out.length + c.acked.size) as RowRecord[]
      if (rows.length === 0) break
      for (const r of rows) {
        c[from] = r.id + 1
        if (r.id <= c.ackedUpto || c.acked.has(r.id) || c.inflight.has(r.id)) continue
        c.inflight.add(r.id)
        out.push(this.toRow(r))
        if (out.length >= limit) break
      }
    }
  }

  ack(upstream: string, ids: number[]): void {
    const c = this.cursor(upstream)
    for (const id of ids) {
      c.inflight.delete(id)
      if (id > c.ackedUpto) c.acked.add(id)
    }
    const before = c.ackedUpto
    while (c.acked.delete(c.ackedUpto + 1)) c.ackedUpto++
    if (c.ackedUpto !== before) this.cursorsDirty = true
  }

  /** The upstream refused the row for good: keep it in the dead-letter table with the reason, and move on. */
  deadLetter(upstream: string, id: number, reason: string): void {
    this.db.prepare(`INSERT OR REPLACE INTO dead (upstream, id, device, seq, dseq, ts, recv, kind, link, payload, user_props, reason, at)
      SELECT ?, id, device, seq, dseq, ts, recv, kind, link, payload, user_props, ?, ? FROM readings WHERE id = ?`).run(upstream, reason, this.now(), id)
    this.dead++
    this.ack(upstream, [id])
  }

  /** Dead-lettered rows, oldest first (optionally of one upstream), with the reason they were refused. */
  listDead(upstream?: string, limit = 1000): DeadRow[] {
    return selectDead(this.db, this.opts.gatewayId, upstream, limit)
  }

  /**
   * Dead-lettered rows flagged for retry (by `requestDeadRetry`, e.g. from the CLI while the gateway runs) become
   * readings again: a new row id (so every forwarder sees them), the same device sequence and so the same message id.
   * Runs inside maintain(), i.e. in the one process that owns row ids: the CLI itself never inserts readings.
   */
  private requeueDead(): number {
    const rows = this.db.prepare(`SELECT d.id, d.device, d.seq, d.dseq, d.ts, d.recv, d.kind, d.link, d.payload, d.user_props FROM dead d
      WHERE d.retry = 1 AND d.upstream = (SELECT MIN(upstream) FROM dead x WHERE x.id = d.id AND x.retry = 1) ORDER BY d.id`).all() as RowRecord[]
    if (rows.length === 0) return 0
    for (const r of rows) {
      const size = (typeof r.payload === 'string' ? Buffer.byteLength(r.payload) : r.payload.byteLength) + r.device.length + ROW_OVERHEAD + (r.user_props?.length ?? 0)
      this.stmt.insertProps.run(this.nextId++, r.device, r.seq, r.dseq, r.ts, r.recv, r.kind, r.link, r.payload, size, 0, r.user_props ?? null)
      this.depth++
      this.bytes += size
    }
    this.db.prepare('DELETE FROM dead WHERE retry = 1').run()
    this.requeued += rows.length
    this.cursorsDirty = true // persists last_id with the new ids
    return rows.length
  }

  /** Unsettled rows go back to pending: all of them (link lost), or just `ids` (the upstream said "try later"). */
  release(upstream: string, ids?: number[]): void {
    const c = this.cursor(upstream)
    if (!ids) {
      c.inflight.clear()
      c.scanFrom = c.prioScanFrom = c.ackedUpto + 1
      return
    }
    for (const id of ids) {
      if (!c.inflight.delete(id)) continue
      if (id < c.scanFrom) c.scanFrom = id
      if (id < c.prioScanFrom) c.prioScanFrom = id
    }
  }

  /**
   * Persists cursors, deletes rows every upstream acked, applies retention. Returns what retention dropped,
   * so the caller can log it. Cheap when nothing changed.
   */
  maintain(): { reason: DropReason; rows: number; bytes: number }[] {
    const dropped: { reason: DropReason; rows: number; bytes: number }[] = []
    // Nothing here needs its own fsync: deletes and cursor moves only decide what is sent again after a power
    // cut (duplicates, never loss), and the next FULL commit of new readings syncs these frames too.
    const relax = (this.opts.synchronous ?? 'FULL') === 'FULL'
    if (relax) this.db.pragma('synchronous = NORMAL')
    try {
      this.db.transaction(() => {
        this.requeueDead()
        const delivered = this.cursors.size === 0 ? this.lastRowId : Math.min(...[...this.cursors.values()].map((c) => c.ackedUpto))
        if (delivered > 0) {
          // In chunks: the next step (250 ms later) continues, and commits queued behind this one wait less.
          const chunkEnd = this.stmt.nthId.get(delivered, DELETE_CHUNK) as { id: number } | undefined
          this.deleteUpto(chunkEnd ? chunkEnd.id - 1 : delivered)
          this.deleteBehind = chunkEnd !== undefined
        }
        const byAge = this.ageCutoff()
        if (byAge > 0) dropped.push({ reason: 'retention_age', ...this.dropUpto(byAge) })
        if (this.bytes > this.opts.maxBytes) {
          // Drop to 90% of the limit so retention does not run on every single append.
          const cut = this.bytesCutoff(this.bytes - Math.floor(this.opts.maxBytes * 0.9))
          if (cut > 0) dropped.push({ reason: 'retention_bytes', ...this.dropUpto(cut) })
        }
        this.writeCursors()
      })()
    } catch (err) {
      this.lastError = (err as Error).message
      if (isDiskFull(err)) this.diskFull = true
      else throw err
    } finally {
      if (relax) this.db.pragma('synchronous = FULL')
    }
    for (const d of dropped) this.drops[d.reason] += d.rows
    return dropped.filter((d) => d.rows > 0)
  }

  stats(): OutboxStats {
    const oldest = this.stmt.oldest.get() as { id: number; recv: number } | undefined
    const pageCount = Number(this.db.pragma('page_count', { simple: true }))
    const pageSize = Number(this.db.pragma('page_size', { simple: true }))
    const upstreams: UpstreamCursorStats[] = [...this.cursors.entries()].map(([upstream, c]) => ({
      upstream,
      lag: Math.max(0, this.lastRowId - c.ackedUpto - c.acked.size),
      inflight: c.inflight.size,
      ackedUpto: c.ackedUpto,
    }))
    return {
      depth: this.depth,
      bytes: this.bytes,
      oldestAgeMs: oldest ? Math.max(0, this.now() - oldest.recv) : 0,
      lastRowId: this.lastRowId,
      fileBytes: pageCount * pageSize,
      drops: { ...this.drops },
      appended: this.appended,
      commits: this.commits,
      diskFull: this.diskFull,
      deadLettered: this.dead,
      deadRequeued: this.requeued,
      lastError: this.lastError,
      upstreams,
    }
  }

  close(): void {
    if (!this.db?.open) return
    try { this.maintain() } finally { this.db.close() }
  }

  /** After a failed open(): lets go of the file without touching it further. */
  abandon(): void {
    try { if (this.db?.open) this.db.close() } catch { /* it is being moved aside */ }
  }

  /**
   * Copies what a salvage read (salvage.ts) into this fresh, open store, in one transaction: rows keep their ids,
   * sequences and so their message ids; ids and each device's sequence continue above anything the damaged file may
   * have used (a sequence table that could not be read costs a jump of SEQ_GAP, so no message id is ever reused).
   */
  importSalvaged(s: Salvage): void {
    const db = this.db
    const seqGap = s.seqsFromTable ? 0 : SEQ_GAP
    db.transaction(() => {
      for (const r of s.rows) this.stmt.insertProps.run(r.id, r.device, r.seq, r.dseq, r.ts, r.recv, r.kind, r.link, r.payload, r.bytes, r.prio, r.user_props)
      for (const [device, seq] of s.seqs) this.stmt.upsertSeq.run(device, seq + seqGap)
      for (const [upstream, acked] of s.cursors) this.stmt.setCursor.run(upstream, acked)
      this.stmt.setMeta.run('last_id', String(s.maxId))
    })()
  }

  private cursor(upstream: string): Cursor {
    const c = this.cursors.get(upstream)
    if (!c) throw new Error(`unknown upstream "${upstream}" (configured: ${[...this.cursors.keys()].join(', ') || 'none'})`)
    return c
  }

  private writeCursors(): void {
    if (!this.cursorsDirty) return
    for (const [name, c] of this.cursors) this.stmt.setCursor.run(name, c.ackedUpto)
    this.stmt.setMeta.run('last_id', String(this.lastRowId))
    this.cursorsDirty = false
  }

  private deleteUpto(id: number): { rows: number; bytes: number } {
    const { n, b } = this.stmt.rangeStats.get(id) as { n: number; b: number }
    if (n > 0) this.stmt.deleteUpto.run(id)
    this.depth -= n
    this.bytes -= b
    return { rows: n, bytes: b }
  }

  /** Retention: rows up to `id` go for every upstream; cursors move past them. */
  private dropUpto(id: number): { rows: number; bytes: number } {
    const r = this.deleteUpto(id)
    for (const c of this.cursors.values()) {
      if (c.ackedUpto < id) {
        c.ackedUpto = id
        for (const a of c.acked) if (a <= id) c.acked.delete(a)
        while (c.acked.delete(c.ackedUpto + 1)) c.ackedUpto++
        for (const f of c.inflight) if (f <= id) c.inflight.delete(f)
        if (c.scanFrom <= id) c.scanFrom = id + 1
        this.cursorsDirty = true
      }
    }
    return r
  }

  private ageCutoff(): number {
    const limit = this.now() - this.opts.maxAgeMs
    const oldest = this.stmt.oldest.get() as { id: number; recv: number } | undefined
    if (!oldest || oldest.recv >= limit) return 0
    let cut = 0
    for (;;) {
      const r = this.stmt.ageCut.get(cut, limit) as { id: number | null }
      if (r.id === null) return cut
      cut = r.id
    }
  }

  private bytesCutoff(excess: number): number {
    let cut = 0
    let freed = 0
    for (;;) {
      const rows = this.stmt.retentionScan.all(cut) as { id: number; bytes: number }[]
      if (rows.length === 0) return cut
      for (const r of rows) {
        cut = r.id
        freed += r.bytes
        if (freed >= excess) return cut
      }
    }
  }

  private toRow(r: RowRecord): ClaimedRow { return toRow(r, this.opts.gatewayId) }
}

function toRow(r: RowRecord, gatewayId: string): ClaimedRow {
  const row: ClaimedRow = {
    rowId: r.id,
    device: r.device,
    seq: r.seq,
    deviceSeq: r.dseq,
    ts: r.ts,
    receivedAt: r.recv,
    kind: r.kind === 0 ? 'json' : 'raw',
    link: r.link,
    payload: typeof r.payload === 'string' ? r.payload : new Uint8Array(r.payload),
    msgId: messageId(gatewayId, r.device, r.seq),
    priority: (r.prio ?? 0) > 0,
  }
  if (r.user_props != null) row.userProperties = r.user_props
  return row
}

function selectDead(db: Db, gatewayId: string, upstream: string | undefined, limit: number): DeadRow[] {
// (a file no gateway of this version opened yet has no user_props column: read-only readers take it as it is)
const props = (db.prepare('PRAGMA table_info(dead)').all() as { name: string }[]).some((c) => c.name === 'user_props') ? 'user_props' : 'NULL AS user_props'
const cols = `upstream, id, device, seq, dseq, ts, recv, kind, link, payload, ${props}, reason, at`
const rows = (upstream === undefined
  ? db.prepare(`SELECT ${cols} FROM dead ORDER BY at, id LIMIT ?`).all(limit)
  : db.prepare(`SELECT ${cols} FROM dead WHERE upstream = ? ORDER BY at, id LIMIT ?`).all(upstream, limit)) as (RowRecord & { upstream: string; reason: string; at: number })[]
return rows.map((r) => ({ ...toRow(r, gatewayId), upstream: r.upstream, reason: r.reason, at: r.at }))
}

/**
 * Reads the dead-letter table through a read-only connection: safe while the gateway runs (WAL), and unlike
 * opening an OutboxStore it cannot touch cursors or delete rows.
 */
export function readDeadLetters(file: string, upstream?: string, limit = 1000): DeadRow[] {
  const db = openDatabase(file, { readonly: true })
  try {
    const hasDead = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dead'").get()
    if (!hasDead) return []
    const gatewayId = (db.prepare("SELECT value FROM meta WHERE key = 'gateway_id'").pluck().get() as string | undefined) ?? ''
    return selectDead(db, gatewayId, upstream, limit)
  } finally { db.close() }
}

/**
 * Flags dead-lettered rows for another attempt (all, or of one upstream, or the given row ids); returns how many.
 * Only a flag is written, so this is safe while the gateway runs: its outbox worker turns flagged rows into readings
 * within one maintenance round (or at the next start), being the only writer of row ids.
 */
/** Older databases have no user properties on dead-lettered rows. */
function addDeadUserPropsColumn(db: Db): void {
  const cols = (db.prepare('PRAGMA table_info(dead)').all() as { name: string }[]).map((c) => c.name)
  if (!cols.includes('user_props')) db.exec('ALTER TABLE dead ADD COLUMN user_props TEXT')
}

/** Older databases have no retry flag on dead-lettered rows yet (the store and the CLI may open either first). */
function addDeadRetryColumn(db: Db): void {
  const cols = (db.prepare('PRAGMA table_info(dead)').all() as { name: string }[]).map((c) => c.name)
  if (!cols.includes('retry')) db.exec('ALTER TABLE dead ADD COLUMN retry INTEGER NOT NULL DEFAULT 0')
}

export function requestDeadRetry(file: string, opts: { upstream?: string; ids?: number[] } = {}): number {
  const db = openDatabase(file, { synchronous: 'FULL' })
  try {
    const hasDead = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dead'").get()
    if (!hasDead) return 0
    addDeadRetryColumn(db)
    const where: string[] = ['retry = 0']
    const args: (string | number)[] = []
    if (opts.upstream !== undefined) { where.push('upstream = ?'); args.push(opts.upstream) }
    if (opts.ids && opts.ids.length > 0) { where.push(`id IN (${opts.ids.map(() => '?').join(',')})`); args.push(...opts.ids) }
    return db.prepare(`UPDATE dead SET retry = 1 WHERE ${where.join(' AND ')}`).run(...args).changes
  } finally { db.close() }
}
