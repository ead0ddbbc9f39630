// Messages between the outbox client (broker thread) and the outbox worker thread.
import type { ClaimedRow, DropReason, OutboxStats } from './types.ts'
import type { OutboxStoreOptions } from './store.ts'
import type { MessagePort } from 'node:worker_threads'

/** The outbox file was corrupted at start: where it went and what was saved from it (salvage.ts). */
export interface OutboxRecovery {
  at: number
  movedTo: string
  error: string
  salvaged: number
  /** At least this many row ids could not be read. */
  unreadable: number
  /** Nothing at all could be read (not a database any more). */
  unreadableFile: boolean
}

/** A reading of batch `id` at `index` that does not decode: acknowledged but not stored, the device is told why. */
export interface Refusal { id: number; index: number; device: string; reason: string }

/** The newest stored reading of a device (JSON payload text; raw readings carry none). */
export interface LatestReading { device: string; link: string; ts: number; seq: number | null; payload: string | null }

export type WorkerInit = Omit<OutboxStoreOptions, 'now'> & {
  maintenanceMs: number
  /** Appends that meet a full disk wait this long for space before they fail (0: fail at once; default 60 s). */
  diskFullHoldMs?: number
  /** Send each device's newest stored reading at most this often (0: never). */
  latestEveryMs: number
  /** The priority lane: readings carrying any of these metrics, and every reading of these devices. */
  priority?: { metrics: string[]; devices: string[] }
  /** history tap: committed JSON readings are posted here for the history store (gateway/history/tap.ts). */
  tap?: MessagePort
  /** The tap's sampling interval per device (gateway/history/tap.ts; 0: every reading). */
  tapMinIntervalMs?: number
}

/** The user properties of a batch's readings that have some: [index in the batch, JSON text], ascending by index. */
export type UserPropertiesAt = [number, string][]

export type ToWorker =
  /**
   * A batch of n raw readings: payloads packed back to back in `data`; `meta` holds n lengths, then n device and n
   * link name numbers (both transferred, not copied). `names` are the numbers' new names, in order from the table's
   * size; `reset`: the table starts over (before `names`).
   */
  | { t: 'append'; id: number; reset: boolean; names: string[]; meta: Uint32Array; data: Uint8Array; receivedAt: number; userProperties?: UserPropertiesAt }
  | { t: 'claim'; id: number; upstream: string; limit: number }
  | { t: 'ack'; upstream: string; ids: number[] }
  | { t: 'release'; upstream: string; ids?: number[] }
  | { t: 'dead'; upstream: string; id: number; reason: string }
  | { t: 'stats'; id: number }
  | { t: 'close'; id: number }

export type FromWorker =
  | { t: 'ready'; lastRowId: number; upstreams: string[]; recovery?: OutboxRecovery }
  | { t: 'appended'; ids: number[]; lastRowId: number; refused: Refusal[]; phases: CommitPhases }
  | { t: 'appendFailed'; ids: number[]; code: 'disk_full' | 'io'; message: string }
  /** The disk is full: appends are held (unacknowledged) and retried, not failed; sent once per full spell. */
  | { t: 'held'; code: 'disk_full'; message: string }
  | { t: 'claimed'; id: number; rows: ClaimedRow[] }
  | { t: 'stats'; id: number; stats: OutboxStats }
  | { t: 'dropped'; reason: DropReason; rows: number; bytes: number }
  | { t: 'latest'; readings: LatestReading[] }
  | { t: 'error'; id?: number; message: string }
  | { t: 'closed'; id: number }

/**
 * Where one commit's time went, on the worker (times in ms on the shared clock performance.timeOrigin + now(), so
 * both threads can compare them): decode and the SQLite write (inserts and the fsynced COMMIT).
 */
export interface CommitPhases { startedAt: number; decodeMs: number; writeMs: number; sentAt: number }

/** A clock both threads read alike (each thread's performance.now() starts at its own origin). */
export function sharedNow(): number { return performance.timeOrigin + performance.now() }

/** What /healthz says while the damaged file that start-up moved aside is still there (the operator's to inspect). */
export function recoveryReasons(r: OutboxRecovery | null, exists: (path: string) => boolean): string[] {
  if (!r || !exists(r.movedTo)) return []
  const saved = r.unreadableFile ? 'nothing could be read from it' : `${r.salvaged} readings were salvaged into a fresh outbox${r.unreadable ? `, at least ${r.unreadable} could not be read` : ''}`
  return [`outbox was corrupted at start (${r.error}): moved to ${r.movedTo}; ${saved}. Remove that file once inspected`]
}
