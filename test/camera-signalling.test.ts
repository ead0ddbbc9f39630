// The camera channel's signalling with a scripted session (no browser): the offer, trickled candidates, and every
// bad input (junk answer, unknown viewer, unknown type, too many viewers, camera off) answered with a clear error.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { CameraService } from '../gateway/camera/service.ts'
import { cameraSchema } from '../gateway/camera/config.ts'
import type { ChannelMessage } from '../gateway/dashboard/channel.ts'
import { freePort, waitFor } from './helpers/net.ts'

type Msg = ChannelMessage & { viewer?: string; sdp?: string; message?: string; candidate?: string; iceServers?: unknown[] }

function session(user = 'admin'): { user: string; got: Msg[]; send(m: object): void } {
  const got: Msg[] = []
  return { user, got, send: (m) => { got.push(m as Msg) } }
}

const logs: { level: number; msg: string }[] = []
const log = pino({ level: 'debug' }, { write: (s: string) => { logs.push(JSON.parse(s) as { level: number; msg: string }) } })

test('camera signalling: offer and candidates; junk answers, unknown viewers and types, too many viewers', async (t) => {
  // A source that never sends: the signalling does not need video.
  const config = cameraSchema.parse({
    enabled: true, rtpPort: await freePort(), bindAddress: '127.0.0.1', maxViewers: 1,
    command: [process.execPath, '-e', 'setTimeout(() => {}, 60000)', '{rtpPort}'],
    iceServers: [{ urls: 'stun:stun.example.org:3478' }, { urls: ['turn:turn.example.org?transport=tcp'], username: 'u', credential: 'p' }],
  })
  const camera = new CameraService(config, log)
  t.after(() => camera.stop())
  await camera.start()
  const a = session()
  const conn = camera.open(a)
  assert.equal(a.got[0]!.type, 'camera.status')
  assert.equal(a.got[0]!.state, 'starting')
  conn.receive({ type: 'camera.watch' })
  const offer = await waitFor('offer', () => a.got.find((m) => m.type === 'camera.offer'))
  assert.match(offer.sdp!, /m=video \d+ UDP\/TLS\/RTP\/SAVPF 96/)
  assert.match(offer.sdp!, /a=sendonly/)
  assert.match(offer.sdp!, /a=rtpmap:96 H264\/90000/)
  assert.match(offer.sdp!, /a=fmtp:96 profile-level-id=42e01f;packetization-mode=1/)
  assert.deepEqual(offer.iceServers, [{ urls: ['stun:stun.example.org:3478'] }, { urls: ['turn:turn.example.org?transport=tcp'], username: 'u', credential: 'p' }], 'the browser gets the ICE servers too')
  const cand = await waitFor('a host candidate', () => a.got.find((m) => m.type === 'camera.candidate' && / 127\.0\.0\.1 /.test(String(m.candidate))))
  assert.equal(cand.viewer, offer.viewer)

  // A second browser while the only viewer slot is taken.
  const b = session()
  const connB = camera.open(b)
  connB.receive({ type: 'camera.watch' })
  assert.match(b.got.find((m) => m.type === 'camera.error')!.message!, /too many viewers \(camera.maxViewers is 1\)/)
  // It cannot touch the first browser's viewer either.
  connB.receive({ type: 'camera.answer', viewer: offer.viewer, sdp: 'v=0' })
  assert.match(b.got.at(-1)!.message!, /no such viewer for camera.answer/)
  connB.receive({ type: 'camera.zap' })
  assert.match(b.got.at(-1)!.message!, /unknown message type "camera.zap"/)

  // A junk answer drops the viewer with the reason; the slot is free again.
  conn.receive({ type: 'camera.answer', viewer: offer.viewer, sdp: 'this is not SDP' })
  const err = a.got.find((m) => m.type === 'camera.error')!
  assert.equal(err.viewer, offer.viewer)
  assert.match(err.message!, /not an SDP answer/)
  conn.receive({ type: 'camera.candidate', viewer: offer.viewer, candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', mid: 'video' })
  assert.match(a.got.at(-1)!.message!, /no such viewer for camera.candidate/)
  // A browser that cannot do H.264 answers without it.
  b.got.length = 0
  connB.receive({ type: 'camera.watch' })
  const offerB = await waitFor('offer for b', () => b.got.find((m) => m.type === 'camera.offer'))
  const vp8Only = offer.sdp!.replace(/H264\/90000/g, 'VP8/90000')
  connB.receive({ type: 'camera.answer', viewer: offerB.viewer, sdp: vp8Only })
  assert.match(b.got.find((m) => m.type === 'camera.error')!.message!, /did not accept H.264/)
  // A malformed candidate is logged and ignored (the viewer stays).
  b.got.length = 0
  connB.receive({ type: 'camera.watch' })
  const offerB2 = await waitFor('offer for b again', () => b.got.find((m) => m.type === 'camera.offer'))
  connB.receive({ type: 'camera.candidate', viewer: offerB2.viewer, candidate: 'rubbish' })
  assert.ok(logs.some((l) => l.msg === 'camera: malformed ICE candidate ignored'))
  assert.equal(b.got.filter((m) => m.type === 'camera.error').length, 0)
  // Closing the browser frees its slot.
  connB.close()
  conn.receive({ type: 'camera.watch' })
  await waitFor('a gets a viewer again', () => a.got.filter((m) => m.type === 'camera.offer').length === 2)
  conn.close()
  assert.ok(logs.some((l) => l.msg === 'camera: unknown message ignored'))
  assert.ok(logs.some((l) => l.msg === 'camera: viewer refused, camera.maxViewers reached'))
})

test('camera off: status "off" with the reason, watch refused, nothing started', async () => {
  const camera = new CameraService(cameraSchema.parse({}), log)
  await camera.start()
  const s = session()
  const conn = camera.open(s)
  assert.equal(s.got[0]!.state, 'off')
  assert.match(String(s.got[0]!.reason), /camera.enabled is false/)
  conn.receive({ type: 'camera.watch' })
  assert.match(s.got.at(-1)!.message!, /the camera is off/)
  assert.equal(camera.sourcePid, undefined)
  conn.close()
  await camera.stop()
})
