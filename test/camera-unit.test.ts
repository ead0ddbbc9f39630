// The camera's pure parts, tested with bytes and strings: RTP parsing and rewriting, H.264 keyframe detection,
// RTCP feedback, the bitrate meter, ICE server mapping, answer checks, the source state machine, the config section.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { RateMeter, RtpRewriter, parseRtp, rtcpFeedback, startsKeyframe } from '../gateway/camera/rtp.ts'
import { checkAnswer, normaliseCandidate, toBrowserIceServers, toLibIceServers } from '../gateway/camera/sdp.ts'
import { SourceState } from '../gateway/camera/state.ts'
import { cameraHealthReasons } from '../gateway/camera/health.ts'
import { expandCommand } from '../gateway/camera/source.ts'
import { configSchema } from '../app/config/schema.ts'

function rtp(o: { pt?: number; marker?: boolean; seq: number; ts: number; ssrc: number; payload: number[]; csrc?: number; ext?: number[]; pad?: number }): Buffer {
  const csrc = o.csrc ?? 0
  const ext = o.ext ? Buffer.concat([Buffer.of(0xbe, 0xde, 0, o.ext.length / 4), Buffer.from(o.ext)]) : Buffer.alloc(0)
  const h = Buffer.alloc(12 + csrc * 4)
  h[0] = 0x80 | (o.ext ? 0x10 : 0) | (o.pad ? 0x20 : 0) | csrc
  h[1] = (o.marker ? 0x80 : 0) | (o.pt ?? 96)
  h.writeUInt16BE(o.seq, 2)
  h.writeUInt32BE(o.ts, 4)
  h.writeUInt32BE(o.ssrc, 8)
  const pad = o.pad ? Buffer.concat([Buffer.alloc(o.pad - 1), Buffer.of(o.pad)]) : Buffer.alloc(0)
  return Buffer.concat([h, ext, Buffer.from(o.payload), pad])
}

test('parseRtp reads the header, skips CSRCs and extensions, strips padding, refuses RTCP and junk', () => {
  const p = parseRtp(rtp({ pt: 96, marker: true, seq: 65535, ts: 0xfffffff0, ssrc: 0xdeadbeef, payload: [0x65, 1, 2] }))!
  assert.deepEqual(p, { marker: true, payloadType: 96, seq: 65535, timestamp: 0xfffffff0, ssrc: 0xdeadbeef, payloadOffset: 12, payloadLength: 3 })
  const q = parseRtp(rtp({ seq: 1, ts: 2, ssrc: 3, payload: [0x41, 9], csrc: 2, ext: [1, 2, 3, 4], pad: 4 }))!
  assert.equal(q.payloadOffset, 12 + 8 + 8)
  assert.equal(q.payloadLength, 2)
  assert.equal(parseRtp(Buffer.of(0x80, 96, 0, 1)), null, 'truncated')
  assert.equal(parseRtp(Buffer.alloc(20)), null, 'version 0')
  assert.equal(parseRtp(Buffer.from('hello world, not rtp at all')), null)
  assert.equal(parseRtp(Buffer.of(0x80, 200, 0, 6, ...new Array(24).fill(0))), null, 'an RTCP sender report')
  const badExt = rtp({ seq: 1, ts: 2, ssrc: 3, payload: [], ext: [0, 0, 0, 0] })
  badExt.writeUInt16BE(50, 14) // extension length beyond the packet
  assert.equal(parseRtp(badExt), null)
})

