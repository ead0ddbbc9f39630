// The `camera` YAML section: an optional H.264 RTP source forwarded to WebRTC viewers. Off by default.
import { z } from 'zod'

/**
 * The default source: the test pattern. A real camera replaces it, e.g.
 * `["libcamera-vid", "-t", "0", "--inline", "-g", "30", "-o", "udp://127.0.0.1:{rtpPort}"]` piped through ffmpeg, or
 * `["ffmpeg", "-f", "v4l2", "-i", "/dev/video0", ...same encoder and rtp options...]`.
 * yuv420p + baseline: what every browser decodes (testsrc is RGB, which libx264 would encode as 4:4:4);
 * -g 30: a keyframe every second, so a new viewer sees a picture within a second (ffmpeg cannot answer PLI);
 * -pkt_size 1200: RTP packets that still fit the path MTU after SRTP and TURN overhead.
 */
export const DEFAULT_CAMERA_COMMAND = [
  'ffmpeg', '-hide_banner', '-loglevel', 'warning', '-re', '-f', 'lavfi', '-i', 'testsrc=size=1280x720:rate=30',
  '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-profile:v', 'baseline', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '30',
  '-f', 'rtp', '-pkt_size', '1200', 'rtp://127.0.0.1:{rtpPort}',
]

/** Like the browser's RTCIceServer: `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`, `turns:host[:port]`. */
export const iceServerSchema = z.object({
  urls: z.union([z.string(), z.array(z.string()).min(1)]).transform((u) => (Array.isArray(u) ? u : [u])).pipe(
    z.array(z.string().regex(/^(stun|turns?):[^\s:?]+(:\d{1,5})?(\?transport=(udp|tcp))?$/, 'a stun:host[:port], turn:host[:port][?transport=udp|tcp] or turns:host[:port] URL')),
  ),
  username: z.string().optional(),
  credential: z.string().optional(),
}).strict().superRefine((s, ctx) => {
  if (s.urls.some((u) => u.startsWith('turn')) && (s.username === undefined || s.credential === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['username'], message: 'a TURN server needs username and credential' })
  }
})

export const cameraSchema = z.object({
  enabled: z.boolean().default(false),
  /** The source pipeline as an argv array (no shell). `{rtpPort}` is replaced by `rtpPort`. Must send H.264 RTP there. */
  // Numbers are taken as strings (`-g, 30` in YAML).
  command: z.array(z.union([z.string().min(1), z.number().transform(String)])).min(1).default(DEFAULT_CAMERA_COMMAND)
    .refine((c) => c.some((a) => a.includes('{rtpPort}')), 'the command must contain {rtpPort} (where it sends RTP)'),
  /** Loopback UDP port the source sends RTP (H.264) to. */
  rtpPort: z.number().int().min(1).max(65535).default(5004),
  /** Address the WebRTC peers gather host candidates on (unset: every interface, for LAN viewers). */
  bindAddress: z.string().min(1).optional(),
  /** STUN/TURN servers for viewers outside the LAN; sent to the browsers too. */
  iceServers: z.array(iceServerSchema).default([]),
  maxViewers: z.number().int().min(1).max(64).default(4),
  /** No RTP for this long while the source runs: it counts as dead and is restarted. */
  stallMs: z.number().int().min(500).default(5000),
  restartMinMs: z.number().int().min(10).default(1000),
  restartMaxMs: z.number().int().min(100).default(30000),
}).strict().superRefine((c, ctx) => {
  if (c.restartMaxMs < c.restartMinMs) ctx.addIssue({ code: 'custom', path: ['restartMaxMs'], message: 'restartMaxMs must be >= restartMinMs' })
})

export type CameraConfig = z.infer<typeof cameraSchema>
export type IceServerConfig = z.infer<typeof iceServerSchema>
