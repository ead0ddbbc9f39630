// The camera feature: the supervised RTP source, one WebRTC peer per viewer, and the dashboard channel ("camera.*")
// that signals them. Packets are rewritten once (SSRC, payload type, continuous numbering) and sent to every viewer.
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { ChannelConnection, ChannelMessage, ChannelSession, DashboardChannel } from '../dashboard/channel.ts'
import type { CameraConfig } from './config.ts'
import { RtpSource } from './source.ts'
import { RateMeter, RtpRewriter, rtcpFeedback, startsKeyframe, type RtpHeader } from './rtp.ts'
import { checkAnswer, normaliseCandidate, toBrowserIceServers, toLibIceServers } from './sdp.ts'
import type { CameraState } from './state.ts'
import type { ViewerPeer } from './webrtc.ts'

/** What the panel, /healthz and /metrics show. */
export interface CameraStatus {
  enabled: boolean
  state: CameraState
  since: string
  reason: string | null
  restarts: number
  /** Viewers with an established connection. */
  viewers: number
  maxViewers: number
  /** Bits per second arriving from the source (and sent to each viewer). */
  bitrate: number
  /** Keyframe requests (PLI/FIR) from viewers so far: the source cannot honour them, its GOP bounds the wait. */
  keyframeRequests: number
}

/** Payload type and SSRC announced in our offers; every packet is rewritten to these. */
const PAYLOAD_TYPE = 96
const SSRC = 0x0edce0ae
/** RTP packets above this risk IP fragmentation after SRTP (+10..16 bytes) and TURN (+36) on a 1500-byte path. */
const MAX_RTP_BYTES = 1300

interface Viewer {
  id: string
  session: ChannelSession
  peer: ViewerPeer
  connected: boolean
  /** Nothing is sent before a keyframe starts: frames before it cannot be decoded. */
  waitingKeyframe: boolean
}

type WebRtc = typeof import('./webrtc.ts')

export class CameraService implements DashboardChannel {
  readonly prefix = 'camera'
  private source: RtpSource | null = null
  private webrtc: WebRtc | null = null
  private readonly viewers = new Map<string, Viewer>()
  private readonly sessions = new Set<ChannelSession>()
  private readonly rewriter = new RtpRewriter(SSRC, PAYLOAD_TYPE)
  private readonly meter = new RateMeter()
  private statusTimer: NodeJS.Timeout | null = null
  private notRtpLogged = false
  private bigPacketLogged = false
  private readonly startedAt = Date.now()
  private unavailable: string | null = null
  private keyframeRequests = 0

  constructor(private readonly config: CameraConfig, private readonly log: Logger) {}

  async start(): Promise<void> {
    if (!this.config.enabled) return
    // Loaded only when enabled: the native WebRTC library costs startup time and memory otherwise.
    try {
      this.webrtc = await import('./webrtc.ts')
    } catch (err) {
      // A platform without a node-datachannel binary: the camera is dead, the gateway runs on.
      this.unavailable = `WebRTC (node-datachannel) cannot be loaded: ${(err as Error).message}`
      this.log.error(this.unavailable)
      return
    }
    this.webrtc.installWebRtcLogger(this.log)
    const source = new RtpSource(this.config, this.log)
    this.source = source
    source.onSpawned(() => this.rewriter.newSource())
    source.onPacket((buf, h, now) => this.forward(buf, h, now))
    source.onChange(() => this.broadcastStatus())
    await source.start()
    this.statusTimer = setInterval(() => this.broadcastStatus(), 1000)
  }

  async stop(): Promise<void> {
    if (this.statusTimer) clearInterval(this.statusTimer)
    this.statusTimer = null
    for (const v of this.viewers.values()) v.peer.close()
    this.viewers.clear()
    // libdatachannel's threads would keep the process alive (an embedding process, a test) after the last peer.
    this.webrtc?.cleanupWebRtc()
    this.webrtc = null
    await this.source?.stop()
    this.broadcastStatus()
    this.sessions.clear()
  }

