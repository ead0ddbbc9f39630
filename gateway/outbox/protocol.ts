// Messages between the outbox client (broker thread) and the outbox worker thread.
import type { ReadingInput } from '../readings.ts'
import type { ClaimedRow, DropReason, OutboxStats } from './types.ts'
import type { OutboxStoreOptions } from './store.ts'

export type WorkerInit = Omit<OutboxStoreOptions, 'now'> & { maintenanceMs: number }

export type ToWorker =
  | { t: 'append'; id: number; rows: ReadingInput[] }
  | { t: 'claim'; id: number; upstream: string; limit: number }
  | { t: 'ack'; upstream: string; ids: number[] }
  | { t: 'release'; upstream: string; ids?: number[] }
  | { t: 'dead'; upstream: string; id: number; reason: string }
  | { t: 'stats'; id: number }
  | { t: 'close'; id: number }

export type FromWorker =
  | { t: 'ready'; lastRowId: number; upstreams: string[] }
  | { t: 'appended'; ids: number[]; lastRowId: number }
  | { t: 'appendFailed'; ids: number[]; code: 'disk_full' | 'io'; message: string }
  | { t: 'claimed'; id: number; rows: ClaimedRow[] }
  | { t: 'stats'; id: number; stats: OutboxStats }
  | { t: 'dropped'; reason: DropReason; rows: number; bytes: number }
  | { t: 'error'; id?: number; message: string }
  | { t: 'closed'; id: number }
