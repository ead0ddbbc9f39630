// Camera test peers: ffmpeg as the RTP source (started by the gateway as its configured command) and Chromium viewers.
import { existsSync } from 'node:fs'
import type { Page } from 'playwright-core'
import { requireBinary } from './mosquitto.ts'

export const FFMPEG = '/usr/bin/ffmpeg'

export function requireCameraPeers(): void {
  requireBinary(FFMPEG, 'ffmpeg')
  requireBinary('/usr/bin/chromium', 'chromium')
}

/** The test pattern as an H.264 RTP source: a keyframe every second, baseline yuv420p (what browsers decode). */
export function ffmpegSource(size = '640x360', rate = 30, bitrate?: string): string[] {
  // testsrc compresses to almost nothing: for a camera-like bitrate, add noise and cap the rate.
  const busy = bitrate ? ['-vf', 'noise=alls=12:allf=t', '-b:v', bitrate, '-maxrate', bitrate, '-bufsize', bitrate] : []
  return [
    FFMPEG, '-hide_banner', '-loglevel', 'warning', '-re', '-f', 'lavfi', '-i', `testsrc=size=${size}:rate=${rate}`, ...busy,
    '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-profile:v', 'baseline', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', String(rate),
    '-f', 'rtp', '-pkt_size', '1200', 'rtp://127.0.0.1:{rtpPort}',
  ]
}

export const hasFfmpeg = (): boolean => existsSync(FFMPEG)

export interface VideoState { framesDecoded: number; playing: boolean; width: number; height: number; state: string | null; overlay: string; figures: string }

/** What the camera panel on `page` shows (through the object mountCamera returned, kept on the panel element). */
export async function videoState(page: Page): Promise<VideoState> {
  return page.evaluate(async () => {
    type Cam = { peer: RTCPeerConnection | null; video: HTMLVideoElement; element: HTMLElement }
    const panel = document.querySelector('.camera-panel') as (HTMLElement & { camera?: Cam }) | null
    const cam = panel?.camera
    if (!cam) return { framesDecoded: 0, playing: false, width: 0, height: 0, state: null, overlay: 'no camera panel', figures: '' }
    let framesDecoded = 0
    if (cam.peer) {
      const stats = await cam.peer.getStats()
      stats.forEach((r: { type: string; kind?: string; framesDecoded?: number }) => { if (r.type === 'inbound-rtp' && r.kind === 'video') framesDecoded = r.framesDecoded ?? 0 })
    }
    const v = cam.video
    const overlay = cam.element.querySelector('.camera-overlay') as HTMLElement
    return {
      framesDecoded,
      playing: !v.paused && v.readyState >= 2,
      width: v.videoWidth, height: v.videoHeight,
      state: cam.element.dataset.state ?? null,
      overlay: overlay.style.display === 'none' ? '' : overlay.textContent ?? '',
      figures: (cam.element.querySelector('.camera-figures') as HTMLElement).textContent ?? '',
    }
  })
}
