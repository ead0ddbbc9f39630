// The one file that imports node-datachannel (libdatachannel): one PeerConnection per viewer with a sendonly H.264
// track, fed raw RTP packets. libdatachannel only SRTP-encrypts them: no packetizer, no transcoding.
import ndc, { type PeerConnection, type Track } from 'node-datachannel'
import type { Logger } from 'pino'
import { H264_FMTP, type LibIceServer } from './sdp.ts'

export interface PeerOptions {
  iceServers: LibIceServer[]
  bindAddress?: string
  ssrc: number
  payloadType: number
}

export interface PeerEvents {
  /** The offer to send to the browser (libdatachannel creates it as soon as the track is added). */
  offer(sdp: string): void
  /** A local candidate to trickle to the browser. */
  candidate(candidate: string, mid: string): void
  /** Connection state changes: 'connecting', 'connected', 'disconnected', 'failed', 'closed'. */
  state(state: string): void
  /** RTCP from the browser (receiver reports, PLI, NACK). */
  rtcp(packet: Buffer): void
}

/** Packets kept for retransmission: ~1 s of a 4 Mbit/s stream in 1200-byte packets. */
const NACK_PACKETS = 512

let loggerInstalled = false

/** libdatachannel's own log lines go to pino (warnings and up; `initLogger` needs a callback or it prints itself). */
export function installWebRtcLogger(log: Logger): void {
  if (loggerInstalled) return
  loggerInstalled = true
  ndc.initLogger('Warning', (level, message) => {
    if (level === 'Error' || level === 'Fatal') log.warn({ webrtc: message }, 'libdatachannel error')
    else log.debug({ webrtc: message }, 'libdatachannel')
  })
}

/** Releases libdatachannel's threads; after this, no new peer may be created in this process. */
export function cleanupWebRtc(): void { ndc.cleanup() }

export class ViewerPeer {
  private pc: PeerConnection | null = null
  private track: Track | null = null
  private open = false

  constructor(private readonly name: string, private readonly opts: PeerOptions, private readonly events: PeerEvents) {}

  get isOpen(): boolean { return this.open }

  /** Creates the connection and its track; the offer arrives through `events.offer`. */
  start(): void {
    const pc = new ndc.PeerConnection(this.name, {
      iceServers: this.opts.iceServers,
      ...(this.opts.bindAddress ? { bindAddress: this.opts.bindAddress } : {}),
    })
    this.pc = pc
    pc.onLocalDescription((sdp, type) => { if (type === 'offer') this.events.offer(sdp) })
    pc.onLocalCandidate((candidate, mid) => this.events.candidate(candidate, mid))
    pc.onStateChange((s) => this.events.state(s))
    const video = new ndc.Video('video', 'SendOnly')
    video.addH264Codec(this.opts.payloadType, H264_FMTP)
    video.addSSRC(this.opts.ssrc, 'edgeway-camera', 'edgeway-camera', 'video')
    const track = pc.addTrack(video)
    this.track = track
    // Resends what a viewer reports lost (NACK) from the last packets sent: a lossy Wi-Fi hop costs a retransmit,
    // not a broken picture until the next keyframe.
    track.setMediaHandler(new ndc.RtcpNackResponder(NACK_PACKETS))
    track.onOpen(() => { this.open = true })
    track.onClosed(() => { this.open = false })
    track.onMessage((msg) => this.events.rtcp(msg))
    pc.setLocalDescription()
  }

  /** Throws libdatachannel's error when the SDP is unusable. */
  setAnswer(sdp: string): void { this.pc?.setRemoteDescription(sdp, 'answer') }

  /** Throws when libdatachannel cannot parse the candidate. */
  addCandidate(candidate: string, mid: string): void { this.pc?.addRemoteCandidate(candidate, mid) }

  /** Sends one RTP packet (already rewritten to our SSRC and payload type); false when not sent. */
  send(packet: Buffer): boolean {
    if (!this.open || !this.track) return false
    try { return this.track.sendMessageBinary(packet) } catch { return false }
  }

  bytesSent(): number { return this.pc?.bytesSent() ?? 0 }

  close(): void {
    this.open = false
    try { this.track?.close() } catch { /* already closed */ }
    try { this.pc?.close() } catch { /* already closed */ }
    this.track = null
    this.pc = null
  }
}
