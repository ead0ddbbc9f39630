/**
 * Section `history`: what the history store (gateway/history/) costs the gateway, and how fast its charts open.
 *   - the gateway child process with history off and on, the load generator's QoS1 readings (two numeric metrics
 *     each) at BENCH_HISTORY_RATES fixed rates and once saturated: acked msgs/s, p99, process CPU%; the history
 *     write cost as extra CPU% of one core per 1,000 readings/s (target: throughput and p99 within 5% of "off")
 *   - time to first render of a 30-day chart of 10 metrics of 1-minute rollups: a history.db made beforehand,
 *     the dashboard in Chromium, click "30 d" -> the chart drawn (BENCH_HISTORY_LOADS fresh pages, median)
 */
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt, type Table } from '../lib/table.ts';
import { startCpuWindow } from '../lib/proc-metrics.ts';
import { runLoad, type LoadResult } from '../loadgen/index.ts';
import { startGatewayProc, addDevice } from '../../../test/helpers/gateway.ts';
import { launchBrowser } from '../../../test/helpers/browser.ts';
import { tempDir } from '../../../test/helpers/net.ts';
import { HistoryStore } from '../../../gateway/history/store.ts';

interface Run { mode: 'off' | 'on'; rate: number | null; acked: number; p99: number; p50: number; cpuPct: number | undefined; points?: number }

const rates = (): number[] => (process.env.BENCH_HISTORY_RATES ?? '1000,10000').split(',').filter(Boolean).map(Number);
const median = (xs: number[]): number | undefined => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : undefined; };

async function loadRuns(ctx: BenchContext, mode: 'off' | 'on', seconds: number, connections: number): Promise<Run[]> {
  const g = await startGatewayProc({ log: { level: 'info' }, mqtt: { openBroker: true, ws: { enabled: false } }, history: { enabled: mode === 'on' } });
  const out: Run[] = [];
  try {
    for (const rate of [...rates(), null]) {
      ctx.log(`history ${mode}: ${rate === null ? 'saturated' : `${fmt.int(rate)} msgs/s`} for ${seconds} s`);
      let cpu: ReturnType<typeof startCpuWindow> | undefined;
      let cpuPct: number | undefined;
      const r: LoadResult = await runLoad({
        host: '127.0.0.1', port: g.mqttPort, connections, clientIdPrefix: `h${mode}-${rate ?? 'max'}-`, topicTemplate: 'devices/{clientId}/telemetry',
        window: 32, payloadBytes: 100, keepalive: 60, generators: 1, totalRate: rate, warmupMs: 2000, measureMs: seconds * 1000,
      }, { onMeasureStart: () => (cpu = startCpuWindow(g.proc.pid!)), onMeasureEnd: () => (cpuPct = cpu?.stop()) });
      out.push({ mode, rate, acked: r.ackedPerSec, p99: r.latencyMs.p99, p50: r.latencyMs.p50, cpuPct });
    }
    if (mode === 'on') out[out.length - 1]!.points = await g.metric('edgeway_history_points_total');
  } finally { await g.cleanup(); }
  return out;
}

/** A data dir whose history.db holds 30 days of one point a minute for 10 metrics of device `dev-30d`. */
function seedHistory(dataDir: string, metrics: number): { points: number } {
  mkdirSync(dataDir, { recursive: true });
  const s = new HistoryStore({ file: path.join(dataDir, 'history.db'), rawHours: 48, rollupDays: 90, maxBytes: 1024 * 1024 * 1024, maxMetricsPerDevice: 64, maxSeries: 1000 });
  s.open();
  const now = Date.now();
  const start = now - 30 * 86400_000;
  let n = 0;
  for (let t = start; t <= now; t += 60_000) {
    const m: Record<string, number> = {};
    for (let i = 0; i < metrics; i++) m[`m${i}`] = Math.round((20 + i * 5 + 3 * Math.sin(t / 3.6e6 + i)) * 100) / 100;
    s.ingest('dev-30d', t, JSON.stringify(m));
    n += metrics;
    if (s.pending > 50_000) s.commit();
  }
  s.close();
  return { points: n };
}

