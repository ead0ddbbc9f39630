/**
 * Section `camera`: H.264 passthrough cost and frame latency. ffmpeg encodes the 720p30 test pattern (the camera's
 * supervised source command, through a timestamping relay: relay.ts) -> the gateway (child process, camera enabled,
 * dashboard without a password: loopback only) -> N headless Chromium pages of the dashboard (its camera panel).
 *   - gateway CPU: the whole gateway process (Node + libdatachannel threads: SRTP and send), % of one core
 *   - frames decoded per second in each viewer (getStats framesDecoded)
 *   - latency source -> browser: the last packet of a frame leaving the source (relay) -> the frame received
 *     (requestVideoFrameCallback receiveTime) and -> presented (presentationTime); same machine, same clock
 */
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Browser, Page } from 'playwright-core';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt } from '../lib/table.ts';
import { makeTempDir, removeTempDir } from '../lib/children.ts';
import { startCpuWindow, readRssBytes } from '../lib/proc-metrics.ts';
import { freePort, waitFor } from '../../../test/helpers/net.ts';
import { startGatewayProc } from '../../../test/helpers/gateway.ts';
import { launchBrowser } from '../../../test/helpers/browser.ts';
import { ffmpegSource, videoState } from '../../../test/helpers/camera.ts';

interface FrameTimes { rtp: number; recv: number; pres: number }

interface Run {
  viewers: number;
  gatewayCpu: number | undefined;
  gatewayRssBytes: number | undefined;
  fpsMin: number | undefined;
  fpsMax: number | undefined;
  bitrate: number | undefined;
  recv: { p50?: number; p95?: number; n: number };
  pres: { p50?: number; p95?: number; n: number };
}