test('startsKeyframe: SPS, IDR, STAP-A with SPS, FU-A start of an IDR; not P slices or continuation fragments', () => {
  assert.equal(startsKeyframe(Buffer.of(0x67, 0x42, 0xe0, 0x1f)), true, 'SPS')
  assert.equal(startsKeyframe(Buffer.of(0x65, 0x88)), true, 'IDR slice')
  assert.equal(startsKeyframe(Buffer.of(0x41, 0x9a)), false, 'P slice')
  assert.equal(startsKeyframe(Buffer.of(0x68, 0xce)), false, 'PPS alone')
  assert.equal(startsKeyframe(Buffer.of(0x7c, 0x85, 0x88)), true, 'FU-A, start bit, IDR')
  assert.equal(startsKeyframe(Buffer.of(0x7c, 0x05, 0x88)), false, 'FU-A continuation of an IDR')
  assert.equal(startsKeyframe(Buffer.of(0x7c, 0x81, 0x9a)), false, 'FU-A start of a P slice')
  assert.equal(startsKeyframe(Buffer.of(0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce)), true, 'STAP-A [SPS, PPS]')
  assert.equal(startsKeyframe(Buffer.of(0x78, 0, 2, 0x68, 0xce, 0, 2, 0x41, 0x9a)), false, 'STAP-A [PPS, P]')
  assert.equal(startsKeyframe(Buffer.of(0x78, 0, 9, 0x67)), false, 'STAP-A with a size past the end')
  assert.equal(startsKeyframe(Buffer.alloc(0)), false)
})

test('RtpRewriter: our SSRC and payload type, marker kept; numbering continues across a source restart', () => {
  const rw = new RtpRewriter(0x11223344, 102)
  const a = rtp({ pt: 96, marker: true, seq: 65534, ts: 1000, ssrc: 0xaaaa, payload: [0x65] })
  rw.rewrite(a, parseRtp(a)!, 10_000)
  const pa = parseRtp(a)!
  assert.deepEqual([pa.payloadType, pa.marker, pa.ssrc, pa.seq, pa.timestamp], [102, true, 0x11223344, 65534, 1000], 'first source keeps its numbering')
  const b = rtp({ pt: 96, seq: 65535, ts: 4000, ssrc: 0xaaaa, payload: [0x41] })
  rw.rewrite(b, parseRtp(b)!, 10_033)
  assert.deepEqual([parseRtp(b)!.seq, parseRtp(b)!.timestamp, parseRtp(b)!.marker], [65535, 4000, false])
  // The source restarts 2 s later with a new SSRC, sequence and timestamp base.
  const c = rtp({ pt: 96, seq: 17, ts: 0xfffffff0, ssrc: 0xbbbb, payload: [0x67] })
  rw.rewrite(c, parseRtp(c)!, 12_033)
  const pc = parseRtp(c)!
  assert.equal(pc.seq, 0, 'sequence continues (wrapping) after 65535')
  assert.equal(pc.timestamp, 4000 + 2000 * 90, 'timestamp advances by the 2 s that passed, on the 90 kHz clock')
  assert.equal(pc.ssrc, 0x11223344)
  const d = rtp({ seq: 18, ts: (0xfffffff0 + 3000) >>> 0, ssrc: 0xbbbb, payload: [0x41] })
  rw.rewrite(d, parseRtp(d)!, 12_066)
  assert.deepEqual([parseRtp(d)!.seq, parseRtp(d)!.timestamp], [1, 4000 + 2000 * 90 + 3000], 'and stays continuous within the new source')
  // A restart that keeps the SSRC (some pipelines fix it) re-anchors when told.
  rw.newSource()
  const e = rtp({ seq: 500, ts: 77, ssrc: 0xbbbb, payload: [0x67] })
  rw.rewrite(e, parseRtp(e)!, 13_066)
  assert.equal(parseRtp(e)!.seq, 2)
})

test('rtcpFeedback counts PLI, FIR and NACK in a compound packet', () => {
  const rr = Buffer.of(0x81, 201, 0, 7, ...new Array(28).fill(0))
  const pli = Buffer.of(0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2)
  const fir = Buffer.of(0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0)
  const nack = Buffer.of(0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 0)
  assert.deepEqual(rtcpFeedback(Buffer.concat([rr, pli, fir, nack, pli])), { pli: 2, fir: 1, nack: 1 })
  assert.deepEqual(rtcpFeedback(Buffer.of(0x81, 206, 0, 9, 0)), { pli: 0, fir: 0, nack: 0 }, 'a length past the end counts nothing')
})

test('RateMeter reports bits per second over the last full seconds', () => {
  const m = new RateMeter(3)
  const t0 = 1_000_000
  for (let i = 0; i < 10; i++) m.add(1250, t0 + i * 100) // 12.5 kB in second 0
  for (let i = 0; i < 10; i++) m.add(2500, t0 + 1000 + i * 100) // 25 kB in second 1
  assert.equal(m.bitsPerSecond(t0 + 2500), ((12500 + 25000) * 8) / 2)
  assert.equal(m.bitsPerSecond(t0 + 10_000), 0, 'nothing for a while: zero')
})

