// Routes a command from any upstream (or the CLI/dashboard later) to the device link that owns the device, and
// resolves with the device's result. Every command gets exactly one result: success, device error, or a routing
// error (unknown device, offline, expired, timeout) — never silence. `expired`: the deadline came before the device
// had the command (e.g. it stayed offline while its session held it); `timeout`: it had it and did not answer.
import type { LinkCommand, LinkCommandOutcome } from '../links/device-link.ts'
import { COMMAND_NAME_RE } from '../readings.ts'

export interface Command {
  /** Correlates the device's result (the upstream's message id). */
  id: string
  device: string
  name: string
  args: unknown
  /** ms since epoch; the command is not delivered (and errors) after this. */
  expiresAt?: number
}

export type CommandErrorCode = 'bad_request' | 'unknown_device' | 'offline' | 'expired' | 'timeout' | 'device_error' | 'send_failed'

export type CommandResult =
  | { id: string; device: string; name: string; ok: true; result: unknown }
  | { id: string; device: string; name: string; ok: false; code: CommandErrorCode; error: string }

/** The device side: the device links (gateway/links/device-link.ts), behind what the router needs of them. */
export interface CommandTarget {
  isKnown(device: string): boolean
  isOnline(device: string): boolean
  /** Resolves with the device's answer when the link has it at once; 'sent' (or nothing): it comes via handleResult. */
  send(device: string, cmd: LinkCommand): Promise<LinkCommandOutcome | void>
  /** Whether the device's link holds a command for it while it is offline (then it is sent, not refused `offline`). */
  queues?(device: string, name: string): Promise<boolean>
}

interface Pending {
  cmd: Command
  resolve: (r: CommandResult) => void
  timer: NodeJS.Timeout
  /** The device has it (written to its connection, or taken from its queue): silence then is a `timeout`, not `expired`. */
  delivered: boolean
}


export class CommandRouter {
  private readonly pending = new Map<string, Pending>()
  private readonly timeoutMs: number
  private readonly now: () => number
  private readonly doneListeners: ((e: { args: unknown; result: CommandResult; latencyMs: number }) => void)[] = []

  constructor(private readonly target: CommandTarget, opts: { timeoutMs?: number; now?: () => number } = {}) {
    this.timeoutMs = opts.timeoutMs ?? 30000
    this.now = opts.now ?? Date.now
  }

  get inflight(): number { return this.pending.size }

  /** Every result (routing errors included) with its latency: the device journal's command history. */
  onDone(listener: (e: { args: unknown; result: CommandResult; latencyMs: number }) => void): void { this.doneListeners.push(listener) }

  dispatch(cmd: Command): Promise<CommandResult> {
    const started = performance.now()
    return this.route(cmd).then((result) => {
      for (const l of this.doneListeners) { try { l({ args: cmd.args ?? null, result, latencyMs: performance.now() - started }) } catch { /* a listener never changes the result */ } }
      return result
    })
  }

  private route(cmd: Command): Promise<CommandResult> {
    const fail = (code: CommandErrorCode, error: string): Promise<CommandResult> =>
      Promise.resolve({ id: cmd.id, device: cmd.device, name: cmd.name, ok: false, code, error })
    if (!cmd.id) return fail('bad_request', 'command without an id')
    if (!COMMAND_NAME_RE.test(cmd.name)) return fail('bad_request', `invalid command name "${cmd.name.slice(0, 80)}"`)
    if (this.pending.has(cmd.id)) return fail('bad_request', `command id "${cmd.id}" is already in flight`)
    const left = cmd.expiresAt === undefined ? this.timeoutMs : cmd.expiresAt - this.now()
    if (left <= 0) return fail('expired', `command expired ${-left} ms before it could be routed`)
    if (!this.target.isKnown(cmd.device)) return fail('unknown_device', `unknown device "${cmd.device}"`)
    if (this.target.isOnline(cmd.device)) return this.send(cmd, left)
    const offline = (): Promise<CommandResult> => fail('offline', `device "${cmd.device}" is offline`)
    // An offline device with a persistent session gets it when it is back, if that is before the deadline.
    if (!this.target.queues) return offline()
    return this.target.queues(cmd.device, cmd.name).then((queues) => {
      if (!queues) return offline()
      if (this.pending.has(cmd.id)) return fail('bad_request', `command id "${cmd.id}" is already in flight`)
      return this.send(cmd, cmd.expiresAt === undefined ? this.timeoutMs : cmd.expiresAt - this.now())
    }, offline)
  }