function pct(values: number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Records every shown frame's RTP timestamp with its receive and presentation times (epoch ms). */
async function recordFrames(page: Page): Promise<void> {
  // A string: tsx would wrap named functions in a helper the page does not have.
  await page.evaluate(`(() => {
    window.frameLog = []
    const v = document.querySelector('.camera-panel').camera.video
    const step = (_now, m) => {
      if (m.rtpTimestamp !== undefined && m.receiveTime !== undefined) {
        window.frameLog.push({ rtp: m.rtpTimestamp, recv: performance.timeOrigin + m.receiveTime, pres: performance.timeOrigin + m.presentationTime })
      }
      v.requestVideoFrameCallback(step)
    }
    v.requestVideoFrameCallback(step)
  })()`);
}

async function oneRun(_ctx: BenchContext, browser: Browser, viewers: number, seconds: number, bitrate: string): Promise<Run> {
  const dir = makeTempDir('edgeway-bench-camera');
  const timesFile = path.join(dir, 'times.txt');
  const relay = path.join(path.dirname(new URL(import.meta.url).pathname), 'relay.ts');
  const rtpPort = await freePort();
  const source = ffmpegSource('1280x720', 30, bitrate || undefined).map((a) => a.replace('{rtpPort}', '{relayPort}'));
  const config = {
    enabled: true, rtpPort, bindAddress: '127.0.0.1', maxViewers: Math.max(1, viewers),
    // The gateway runs in a temp dir: the tsx loader by its full URL.
    command: [process.execPath, '--import', import.meta.resolve('tsx'), relay, timesFile, '{rtpPort}', '--', ...source],
  };
  const g = await startGatewayProc({ camera: config });
  const pid = g.proc.pid!;
  const pages: Page[] = [];
  try {
    for (let i = 0; i < viewers; i++) {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      await page.goto(`http://127.0.0.1:${g.httpPort}/`);
      pages.push(page);
    }
    for (const p of pages) await waitFor('viewer decoding', async () => (await videoState(p)).framesDecoded > 10, 30_000, 200);
    if (viewers === 0) await waitFor('source sending', () => existsSync(timesFile), 20_000, 200);
    for (const p of pages) await recordFrames(p);
    await sleep(2000); // warm-up
    const f0 = await Promise.all(pages.map((p) => videoState(p).then((s) => s.framesDecoded)));
    const cpu = startCpuWindow(pid);
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const gatewayCpu = cpu.stop();
    const elapsed = (performance.now() - t0) / 1000;
    const gatewayRssBytes = readRssBytes(pid);
    const f1 = await Promise.all(pages.map((p) => videoState(p).then((s) => s.framesDecoded)));
    const fps = f1.map((f, i) => (f - f0[i]!) / elapsed);
    const bitrate = pages.length ? await pages[0]!.evaluate(`document.querySelector('.camera-panel').camera.status?.bitrate ?? 0`) as number : undefined;
    // Latency: match each shown frame with the moment its last packet left the source.
    await sleep(300);
    const sent = new Map<number, number>();
    for (const line of readFileSync(timesFile, 'utf8').split('\n')) {
      const [ts, at] = line.split(' ');
      if (ts && at) sent.set(Number(ts), Number(at));
    }
    const recv: number[] = [];
    const pres: number[] = [];
    for (const p of pages) {
      const log = await p.evaluate(() => (window as unknown as { frameLog: FrameTimes[] }).frameLog);
      for (const f of log) {
        const s = sent.get(f.rtp);
        if (s === undefined) continue;
        recv.push(f.recv - s);
        pres.push(f.pres - s);
      }
    }
    return {
      viewers, gatewayCpu, gatewayRssBytes, bitrate,
      fpsMin: fps.length ? Math.min(...fps) : undefined, fpsMax: fps.length ? Math.max(...fps) : undefined,
      recv: { p50: pct(recv, 50), p95: pct(recv, 95), n: recv.length },
      pres: { p50: pct(pres, 50), p95: pct(pres, 95), n: pres.length },
    };
  } finally {
    for (const p of pages) await p.close().catch(() => undefined);
    await g.stop();
    await g.cleanup();
    removeTempDir(dir);
  }
}

export const cameraSection: BenchSection = {
  id: 'camera',
  description: 'WebRTC camera: gateway CPU for 720p30 H.264 passthrough to N Chromium viewers, frame latency',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const seconds = envNumber('BENCH_CAMERA_SECONDS', 10);
    // A real camera sends a few Mbit/s; the bare test pattern ~0.5. Empty: the bare pattern.
    const bitrate = process.env.BENCH_CAMERA_BITRATE ?? '4M';
    const counts = (process.env.BENCH_CAMERA_VIEWERS ?? '0,1,3').split(',').map((s) => Number(s.trim())).filter((n) => Number.isInteger(n) && n >= 0);
    const browser = await launchBrowser();
    const runs: Run[] = [];
    try {
      for (const n of counts) {
        ctx.log(`camera: 720p30 passthrough to ${n} viewer(s), ${seconds} s`);
        runs.push(await oneRun(ctx, browser, n, seconds, bitrate));
      }
    } finally {
      await browser.close();
    }
    const ms = (v: { p50?: number; p95?: number; n: number }): string => (v.n ? `${fmt.ms(v.p50)} / ${fmt.ms(v.p95)}` : 'n/a');
    return {
      tables: [{
        title: `Camera: 720p30 H.264 (ffmpeg testsrc${bitrate ? ` + noise, capped at ${bitrate}bit/s` : ''}, baseline, GOP 30) passthrough, ${seconds} s per row`,
        columns: [
          { header: 'viewers' }, { header: 'gateway CPU %' }, { header: 'gateway RSS MiB' }, { header: 'source Mbit/s' },
          { header: 'decoded fps (min..max)' }, { header: 'latency to receive p50/p95 ms' }, { header: 'to present p50/p95 ms' }, { header: 'frames' },
        ],
        rows: runs.map((r) => [
          String(r.viewers), fmt.fixed(r.gatewayCpu, 1), fmt.mib(r.gatewayRssBytes), r.bitrate === undefined ? 'n/a' : fmt.fixed(r.bitrate / 1e6, 2),
          r.fpsMin === undefined ? 'n/a' : `${fmt.fixed(r.fpsMin, 1)}..${fmt.fixed(r.fpsMax, 1)}`, ms(r.recv), ms(r.pres), String(r.pres.n),
        ]),
        notes: [
          'gateway CPU: the whole gateway process (Node + libdatachannel SRTP threads; dashboard open in every viewer), 100 = one core; no transcoding',
          'latency: last RTP packet of a frame leaving ffmpeg -> that frame received / presented in Chromium (rVFC), same clock',
        ],
      }],
      notes: [],
      data: { seconds, bitrate, runs },
    };
  },
};
