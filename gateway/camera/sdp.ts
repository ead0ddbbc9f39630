// Pure signalling helpers: ICE server settings in libdatachannel's and the browser's form, and answer checks.
import type { IceServerConfig } from './config.ts'

/** libdatachannel's IceServer (node-datachannel's type, restated so this file stays free of the native import). */
export interface LibIceServer {
  hostname: string
  port: number
  username?: string
  password?: string
  relayType?: 'TurnUdp' | 'TurnTcp' | 'TurnTls'
}

/** The browser's RTCIceServer. */
export interface BrowserIceServer { urls: string[]; username?: string; credential?: string }

/** One entry per URL; the config schema has already checked the URL shape. */
export function toLibIceServers(servers: IceServerConfig[]): LibIceServer[] {
  const out: LibIceServer[] = []
  for (const s of servers) {
    for (const url of s.urls) {
      const m = /^(stun|turns?):([^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/.exec(url)
      if (!m) throw new Error(`invalid ICE server URL "${url}"`)
      const [, scheme, hostname, port, transport] = m as unknown as [string, 'stun' | 'turn' | 'turns', string, string | undefined, string | undefined]
      const entry: LibIceServer = { hostname, port: port ? Number(port) : scheme === 'turns' ? 5349 : 3478 }
      if (scheme !== 'stun') {
        entry.relayType = scheme === 'turns' ? 'TurnTls' : transport === 'tcp' ? 'TurnTcp' : 'TurnUdp'
        if (s.username !== undefined) entry.username = s.username
        if (s.credential !== undefined) entry.password = s.credential
      }
      out.push(entry)
    }
  }
  return out
}

export function toBrowserIceServers(servers: IceServerConfig[]): BrowserIceServer[] {
  return servers.map((s) => ({
    urls: s.urls,
    ...(s.username !== undefined ? { username: s.username } : {}),
    ...(s.credential !== undefined ? { credential: s.credential } : {}),
  }))
}

/** H.264 as every WebRTC browser decodes it: Constrained Baseline 3.1, fragmented NAL units (FU-A) allowed. */
export const H264_FMTP = 'profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1'

/**
 * Checks a viewer's SDP answer to our sendonly H.264 offer: null when it will receive the stream, else why not.
 * An answerer must keep the offer's payload type, so the stream is sent with `payloadType` unchanged.
 */
export function checkAnswer(sdp: string, payloadType: number): string | null {
  if (typeof sdp !== 'string' || !sdp.startsWith('v=0')) return 'not an SDP answer'
  const lines = sdp.split(/\r?\n/)
  const m = lines.find((l) => l.startsWith('m=video '))
  if (!m) return 'the answer has no video section'
  const fields = m.split(' ')
  if (fields[1] === '0') return 'the browser rejected the video (port 0): it cannot receive H.264'
  if (!fields.slice(3).includes(String(payloadType)) || !lines.some((l) => l.toLowerCase().startsWith(`a=rtpmap:${payloadType} h264/90000`))) {
    return `the browser did not accept H.264 (payload type ${payloadType}, ${H264_FMTP})`
  }
  if (lines.some((l) => l === 'a=inactive' || l === 'a=sendonly')) return 'the browser answered without receiving video'
  return null
}

/** A trickled ICE candidate line as the browser sends it ("candidate:..." or "a=candidate:..."); null when malformed. */
export function normaliseCandidate(candidate: unknown): string | null {
  if (typeof candidate !== 'string') return null
  const c = candidate.startsWith('a=') ? candidate.slice(2) : candidate
  return /^candidate:\S+ \d+ (udp|tcp) \d+ \S+ \d+ typ \w+/i.test(c) ? c : null
}
