// The upstream seam: a connector that takes readings from its outbox cursor and settles each one.
import type { ClaimedRow } from '../outbox/types.ts'
import type { Command, CommandResult } from '../commands/router.ts'

/** accepted: the upstream has it (row acked). released: try again later. rejected: never (dead-letter). */
export type Outcome = 'accepted' | 'released' | 'rejected'

export interface UpstreamStatus {
  connected: boolean
  /** When the link last changed state (ms since epoch). */
  since: number
  lastError: string | null
  /** Upstreams that answer commands on a reply address: replies the broker accepted, and ones that were lost. */
  repliesSent?: number
  repliesFailed?: number
}

export interface Upstream {
  readonly name: string
  /** Starts connecting, and reconnecting with backoff until close(). Resolves once the first attempt is under way. */
  start(): Promise<void>
  close(): Promise<void>
  status(): UpstreamStatus
  /** How many more readings may be handed to deliver() now. */
  credit(): number
  /** Sends the rows; `settle` is called exactly once per row unless the link drops first (then the forwarder releases them). */
  deliver(rows: ClaimedRow[], settle: (rowId: number, outcome: Outcome, detail?: string) => void): void
  /** Link up/down and credit changes. */
  onChange(listener: () => void): void
  /** Upstreams with a downlink hand each command to `handler` and send its result back their own way. */
  onCommand?(handler: (cmd: Command) => Promise<CommandResult>): void
  /** Upstreams that publish a gateway heartbeat take their status snapshot (backlog, devices online, version) here. */
  setStatusSource?(source: () => Promise<Record<string, unknown>>): void
}
