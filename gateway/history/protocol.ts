// Messages of the history worker: the feed from the outbox worker (its own MessagePort, see tap.ts) and the
// requests of the main thread (queries for the HTTP API, stats for the metrics, close).
import type { CsvPlan, PruneCounts, RangeResult, SeriesInfo } from './store.ts'
import type { HistoryStoreOptions } from './store.ts'

/**
 * Committed readings, as the outbox worker sends them: n rows, `text` their JSON payloads joined by NUL (which valid
 * JSON never holds unescaped), `dev` indexes into `names`, `ts` and `ids` (outbox row ids) per row.
 */
export interface TapBatch { t: 'rows'; names: string[]; dev: Uint32Array; ts: Float64Array; ids: Float64Array; text: string }

export type HistoryInit = Omit<HistoryStoreOptions, 'now'> & {
  /** The outbox database, read (read-only) once at start for readings committed after history's last position. */
  outboxFile: string
  /** Commit gathered points this often (ms). */
  commitMs: number
  /** Prune by age and bytes this often (ms). */
  pruneMs: number
}

export type HistoryQuery =
  | { q: 'series'; device: string }
  | { q: 'range'; device: string; metric: string; from: number; to: number; points: number }
  | { q: 'csvPlan'; device: string; from: number; to: number }
  | { q: 'csvRows'; plan: CsvPlan; a: number; b: number }
  | { q: 'stats' }

export interface HistoryStats {
  points: number
  refused: number
  pruned: PruneCounts
  usedBytes: number
  series: number
  lastRow: number
  /** Devices that had a series refused since the last stats (one log line each). */
  refusedDevices: string[]
}

export interface QueryAnswers {
  series: SeriesInfo[]
  range: RangeResult | null
  csvPlan: CsvPlan
  csvRows: string
  stats: HistoryStats
}

export type ToHistory =
  | { t: 'query'; id: number; query: HistoryQuery }
  | { t: 'close'; id: number }

export type FromHistory =
  | { t: 'ready'; lastRow: number; caughtUp: number }
  | { t: 'answer'; id: number; value: unknown }
  | { t: 'failed'; id?: number; message: string }
  | { t: 'closed'; id: number }
