/**
 * Section `devicepage`: time to first render of a device page whose device has 30 days of 1-minute history for 10
 * metrics (published over MQTT with past `ts`, so the history store holds real rollups), the time until all 10
 * 30-day charts are drawn, and GET /api/devices/<id>; medians of BENCH_DEVICEPAGE_LOADS page loads in Chromium.
 */
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt, type Table } from '../lib/table.ts';
import { startGatewayProc, addDevice } from '../../../test/helpers/gateway.ts';
import { connect, end } from '../../../test/helpers/mqtt.ts';
import { launchBrowser } from '../../../test/helpers/browser.ts';
import { waitFor } from '../../../test/helpers/net.ts';

const METRICS = Array.from({ length: 10 }, (_, i) => `m${i}`);
const DAYS = 30;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export const devicePageSection: BenchSection = {
  id: 'devicepage',
  description: 'device page with 30 days of 1-minute rollups for 10 metrics: first render, all charts drawn (Chromium)',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const loads = Math.max(1, envNumber('BENCH_DEVICEPAGE_LOADS', 3));
    const g = await startGatewayProc({ history: { rawHours: 48, rollupDays: 90 } });
    const browser = await launchBrowser();
    try {
      const secret = await addDevice(g, 'bench-1');
      const c = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'bench-1', username: 'bench-1', password: secret });
      const now = Date.now();
      const n = DAYS * 1440;
      ctx.log(`devicepage: publishing ${fmt.int(n)} readings x ${METRICS.length} metrics with past timestamps`);
      for (let i = 0; i < n; i += 200) {
        await Promise.all(Array.from({ length: Math.min(200, n - i) }, (_, k) => {
          const minute = i + k;
          const m: Record<string, number> = { ts: now - (n - minute) * 60_000 };
          for (const [j, name] of METRICS.entries()) m[name] = Math.sin(minute / (60 + j * 7)) * 10 + j;
          return c.publishAsync('devices/bench-1/telemetry', JSON.stringify(m), { qos: 1 });
        }));
      }
      await end(c);
      await waitFor('history filled', async () => {
        const r = await g.http(`/api/history/bench-1/m0?from=${now - DAYS * 86400_000}&to=${now - (DAYS - 1) * 86400_000}&points=100`);
        return r.status === 200 && (JSON.parse(r.body) as { t: number[] }).t.length > 50;
      }, 120000, 500);
      const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
      const rounds: { first: number; charts: number; api: number }[] = [];
      for (let r = 0; r < loads; r++) {
        const t0 = performance.now();
        const api = await g.http('/api/devices/bench-1');
        const apiMs = performance.now() - t0;
        if (api.status !== 200) throw new Error(`GET /api/devices/bench-1 answered ${api.status}`);
        await page.goto(`http://127.0.0.1:${g.httpPort}/device/bench-1?range=30d`);
        await page.waitForSelector('body[data-ready="1"]', { timeout: 60000 });
        const first = await page.evaluate(() => (window as unknown as { __edgewayDevice: { firstRenderMs: number } }).__edgewayDevice.firstRenderMs);
        await page.waitForFunction((count) => {
          const cs = [...document.querySelectorAll('[data-metric-chart] .hchart')];
          return cs.length === count && cs.every((el) => {
            const e = el as HTMLElement;
            return e.dataset.state === 'ready' && e.dataset.tier === 'rollup' && Number(e.dataset.points) > 0;
          });
        }, METRICS.length, { timeout: 120000, polling: 50 });
        rounds.push({ first, charts: await page.evaluate(() => performance.now()), api: apiMs });
      }
      const points = await page.locator('[data-metric-chart="m0"] .hchart').getAttribute('data-points');
      const table: Table = {
        title: `Device page: ${METRICS.length} metrics x ${DAYS} days of 1-minute rollups, range 30 d (median of ${loads} loads)`,
        columns: [{ header: 'first render' }, { header: 'all charts drawn' }, { header: 'GET /api/devices/<id>' }, { header: 'points per chart' }],
        rows: [[fmt.ms(median(rounds.map((x) => x.first))), fmt.ms(median(rounds.map((x) => x.charts))), fmt.ms(median(rounds.map((x) => x.api))), points ?? 'n/a']],
        notes: ['times from navigation start; "all charts drawn": every chart ready with rollup points'],
      };
      return { tables: [table], notes: [], data: { rounds, points } };
    } finally {
      await browser.close();
      await g.cleanup();
    }
  },
};
