// The camera source: an external pipeline (ffmpeg, libcamera-vid, GStreamer) started and supervised by the gateway,
// sending H.264 RTP to a loopback UDP port we listen on. Restarts with backoff; its stderr is logged at debug.
import { spawn, type ChildProcess } from 'node:child_process'
import { createSocket, type Socket } from 'node:dgram'
import type { Logger } from 'pino'
import { Backoff } from '../upstream/backoff.ts'
import type { CameraConfig } from './config.ts'
import { SourceState } from './state.ts'
import { parseRtp, type RtpHeader } from './rtp.ts'

/** `{rtpPort}` in each argument becomes the port. */
export function expandCommand(command: readonly string[], rtpPort: number): string[] {
  return command.map((a) => a.replaceAll('{rtpPort}', String(rtpPort)))
}

export class RtpSource {
  readonly state: SourceState
  private sock: Socket | null = null
  private child: ChildProcess | null = null
  private readonly backoff: Backoff
  private restartTimer: NodeJS.Timeout | null = null
  private stallTimer: NodeJS.Timeout | null = null
  private stopping = false
  private stderrTail = ''
  /** Processes we killed after a stall: their exit is not news (the stall is the reason shown). */
  private readonly killedForStall = new WeakSet<ChildProcess>()
  private readonly listeners: { packet: ((buf: Buffer, h: RtpHeader | null, now: number) => void)[]; change: (() => void)[]; spawned: (() => void)[] } = { packet: [], change: [], spawned: [] }

  constructor(private readonly config: CameraConfig, private readonly log: Logger, now = Date.now()) {
    this.state = new SourceState(config.stallMs, true, now)
    this.backoff = new Backoff(config.restartMinMs, config.restartMaxMs)
  }

  /** Every datagram, with its RTP header (null: not RTP, which does not count as the source being alive). */
  onPacket(l: (buf: Buffer, h: RtpHeader | null, now: number) => void): void { this.listeners.packet.push(l) }
  /** State changes (starting/live/dead) and reason updates. */
  onChange(l: () => void): void { this.listeners.change.push(l) }
  /** A new source process: its RTP numbering starts afresh. */
  onSpawned(l: () => void): void { this.listeners.spawned.push(l) }

  get pid(): number | undefined { return this.child?.pid }

  /** Binds the RTP port and starts the source. A port in use leaves the camera dead (the gateway runs on). */
  async start(): Promise<void> {
    const sock = createSocket('udp4')
    sock.on('message', (buf) => {
      const now = Date.now()
      const h = parseRtp(buf)
      if (h && this.state.packet(now)) {
        this.backoff.reset()
        this.log.info({ sourcePid: this.child?.pid }, 'camera source live')
        this.emit('change')
      }
      for (const l of this.listeners.packet) l(buf, h, now)
    })
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject)
        sock.bind(this.config.rtpPort, '127.0.0.1', () => { sock.off('error', reject); resolve() })
      })
    } catch (err) {
      sock.close()
      const e = err as NodeJS.ErrnoException
      const reason = `cannot listen for RTP on 127.0.0.1:${this.config.rtpPort}: ${e.code === 'EADDRINUSE' ? 'address already in use (camera.rtpPort)' : e.message}`
      this.log.error(reason)
      this.state.exited(Date.now(), reason)
      this.emit('change')
      return
    }
    sock.on('error', (err) => this.log.warn({ err: err.message }, 'camera RTP socket error'))
    // Video bursts (a keyframe is dozens of packets at once): a larger buffer avoids drops while the loop is busy.
    try { sock.setRecvBufferSize(4 * 1024 * 1024) } catch { /* the kernel caps it (net.core.rmem_max) */ }
    this.sock = sock
    this.stallTimer = setInterval(() => this.checkStall(), Math.min(1000, this.config.stallMs / 2))
    this.spawn()
  }

  async stop(): Promise<void> {
    this.stopping = true
    if (this.restartTimer) clearTimeout(this.restartTimer)
    if (this.stallTimer) clearInterval(this.stallTimer)
    this.restartTimer = this.stallTimer = null
    const child = this.child
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()))
      child.kill('SIGTERM')
      const force = setTimeout(() => child.kill('SIGKILL'), 2000)
      await gone
      clearTimeout(force)
    }
    this.sock?.close()
    this.sock = null
    this.state.stopped(Date.now())
  }

  private spawn(): void {
    const argv = expandCommand(this.config.command, this.config.rtpPort)
    const [cmd, ...args] = argv as [string, ...string[]]
    this.stderrTail = ''
    let child: ChildProcess
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    } catch (err) {
      this.died(`cannot start ${cmd}: ${(err as Error).message}`)
      return
    }
    this.child = child
    this.state.spawned(Date.now())
    for (const l of this.listeners.spawned) l()
    this.log.info({ sourcePid: child.pid, command: argv.join(' ') }, 'camera source started')
    let buf = ''
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (d: string) => {
      buf += d
      let i
      while ((i = buf.search(/[\r\n]/)) >= 0) {
        const line = buf.slice(0, i).trim()
        buf = buf.slice(i + 1)
        if (!line) continue
        this.stderrTail = line.slice(0, 300)
        this.log.debug({ sourcePid: child.pid, stderr: line }, 'camera source')
      }
    })
    let reported = false
    const gone = (why: string): void => {
      if (reported) return
      reported = true
      if (this.child === child) this.child = null
      if (this.stopping) return
      this.died(why)
    }
    child.once('error', (err: NodeJS.ErrnoException) => {
      gone(err.code === 'ENOENT' ? `cannot start the camera source: ${cmd} not found (camera.command)` : `camera source failed: ${err.message}`)
    })
    child.once('exit', (code, signal) => {
      if (this.killedForStall.has(child)) { gone(''); return }
      const tail = this.stderrTail ? `: ${this.stderrTail}` : ''
      gone(`the camera source exited (${signal ? `signal ${signal}` : `code ${code}`})${tail}`)
    })
  }

  private died(reason: string): void {
    const now = Date.now()
    const changed = this.state.exited(now, reason === '' ? null : reason)
    const delay = this.backoff.next()
    const snap = this.state.snapshot()
    if (changed) this.log.error({ reason: snap.reason, retryInMs: delay }, 'camera source dead: restarting with backoff')
    else this.log.debug({ reason: snap.reason, retryInMs: delay }, 'camera source still dead')
    this.emit('change')
    this.restartTimer = setTimeout(() => { this.restartTimer = null; if (!this.stopping) this.spawn() }, delay)
  }

  private checkStall(): void {
    if (!this.state.checkStall(Date.now())) return
    const child = this.child
    this.log.warn({ sourcePid: child?.pid, reason: this.state.snapshot().reason }, 'camera source stalled: killing it')
    this.emit('change')
    if (child) {
      this.killedForStall.add(child)
      child.kill('SIGKILL')
    }
  }

  private emit(kind: 'change'): void {
    for (const l of this.listeners[kind]) {
      try { l() } catch (err) { this.log.error({ err: (err as Error).message }, 'camera listener failed') }
    }
  }
}
