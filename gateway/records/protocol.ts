// What the records thread's entry is told by the main thread: start a service on a port of its own.
import type { MessagePort } from 'node:worker_threads'
import type { HistoryInit } from '../history/protocol.ts'
import type { JournalWorkerInit } from '../journal/protocol.ts'

export type RecordsAttach =
  | { t: 'attach'; service: 'history'; port: MessagePort; init: HistoryInit & { tap: MessagePort } }
  | { t: 'attach'; service: 'journal'; port: MessagePort; init: JournalWorkerInit }

export type RecordsService = RecordsAttach['service']