test('ICE servers: URLs to libdatachannel entries (ports, relay types, credentials) and to the browser form', () => {
  const servers = [
    { urls: ['stun:stun.example.org', 'stun:stun2.example.org:19302'] },
    { urls: ['turn:turn.example.org?transport=tcp', 'turns:turn.example.org:443', 'turn:10.0.0.1:3479'], username: 'u', credential: 'p' },
  ]
  assert.deepEqual(toLibIceServers(servers), [
    { hostname: 'stun.example.org', port: 3478 },
    { hostname: 'stun2.example.org', port: 19302 },
    { hostname: 'turn.example.org', port: 3478, relayType: 'TurnTcp', username: 'u', password: 'p' },
    { hostname: 'turn.example.org', port: 443, relayType: 'TurnTls', username: 'u', password: 'p' },
    { hostname: '10.0.0.1', port: 3479, relayType: 'TurnUdp', username: 'u', password: 'p' },
  ])
  assert.deepEqual(toBrowserIceServers(servers)[1], { urls: servers[1]!.urls, username: 'u', credential: 'p' })
})

const ANSWER = [
  'v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'm=video 9 UDP/TLS/RTP/SAVPF 96', 'c=IN IP4 0.0.0.0', 'a=mid:video', 'a=recvonly',
  'a=rtpmap:96 H264/90000', 'a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f', '',
].join('\r\n')

test('checkAnswer accepts an H.264 receiver and explains refusals', () => {
  assert.equal(checkAnswer(ANSWER, 96), null)
  assert.match(checkAnswer('hello', 96)!, /not an SDP answer/)
  assert.match(checkAnswer(ANSWER.replace('m=video 9', 'm=video 0'), 96)!, /rejected the video/)
  assert.match(checkAnswer(ANSWER.replace('H264/90000', 'VP8/90000'), 96)!, /did not accept H.264/)
  assert.match(checkAnswer(ANSWER.replace('a=recvonly', 'a=inactive'), 96)!, /without receiving/)
  assert.match(checkAnswer(ANSWER.replace(/m=video[^\r]*\r\n/, ''), 96)!, /no video section/)
  assert.match(checkAnswer(42 as unknown as string, 96)!, /not an SDP answer/)
})

test('normaliseCandidate accepts browser candidate lines, refuses junk', () => {
  const c = 'candidate:3033137694 1 udp 2113937151 910ac544-acd9-42cf-a9bc-1af9e02e7ec8.local 60423 typ host generation 0'
  assert.equal(normaliseCandidate(c), c)
  assert.equal(normaliseCandidate('a=' + c), c)
  assert.equal(normaliseCandidate('candidate:x'), null)
  assert.equal(normaliseCandidate({ candidate: c }), null)
})

test('SourceState: starting -> live -> dead (exit) -> live; stalls; off', () => {
  const s = new SourceState(5000, true, 0)
  assert.equal(s.state, 'starting')
  s.spawned(0)
  assert.equal(s.checkStall(4000), false)
  assert.equal(s.packet(100), true, 'first packet: live')
  assert.equal(s.packet(200), false)
  assert.equal(s.state, 'live')
  assert.equal(s.exited(300, 'the camera source exited (code 1): boom'), true)
  assert.deepEqual(s.snapshot(), { state: 'dead', since: 300, reason: 'the camera source exited (code 1): boom', restarts: 0 })
  s.spawned(1300)
  assert.equal(s.snapshot().restarts, 1)
  assert.equal(s.state, 'dead', 'a restarted source is dead until it sends')
  assert.equal(s.checkStall(6299), false)
  assert.equal(s.checkStall(6300), true, 'nothing within stallMs of the restart: kill it')
  assert.match(s.snapshot().reason!, /no RTP within 5 s of starting/)
  assert.equal(s.exited(6301, null), false)
  assert.match(s.snapshot().reason!, /within 5 s of starting/, 'our own kill keeps the stall as the reason')
  s.spawned(7000)
  assert.equal(s.packet(7100), true)
  assert.equal(s.checkStall(12_099), false)
  assert.equal(s.checkStall(12_100), true, 'a live source that goes quiet is dead')
  assert.equal(s.state, 'dead')
  assert.match(s.snapshot().reason!, /no RTP from the source for 5 s/)
  s.stopped(13_000)
  assert.equal(s.state, 'off')
  assert.equal(new SourceState(5000, false, 0).state, 'off')
})