  /** Hands the command to the device's link and waits for its one result (the answer, or the deadline). */
  private send(cmd: Command, left: number): Promise<CommandResult> {
    return new Promise<CommandResult>((resolve) => {
      const wait = Math.max(1, Math.min(this.timeoutMs, left))
      const timer = setTimeout(() => {
        this.pending.delete(cmd.id)
        resolve(p.delivered
          ? { id: cmd.id, device: cmd.device, name: cmd.name, ok: false, code: 'timeout', error: `no result from the device within ${wait} ms` }
          : { id: cmd.id, device: cmd.device, name: cmd.name, ok: false, code: 'expired', error: `not delivered within ${wait} ms: the device was offline and did not come back in time` })
      }, wait)
      const p: Pending = { cmd, resolve, timer, delivered: false }
      this.pending.set(cmd.id, p)
      this.target.send(cmd.device, { id: cmd.id, name: cmd.name, args: cmd.args ?? null, expiresAt: this.now() + wait }).then((out) => {
        if (!out || out.kind === 'sent') {
          if (out?.delivered) void out.delivered.then((d) => { if (d) p.delivered = true })
          else p.delivered = true
          return
        }
        this.complete(cmd.id, out.ok
          ? { id: cmd.id, device: cmd.device, name: cmd.name, ok: true, result: out.result }
          : { id: cmd.id, device: cmd.device, name: cmd.name, ok: false, code: 'device_error', error: out.error })
      }, (err: unknown) => {
        this.complete(cmd.id, { id: cmd.id, device: cmd.device, name: cmd.name, ok: false, code: 'send_failed', error: (err as Error).message })
      })
    })
  }

  /**
   * A device published to `devices/<device>/cmd/<name>/result`: `{"id": ..., "result": ...}` or `{"id": ..., "error": "..."}`.
   * Returns false when it matches no pending command (late, duplicate, or another device's id).
   */
  handleResult(device: string, name: string, payload: Buffer | string): boolean {
    let msg: unknown
    try { msg = JSON.parse(payload.toString()) } catch { return false }
    if (!msg || typeof msg !== 'object') return false
    const m = msg as { id?: unknown; result?: unknown; error?: unknown; ok?: unknown }
    if (typeof m.id !== 'string') return false
    const p = this.pending.get(m.id)
    // Only the addressed device may answer its command.
    if (!p || p.cmd.device !== device || p.cmd.name !== name) return false
    const failed = m.error !== undefined && m.error !== null || m.ok === false
    this.complete(m.id, failed
      ? { id: m.id, device, name, ok: false, code: 'device_error', error: typeof m.error === 'string' ? m.error : JSON.stringify(m.error ?? 'failed') }
      : { id: m.id, device, name, ok: true, result: m.result ?? null })
    return true
  }

  /** Pending commands fail with `timeout` now (gateway stopping). */
  close(): void {
    for (const id of [...this.pending.keys()]) {
      const p = this.pending.get(id)!
      // a queued command stays in the broker's store with its deadline: it may still reach the device before then
      const error = p.delivered ? 'gateway stopping' : 'gateway stopping: the command is still queued for the device until its deadline'
      this.complete(id, { id, device: p.cmd.device, name: p.cmd.name, ok: false, code: 'timeout', error })
    }
  }

  /** The command's one result: its waiter is resolved and forgotten (later answers match nothing). */
  private complete(id: string, r: CommandResult): void {
    const p = this.pending.get(id)
    if (!p) return
    this.pending.delete(id)
    clearTimeout(p.timer)
    p.resolve(r)
  }
}
