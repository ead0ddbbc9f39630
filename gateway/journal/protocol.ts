// Messages between the device journal's client (the gateway's main thread) and its worker thread, which owns
// journal.db so no journal write or checkpoint ever runs on the broker's event loop.
import type { Bounds, EntryKind, JournalEntry, LastPayload } from './entries.ts'
import type { JournalLists } from './store.ts'
import type { OtaJob } from '../ota/job.ts'

export interface JournalWorkerInit { file: string; dataDir: string; bounds: Bounds }

/** One device's journal as the device page shows it. */
export interface DeviceJournalView {
  entries: JournalLists
  lastPayload: LastPayload | null
  /** The device's OTA jobs from ota.db, newest first (the OTA service's own record, read-only). */
  otaJobs: OtaJob[]
}

export type ToJournalWorker =
  | { t: 'write'; entries: JournalEntry[]; payloads: LastPayload[] }
  | { t: 'read'; id: number; device: string; limits: Partial<Record<EntryKind, number>> }
  | { t: 'close' }

export type FromJournalWorker =
  | { t: 'ready' }
  | { t: 'read'; id: number; view: DeviceJournalView | null; error?: string }
  | { t: 'error'; message: string }
  | { t: 'closed' }