  status(): CameraStatus {
    const now = Date.now()
    const snap = this.source?.state.snapshot()
    let connected = 0
    for (const v of this.viewers.values()) if (v.connected) connected++
    return {
      enabled: this.config.enabled,
      state: snap?.state ?? (this.unavailable ? 'dead' : 'off'),
      since: new Date(snap?.since ?? this.startedAt).toISOString(),
      reason: snap ? snap.reason : this.unavailable ?? (this.config.enabled ? null : 'the camera is off (camera.enabled is false)'),
      restarts: snap?.restarts ?? 0,
      viewers: connected,
      maxViewers: this.config.maxViewers,
      bitrate: snap?.state === 'live' ? this.meter.bitsPerSecond(now) : 0,
      keyframeRequests: this.keyframeRequests,
    }
  }

  /** The source process id (for tests and the benchmark). */
  get sourcePid(): number | undefined { return this.source?.pid }

  open(session: ChannelSession): ChannelConnection {
    this.sessions.add(session)
    session.send({ type: 'camera.status', ...this.status() })
    return {
      receive: (msg) => this.receive(session, msg),
      close: () => {
        this.sessions.delete(session)
        for (const v of [...this.viewers.values()]) if (v.session === session) this.dropViewer(v, null)
      },
    }
  }

  private receive(session: ChannelSession, msg: ChannelMessage): void {
    switch (msg.type) {
      case 'camera.watch': this.watch(session); return
      case 'camera.answer': this.answer(session, msg); return
      case 'camera.candidate': this.candidate(session, msg); return
      case 'camera.leave': {
        const v = this.viewerOf(session, msg)
        if (v) this.dropViewer(v, null)
        return
      }
      default:
        this.log.warn({ type: msg.type, user: session.user }, 'camera: unknown message ignored')
        session.send({ type: 'camera.error', message: `unknown message type "${msg.type}"` })
    }
  }

  private watch(session: ChannelSession): void {
    const webrtc = this.webrtc
    if (!this.config.enabled || !webrtc) {
      session.send({ type: 'camera.error', message: this.unavailable ?? 'the camera is off (camera.enabled is false)' })
      return
    }
    // One viewer per browser connection: a second watch replaces the first (a page reload, a retry).
    for (const v of [...this.viewers.values()]) if (v.session === session) this.dropViewer(v, null)
    if (this.viewers.size >= this.config.maxViewers) {
      this.log.warn({ user: session.user, maxViewers: this.config.maxViewers }, 'camera: viewer refused, camera.maxViewers reached')
      session.send({ type: 'camera.error', message: `too many viewers (camera.maxViewers is ${this.config.maxViewers})` })
      return
    }
    const id = randomBytes(6).toString('hex')
    const iceServers = toBrowserIceServers(this.config.iceServers)
    const peer = new webrtc.ViewerPeer(`viewer-${id}`, {
      iceServers: toLibIceServers(this.config.iceServers),
      ...(this.config.bindAddress ? { bindAddress: this.config.bindAddress } : {}),
      ssrc: SSRC, payloadType: PAYLOAD_TYPE,
    }, {
      offer: (sdp) => session.send({ type: 'camera.offer', viewer: id, sdp, iceServers }),
      candidate: (candidate, mid) => session.send({ type: 'camera.candidate', viewer: id, candidate, mid }),
      state: (state) => this.peerState(id, state),
      rtcp: (packet) => {
        const fb = rtcpFeedback(packet)
        if (fb.pli || fb.fir) this.keyframeRequests += fb.pli + fb.fir
      },
    })
    const viewer: Viewer = { id, session, peer, connected: false, waitingKeyframe: true }
    this.viewers.set(id, viewer)
    this.log.info({ viewer: id, user: session.user, viewers: this.viewers.size }, 'camera viewer joining')
    try {
      peer.start()
    } catch (err) {
      this.dropViewer(viewer, `cannot create the WebRTC peer: ${(err as Error).message}`)
    }
  }

  private answer(session: ChannelSession, msg: ChannelMessage): void {
    const v = this.viewerOf(session, msg)
    if (!v) return
    const problem = checkAnswer(msg.sdp as string, PAYLOAD_TYPE)
    if (problem) { this.dropViewer(v, problem); return }
    try {
      v.peer.setAnswer(msg.sdp as string)
    } catch (err) {
      this.dropViewer(v, `bad SDP answer: ${(err as Error).message}`)
    }
  }

