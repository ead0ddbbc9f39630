// OTA job state machine (pure): what a device report or the clock does to a job. No I/O, no timers.
//
//   announced --request/downloading--> downloading --applied--> applied --reconnect + new version healthy--> succeeded
//        \                 \--failed--> failed                    \--old version reported, or deadline passed--> rolled_back
//         \--failed--> failed          (any unfinished state --cancel--> cancelled: the operator gave up)

export type OtaState = 'announced' | 'downloading' | 'applied' | 'succeeded' | 'failed' | 'rolled_back' | 'cancelled'

export const FINAL_STATES: readonly OtaState[] = ['succeeded', 'failed', 'rolled_back', 'cancelled']
export const isFinal = (s: OtaState): boolean => FINAL_STATES.includes(s)

export interface OtaJob {
  id: number
  device: string
  version: string
  /** What the registry said the device ran when the job was pushed (null: unknown). */
  previousVersion: string | null
  size: number
  sha256: string
  chunkSize: number
  signature: string | null
  state: OtaState
  reason: string | null
  /** Bytes the device says it has verified (its last good offset), else the end of the highest chunk served. */
  offset: number
  createdAt: number
  updatedAt: number
  appliedAt: number | null
  /** How long after `applied` the device has to come back with the new version and healthy. */
  deadlineMs: number
  /** Absolute deadline once applied (ms since epoch). */
  deadlineAt: number | null
  /** The device connected again after it reported `applied` (a reboot). Not stored: a gateway restart counts as one. */
  reconnected: boolean
  /** Last health the device reported with the new version (for the rollback reason). */
  lastHealth: boolean | null
}

export type OtaEvent =
  | { type: 'served'; end: number }
  | { type: 'downloading'; offset: number }
  | { type: 'applied' }
  | { type: 'failed'; reason: string }
  | { type: 'online' }
  | { type: 'firmware'; version: string; healthy: boolean | null }
  | { type: 'tick' }
  | { type: 'cancel'; reason: string }

export interface Step { job: OtaJob; changed: boolean; /** state changed (worth a log line and a durable write) */ transition: boolean }

export function step(job: OtaJob, ev: OtaEvent, now: number): Step {
  const same: Step = { job, changed: false, transition: false }
  if (isFinal(job.state)) return same
  const to = (patch: Partial<OtaJob>): Step => {
    const next = { ...job, ...patch, updatedAt: now }
    return { job: next, changed: true, transition: next.state !== job.state }
  }
  switch (ev.type) {
    case 'served':
      if (job.state !== 'announced' && job.state !== 'downloading') return same
      return to({ state: 'downloading', offset: Math.max(job.offset, Math.min(ev.end, job.size)) })
    case 'downloading':
      if (job.state !== 'announced' && job.state !== 'downloading') return same
      // The device's own figure wins: after a drop it resumes from what it verified, which may be below what was served.
      return to({ state: 'downloading', offset: Math.min(ev.offset, job.size) })
    case 'applied':
      if (job.state === 'applied') return same
      return to({ state: 'applied', offset: job.size, appliedAt: now, deadlineAt: now + job.deadlineMs, reconnected: false, lastHealth: null })
    case 'failed':
      return to({ state: 'failed', reason: `device reported failure: ${ev.reason}` })
    case 'online':
      if (job.state !== 'applied' || job.reconnected) return same
      return to({ reconnected: true })
    case 'firmware': {
      if (job.state !== 'applied' || !job.reconnected) return same
      if (ev.version !== job.version) {
        return to({ state: 'rolled_back', reason: `device came back running ${ev.version} instead of ${job.version} after applying it` })
      }
      if (ev.healthy === true) return to({ state: 'succeeded', reason: null })
      return to({ lastHealth: ev.healthy })
    }
    case 'cancel':
      return to({ state: 'cancelled', reason: ev.reason })
    case 'tick': {
      if (job.state !== 'applied' || job.deadlineAt === null || now < job.deadlineAt) return same
      const why = !job.reconnected ? 'the device did not reconnect'
        : job.lastHealth === false ? `it reported ${job.version} but not healthy` : `it did not report ${job.version} with "healthy": true`
      return to({ state: 'rolled_back', reason: `no healthy report of ${job.version} within ${Math.round(job.deadlineMs / 1000)} s after applied: ${why}` })
    }
  }
}

/** After a gateway restart: an applied job's device gets at least `graceMs` to report, since it could not while we were down. */
export function afterRestart(job: OtaJob, now: number, graceMs: number): OtaJob {
  if (job.state !== 'applied' || job.deadlineAt === null) return { ...job, reconnected: false }
  return { ...job, reconnected: true, deadlineAt: Math.max(job.deadlineAt, now + Math.min(graceMs, job.deadlineMs)) }
}
