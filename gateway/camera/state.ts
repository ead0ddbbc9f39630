// The camera source's state, as the panel, /healthz and the supervisor see it. Pure: time comes in as arguments.
//   off       camera.enabled is false: nothing runs
//   starting  the source was started and has not sent RTP yet
//   live      RTP arrived within the last stallMs
//   dead      the source exited, could not start, or stopped sending; it stays dead until RTP flows again
//             (the supervisor restarts the process meanwhile, with backoff)

export type CameraState = 'off' | 'starting' | 'live' | 'dead'

export interface SourceSnapshot {
  state: CameraState
  /** When the state last changed (ms since epoch). */
  since: number
  /** Why it is dead (exit code and the source's last stderr line, or the stall). */
  reason: string | null
  /** Process starts after the first. */
  restarts: number
}

export class SourceState {
  private snap: SourceSnapshot
  private running = false
  private spawns = 0
  private spawnedAt = 0
  private lastPacketAt = 0

  constructor(private readonly stallMs: number, enabled: boolean, now: number) {
    this.snap = { state: enabled ? 'starting' : 'off', since: now, reason: null, restarts: 0 }
  }

  get state(): CameraState { return this.snap.state }
  snapshot(): SourceSnapshot { return { ...this.snap } }

  /** A source process was started. */
  spawned(now: number): void {
    if (this.spawns++ > 0) this.snap.restarts++
    this.running = true
    this.spawnedAt = now
  }

  /** An RTP packet arrived. Returns true when this made the source live (a state change). */
  packet(now: number): boolean {
    this.lastPacketAt = now
    if (this.snap.state === 'live' || this.snap.state === 'off') return false
    this.set('live', null, now)
    return true
  }

  /** The process is gone (or never started). `reason` null (we killed it after a stall) keeps the stall's reason. */
  exited(now: number, reason: string | null): boolean {
    this.running = false
    if (this.snap.state === 'off') return false
    if (this.snap.state === 'dead') {
      if (reason !== null) this.snap.reason = reason
      return false
    }
    this.set('dead', reason ?? 'the source stopped', now)
    return true
  }

  /** Marks the source dead when it runs but sent nothing for stallMs; returns true when the caller should kill it. */
  checkStall(now: number): boolean {
    if (!this.running) return false
    const last = Math.max(this.lastPacketAt, this.spawnedAt)
    if (now - last < this.stallMs) return false
    const secs = Math.round((now - last) / 1000)
    const reason = this.lastPacketAt > this.spawnedAt ? `no RTP from the source for ${secs} s` : `the source sent no RTP within ${secs} s of starting`
    if (this.snap.state !== 'dead') this.set('dead', reason, now)
    else this.snap.reason = reason
    this.running = false
    return true
  }

  /** The camera was stopped with the gateway. */
  stopped(now: number): void {
    this.running = false
    this.set('off', null, now)
  }

  private set(state: CameraState, reason: string | null, now: number): void {
    this.snap = { ...this.snap, state, reason, since: now }
  }
}