async function firstRender(ctx: BenchContext, loads: number): Promise<{ ms: number[]; apiMs: number | undefined; points: number; seeded: number }> {
  const { dir, cleanup } = tempDir('bench-history-');
  try {
    const dataDir = path.join(dir, 'data');
    const seeded = seedHistory(dataDir, 10).points;
    const g = await startGatewayProc({ log: { level: 'info' }, mqtt: { openBroker: true } }, { dataDir });
    const browser = await launchBrowser();
    try {
      await addDevice(g, 'dev-30d');
      const url = `http://127.0.0.1:${g.httpPort}/`;
      const t0 = performance.now();
      const apiRes = await fetch(`${url}api/history/dev-30d/m0?from=${Date.now() - 30 * 86400_000}&to=${Date.now()}&points=1000`);
      await apiRes.text();
      const apiMs = performance.now() - t0;
      const ms: number[] = [];
      let points = 0;
      for (let i = 0; i < loads; i++) {
        const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
        const page = await context.newPage();
        await page.goto(url);
        await page.waitForSelector('[data-device="dev-30d"]', { timeout: 30000 });
        const start = await page.evaluate(() => performance.now());
        await page.click('#ranges button[data-range="30d"]');
        await page.waitForSelector('[data-device="dev-30d"] .hchart[data-state="ready"]', { timeout: 60000 });
        const r = await page.evaluate(() => new Promise<{ at: number; points: number }>((resolve) => requestAnimationFrame(() => resolve({ at: performance.now(), points: Number(document.querySelector('.hchart')?.getAttribute('data-points')) }))));
        ms.push(r.at - start);
        points = r.points;
        await context.close();
      }
      return { ms, apiMs, points, seeded };
    } finally { await browser.close(); await g.cleanup(); }
  } finally { cleanup(); }
}

export const historySection: BenchSection = {
  id: 'history',
  description: 'history store: write CPU per 1,000 readings/s, mqtt throughput/p99 with it off and on, 30-day chart first render',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const seconds = envNumber('BENCH_HISTORY_SECONDS', 8);
    const connections = envNumber('BENCH_HISTORY_CONNECTIONS', 100);
    const loads = envNumber('BENCH_HISTORY_LOADS', 3);
    const off = await loadRuns(ctx, 'off', seconds, connections);
    const on = await loadRuns(ctx, 'on', seconds, connections);
    const notes: string[] = [];
    const rows = off.map((o, i) => {
      const n = on[i]!;
      const extra = n.cpuPct !== undefined && o.cpuPct !== undefined ? n.cpuPct - o.cpuPct : undefined;
      const per1k = extra !== undefined ? extra / (n.acked / 1000) : undefined;
      const dAcked = (n.acked - o.acked) / o.acked * 100;
      const dP99 = (n.p99 - o.p99) / o.p99 * 100;
      if (Math.abs(dAcked) > 5 && o.rate === null) notes.push(`saturated throughput with history ${dAcked.toFixed(1)}% vs off: outside the 5% target`);
      if (dP99 > 5) notes.push(`p99 at ${o.rate === null ? 'saturation' : fmt.int(o.rate) + ' msgs/s'} ${dP99.toFixed(1)}% above "off": outside the 5% target (${fmt.ms(o.p99)} -> ${fmt.ms(n.p99)} ms)`);
      return [o.rate === null ? 'saturated' : fmt.int(o.rate), fmt.int(o.acked), fmt.int(n.acked), `${dAcked >= 0 ? '+' : ''}${dAcked.toFixed(1)}%`,
        fmt.ms(o.p99), fmt.ms(n.p99), `${dP99 >= 0 ? '+' : ''}${dP99.toFixed(1)}%`, fmt.fixed(o.cpuPct, 0), fmt.fixed(n.cpuPct, 0), fmt.fixed(per1k, 2)];
    });
    const write: Table = {
      title: `history write cost: gateway (FULL outbox, ${connections} QoS1 clients, 100-byte payloads with 2 numeric metrics), history off vs on, ${seconds} s each`,
      columns: [{ header: 'offered' }, { header: 'acked/s off' }, { header: 'acked/s on' }, { header: 'Δ' }, { header: 'p99 ms off' }, { header: 'p99 ms on' }, { header: 'Δ' },
        { header: 'CPU% off' }, { header: 'CPU% on' }, { header: 'CPU% per 1k/s' }],
      rows,
      notes: ['CPU%: the whole gateway process, 100 = one core; "per 1k/s": (on - off) / (acked readings/s / 1000)', `history points written in the "on" runs: ${fmt.int(on.at(-1)?.points)}`],
    };
    ctx.log(`history: first render of 30 days x 10 metrics (${loads} loads)`);
    const fr = await firstRender(ctx, loads);
    const render: Table = {
      title: 'history chart first render: 30 days of 1-minute rollups for 10 metrics (432,000 rollup rows), Chromium, click "30 d" -> drawn',
      columns: [{ header: 'loads' }, { header: 'median ms' }, { header: 'max ms' }, { header: 'points drawn' }, { header: 'one metric API ms' }],
      rows: [[String(fr.ms.length), fmt.ms(median(fr.ms)), fmt.ms(Math.max(...fr.ms)), fmt.int(fr.points), fmt.ms(fr.apiMs)]],
      notes: [`seeded ${fmt.int(fr.seeded)} points; the chart asks each metric for ~1 point per pixel (rollups merged into wider buckets by the worker)`],
    };
    return { tables: [write, render], notes, data: { off, on, firstRender: fr } };
  },
};
