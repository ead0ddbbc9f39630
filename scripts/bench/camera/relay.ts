/**
 * The camera bench's source command: runs ffmpeg (argv after `--`, `{relayPort}` replaced) into a UDP port of its
 * own and relays every packet to the camera's RTP port, noting when the last packet of each frame (RTP marker bit)
 * left the source: `<rtp timestamp> <epoch ms>` lines in <timesFile>. The browser reports the same RTP timestamp
 * for each frame it shows (requestVideoFrameCallback), which gives the frame latency source -> browser.
 *   node --import tsx relay.ts <timesFile> <rtpPort> -- ffmpeg ... rtp://127.0.0.1:{relayPort}
 */
import { createSocket } from 'node:dgram'
import { spawn } from 'node:child_process'
import { appendFileSync } from 'node:fs'

const [timesFile, rtpPortArg, sep, ...ffmpeg] = process.argv.slice(2)
if (!timesFile || !rtpPortArg || sep !== '--' || ffmpeg.length === 0) {
  process.stderr.write('usage: relay.ts <timesFile> <rtpPort> -- <command with {relayPort}>\n')
  process.exit(2)
}
const rtpPort = Number(rtpPortArg)
const sock = createSocket('udp4')
let lines: string[] = []
sock.on('message', (buf) => {
  const now = performance.timeOrigin + performance.now()
  if (buf.length >= 12 && buf[1]! & 0x80 && (buf[1]! < 200 || buf[1]! > 207)) lines.push(`${buf.readUInt32BE(4)} ${now.toFixed(2)}`)
  sock.send(buf, rtpPort, '127.0.0.1')
})
const flush = setInterval(() => { if (lines.length) { appendFileSync(timesFile, lines.join('\n') + '\n'); lines = [] } }, 200)
sock.bind(0, '127.0.0.1', () => {
  const port = sock.address().port
  const [cmd, ...args] = ffmpeg.map((a) => a.replaceAll('{relayPort}', String(port))) as [string, ...string[]]
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] })
  const stop = (): void => { child.kill('SIGTERM') }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  child.on('exit', (code) => { clearInterval(flush); sock.close(); process.exit(code ?? 1) })
})