test('camera health: degraded reason only when enabled and dead', () => {
  const base = { enabled: true, state: 'dead' as const, since: new Date(10_000).toISOString(), reason: 'x', restarts: 2, viewers: 0, maxViewers: 4, bitrate: 0, keyframeRequests: 0 }
  assert.deepEqual(cameraHealthReasons(base, 25_000), ['camera source dead for 15 s (x; restarted 2 times)'])
  assert.deepEqual(cameraHealthReasons({ ...base, state: 'live' }, 25_000), [])
  assert.deepEqual(cameraHealthReasons({ ...base, enabled: false, state: 'off' }, 25_000), [])
})

test('camera config: off by default, {rtpPort} required, ICE URLs and TURN credentials checked', () => {
  const c = configSchema.parse({}).camera
  assert.equal(c.enabled, false)
  assert.ok(c.command.some((a) => a.includes('{rtpPort}')))
  assert.deepEqual(expandCommand(['x', 'rtp://127.0.0.1:{rtpPort}?pkt_size=1200'], 5006), ['x', 'rtp://127.0.0.1:5006?pkt_size=1200'])
  const err = (camera: unknown): string => {
    const r = configSchema.safeParse({ camera })
    assert.equal(r.success, false)
    return JSON.stringify(r.error!.issues)
  }
  assert.match(err({ command: ['ffmpeg', '-i', 'x'] }), /must contain \{rtpPort\}/)
  assert.match(err({ iceServers: [{ urls: 'http://x' }] }), /stun:host/)
  assert.match(err({ iceServers: [{ urls: 'turn:turn.example.org' }] }), /TURN server needs username and credential/)
  assert.match(err({ restartMinMs: 5000, restartMaxMs: 1000 }), /restartMaxMs must be >= restartMinMs/)
  assert.match(err({ bogus: 1 }), /bogus/)
  assert.deepEqual(configSchema.parse({ camera: { command: ['ffmpeg', '-g', 30, '{rtpPort}'] } }).camera.command, ['ffmpeg', '-g', '30', '{rtpPort}'], 'numbers in the argv become strings')
  const ok = configSchema.parse({ camera: { enabled: true, iceServers: [{ urls: 'stun:stun.example.org:3478' }] } }).camera
  assert.deepEqual(ok.iceServers[0]!.urls, ['stun:stun.example.org:3478'], 'a single URL string becomes a list')
})

test('doctor camera check: off, missing program, missing or unreadable device, ok', async () => {
  const { checkCamera } = await import('../gateway/camera/doctor.ts')
  const { mkdtempSync, writeFileSync, chmodSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-camdoc-'))
  const tool = join(dir, 'ffmpeg')
  writeFileSync(tool, '#!/bin/sh\n')
  chmodSync(tool, 0o755)
  const cam = (command: string[]) => configSchema.parse({ camera: { enabled: true, command } }).camera
  assert.equal(checkCamera(configSchema.parse({}).camera, dir).level, 'ok')
  const missing = checkCamera(cam(['ffmpeg', '{rtpPort}']), '/nonexistent')
  assert.equal(missing.level, 'fail')
  assert.match(missing.detail, /"ffmpeg" is not installed/)
  assert.equal(missing.fix, 'apt-get install -y ffmpeg')
  assert.equal(checkCamera(cam(['ffmpeg', '{rtpPort}']), dir).level, 'ok', 'found on PATH')
  const noDev = checkCamera(cam([tool, '-i', '/dev/video-nonexistent', '{rtpPort}']), '')
  assert.match(noDev.detail, /\/dev\/video-nonexistent \(camera.command\) is not present/)
  assert.equal(noDev.ok, false)
})
