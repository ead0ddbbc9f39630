/**
 * Section `dashboard`: the web dashboard in Debian's Chromium (playwright-core) against the gateway child process,
 * with BENCH_DASH_DEVICES MQTT devices each reporting once a second (three metrics).
 *   - time to first render: navigation start -> the first frame after the snapshot (devices, charts with the
 *     history of the warm-up) is in the DOM; BENCH_DASH_LOADS fresh pages, median and max
 *   - WebSocket traffic of one open page over BENCH_DASH_SECONDS: bytes/s and messages/s
 *   - gateway CPU with no page open vs one page open (the dashboard's own cost)
 */
import mqtt from 'mqtt';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt } from '../lib/table.ts';
import { startCpuWindow, readRssBytes } from '../lib/proc-metrics.ts';
import { startGatewayProc } from '../../../test/helpers/gateway.ts';
import { launchBrowser } from '../../../test/helpers/browser.ts';

interface Devices { stop(): Promise<void>; published: number }

/** `n` devices, each publishing one reading a second, spread evenly over the second. */
async function reportingDevices(url: string, n: number): Promise<Devices> {
  const clients = await Promise.all(Array.from({ length: n }, (_, i) => new Promise<mqtt.MqttClient>((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: `dev-${String(i).padStart(3, '0')}`, reconnectPeriod: 0 });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  })));
  const d: Devices = { published: 0, async stop() { clearInterval(timer); for (const c of clients) c.end(true); } };
  let tick = 0;
  // 10 ticks a second, a tenth of the devices per tick.
  const timer = setInterval(() => {
    const t = tick++;
    for (let i = t % 10; i < clients.length; i += 10) {
      const x = t / 10 + i;
      clients[i]!.publish(`devices/dev-${String(i).padStart(3, '0')}/telemetry`, JSON.stringify({ temperature: +(20 + 3 * Math.sin(x / 7)).toFixed(2), humidity: +(45 + 10 * Math.cos(x / 11)).toFixed(1), battery: 100 - (t % 1000) / 10 }), { qos: 1 });
      d.published++;
    }
  }, 100);
  return d;
}

const median = (xs: number[]): number | undefined => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : undefined; };

export const dashboardSection: BenchSection = {
  id: 'dashboard',
  description: 'dashboard in Chromium: time to first render, WebSocket bytes/s, gateway CPU, 100 devices at 1/s',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const devices = envNumber('BENCH_DASH_DEVICES', 100);
    const warmup = envNumber('BENCH_DASH_WARMUP_SECONDS', 20);
    const seconds = envNumber('BENCH_DASH_SECONDS', 15);
    const loads = envNumber('BENCH_DASH_LOADS', 5);
    const g = await startGatewayProc({ log: { level: 'info' }, mqtt: { openBroker: true } });
    const cleanups: (() => Promise<unknown>)[] = [() => g.cleanup()];
    try {
      ctx.log(`dashboard: ${devices} devices reporting once a second, ${warmup} s warm-up (chart history)`);
      const devs = await reportingDevices(`mqtt://127.0.0.1:${g.mqttPort}`, devices);
      cleanups.push(() => devs.stop());
      await sleep(warmup * 1000);
      const pid = g.proc.pid!;
      const idleCpu = startCpuWindow(pid);
      await sleep(seconds * 1000);
      const cpuNoPage = idleCpu.stop();

      const browser = await launchBrowser();
      cleanups.push(() => browser.close());
      const url = `http://127.0.0.1:${g.httpPort}/`;
      ctx.log(`dashboard: ${loads} fresh page loads`);
      const renders: { firstRenderMs: number; connectedMs: number; snapshotMs: number; snapshotBytes: number; cards: number; points: number }[] = [];
      for (let i = 0; i < loads; i++) {
        const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
        const page = await context.newPage();
        await page.goto(url);
        await page.waitForSelector('body[data-ready="1"]', { timeout: 30000 });
        renders.push(await page.evaluate(() => {
          const s = (window as unknown as { __edgeway: { firstRenderMs: number; connectedAt: number; snapshotAt: number; bytes: number } }).__edgeway;
          const cards = document.querySelectorAll('[data-device]');
          let points = 0;
          for (const c of cards) points += Number((c as HTMLElement).dataset.points ?? 0);
          return { firstRenderMs: s.firstRenderMs, connectedMs: s.connectedAt, snapshotMs: s.snapshotAt, snapshotBytes: s.bytes, cards: cards.length, points };
        }));
        await context.close();
      }

      ctx.log(`dashboard: one page open for ${seconds} s`);
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      await page.goto(url);
      await page.waitForSelector('body[data-ready="1"]', { timeout: 30000 });
      await sleep(2000);
      const read = (): Promise<{ bytes: number; messages: number }> => page.evaluate(() => {
        const s = (window as unknown as { __edgeway: { bytes: number; messages: number } }).__edgeway;
        return { bytes: s.bytes, messages: s.messages };
      });
      const before = await read();
      const published0 = devs.published;
      const cpuWin = startCpuWindow(pid);
      const t0 = performance.now();
      await sleep(seconds * 1000);
      const after = await read();
      const dt = (performance.now() - t0) / 1000;
      const cpuOnePage = cpuWin.stop();
      const readingsPerS = (devs.published - published0) / dt;
      const bytesPerS = (after.bytes - before.bytes) / dt;
      const msgsPerS = (after.messages - before.messages) / dt;
      const rss = readRssBytes(pid);
      // To look at: what 100 devices look like (bench-results/ is gitignored).
      const shot = path.join(ctx.repoRoot, 'bench-results', 'dashboard-100-devices.png');
      mkdirSync(path.dirname(shot), { recursive: true });
      await page.screenshot({ path: shot });

      const fr = renders.map((r) => r.firstRenderMs);
      const tables = [{
        title: `dashboard: ${devices} devices x 1 reading/s (3 metrics), Chromium ${browser.version()}, 1280x900`,
        columns: [{ header: 'measure' }, { header: 'value', align: 'right' as const }, { header: 'note' }],
        rows: [
          ['time to first render, median', `${fmt.ms(median(fr))} ms`, `${loads} fresh loads, max ${fmt.ms(Math.max(...fr))} ms`],
          ['  of which: page + modules + socket open', `${fmt.ms(median(renders.map((r) => r.connectedMs)))} ms`, 'median'],
          ['  of which: until the snapshot arrived', `${fmt.ms(median(renders.map((r) => r.snapshotMs)))} ms`, 'median (then cards and visible charts are built)'],
          ['first snapshot on the socket', `${fmt.int(median(renders.map((r) => r.snapshotBytes)))} B`, `${renders[0]?.cards ?? 0} devices, ${fmt.int(renders[0]?.points)} chart points`],
          ['WebSocket, one page', `${fmt.int(bytesPerS)} B/s`, `${fmt.fixed(msgsPerS, 1)} msgs/s for ${fmt.fixed(readingsPerS, 1)} readings/s`],
          ['WebSocket per reading', `${fmt.int(bytesPerS / readingsPerS)} B`, 'reading + status + presence, averaged'],
          ['gateway CPU, no page', `${fmt.fixed(cpuNoPage, 1)} %`, '100 % = one core'],
          ['gateway CPU, one page open', `${fmt.fixed(cpuOnePage, 1)} %`, `RSS ${fmt.mib(rss)} MiB`],
        ],
      }];
      return { tables, notes: [`screenshot: ${path.relative(process.cwd(), shot)}`], data: { devices, warmup, seconds, renders, bytesPerS, msgsPerS, readingsPerS, cpuNoPage, cpuOnePage, rss } };
    } finally {
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
    }
  },
};