  private candidate(session: ChannelSession, msg: ChannelMessage): void {
    const v = this.viewerOf(session, msg)
    if (!v) return
    if (msg.candidate === '' || msg.candidate === null || msg.candidate === undefined) return // end of candidates
    const c = normaliseCandidate(msg.candidate)
    if (!c) {
      this.log.warn({ viewer: v.id, candidate: String(msg.candidate).slice(0, 200) }, 'camera: malformed ICE candidate ignored')
      return
    }
    try {
      v.peer.addCandidate(c, typeof msg.mid === 'string' ? msg.mid : 'video')
    } catch (err) {
      // e.g. an mDNS (.local) candidate libdatachannel cannot resolve: the browser's checks still reach us.
      this.log.debug({ viewer: v.id, err: (err as Error).message }, 'camera: remote candidate not usable')
    }
  }

  /** The viewer named in `msg`, if it belongs to this session; tells the browser otherwise. */
  private viewerOf(session: ChannelSession, msg: ChannelMessage): Viewer | null {
    const v = typeof msg.viewer === 'string' ? this.viewers.get(msg.viewer) : undefined
    if (v && v.session === session) return v
    this.log.warn({ type: msg.type, user: session.user }, 'camera: message for an unknown viewer ignored')
    session.send({ type: 'camera.error', ...(typeof msg.viewer === 'string' ? { viewer: msg.viewer } : {}), message: `no such viewer for ${msg.type}` })
    return null
  }

  private peerState(id: string, state: string): void {
    const v = this.viewers.get(id)
    if (!v) return
    if (state === 'connected' && !v.connected) {
      v.connected = true
      this.log.info({ viewer: id, viewers: this.status().viewers }, 'camera viewer connected')
      this.broadcastStatus()
    } else if (state === 'failed' || state === 'closed') {
      this.dropViewer(v, state === 'failed' ? 'the WebRTC connection failed (no ICE path: configure camera.iceServers for remote viewers)' : null)
    }
  }

  private dropViewer(v: Viewer, error: string | null): void {
    if (!this.viewers.delete(v.id)) return
    v.peer.close()
    if (error) {
      this.log.warn({ viewer: v.id, err: error }, 'camera viewer dropped')
      v.session.send({ type: 'camera.error', viewer: v.id, message: error })
    } else this.log.info({ viewer: v.id }, 'camera viewer left')
    this.broadcastStatus()
  }

  private forward(buf: Buffer, h: RtpHeader | null, now: number): void {
    if (!h) {
      if (!this.notRtpLogged) {
        this.notRtpLogged = true
        this.log.warn({ bytes: buf.length, port: this.config.rtpPort }, 'camera: a datagram that is not RTP was dropped (the source must send RTP, e.g. ffmpeg -f rtp)')
      }
      return
    }
    this.meter.add(buf.length, now)
    if (buf.length > MAX_RTP_BYTES && !this.bigPacketLogged) {
      this.bigPacketLogged = true
      this.log.warn({ bytes: buf.length, max: MAX_RTP_BYTES }, 'camera: the source sends large RTP packets that may not fit the path MTU once encrypted (or relayed by TURN): configure a packet size of 1200 (ffmpeg: -pkt_size 1200)')
    }
    if (this.viewers.size === 0) return
    const keyframe = startsKeyframe(buf.subarray(h.payloadOffset, h.payloadOffset + h.payloadLength))
    this.rewriter.rewrite(buf, h, now)
    for (const v of this.viewers.values()) {
      if (!v.peer.isOpen) continue
      if (v.waitingKeyframe) {
        if (!keyframe) continue
        v.waitingKeyframe = false
      }
      v.peer.send(buf)
    }
  }

  private broadcastStatus(): void {
    if (this.sessions.size === 0) return
    const msg = { type: 'camera.status', ...this.status() }
    for (const s of this.sessions) s.send(msg)
  }
}
