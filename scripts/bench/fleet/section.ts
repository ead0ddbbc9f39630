/**
 * Section `fleet`: what `edgeway fleet` (fleet/) keeps up with. Written, not yet run (see the report that added it).
 *   - ingest: N simulated gateways (BENCH_FLEET_GATEWAYS, default 50,500) on one rhea connection, each sending a
 *     birth and then status heartbeats (schema 1, built by bridges/amqp/lifecycle.ts) to its own routing key, as fast
 *     as the broker grants credit, for BENCH_FLEET_SECONDS (default 10): messages/s the fleet applied (its `accepted`
 *     counter, read over its WebSocket) against messages/s sent
 *   - the dashboard's time to first render with N gateways listed: Chromium opens the page (loopback, no password),
 *     navigation start -> the table drawn (fleet.js sets data-first-render), median of BENCH_FLEET_LOADS (default 5)
 */
import path from 'node:path';
import { spawn } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import { stringify } from 'yaml';
import rhea from 'rhea';
import WebSocket from 'ws';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt, type Table } from '../lib/table.ts';
import { startRabbitMq } from '../../../test/helpers/rabbitmq.ts';
import { connectAmqp } from '../../../test/helpers/amqp.ts';
import { launchBrowser } from '../../../test/helpers/browser.ts';
import { freePort, tempDir } from '../../../test/helpers/net.ts';
import { EDGEWAY_BIN, ROOT } from '../../../test/helpers/gateway.ts';
import { birthMessage, heartbeatMessage, type LifecycleContext } from '../../../bridges/amqp/lifecycle.ts';

interface Run { gateways: number; sentPerSec: number; appliedPerSec: number; refused: number; firstRenderMs: number | undefined }

const sizes = (): number[] => (process.env.BENCH_FLEET_GATEWAYS ?? '50,500').split(',').filter(Boolean).map(Number);
const median = (xs: number[]): number | undefined => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : undefined; };

/** The fleet's counters, from the `summary`/`fleet` messages of its WebSocket (loopback: no login). */
async function counters(port: number): Promise<{ accepted: number; refused: Record<string, number>; gateways: number }> {
  return await new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { host: `127.0.0.1:${port}` } });
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; counters?: { accepted: number; refused: Record<string, number>; gateways: number } };
      if ((m.type === 'fleet' || m.type === 'summary') && m.counters) { ws.close(); resolve(m.counters); }
    });
    ws.on('error', reject);
  });
}

async function runOne(ctx: BenchContext, rmqPort: number, n: number, seconds: number, loads: number): Promise<Run> {
  const { dir, cleanup } = tempDir('edgeway-bench-fleet-');
  const port = await freePort();
  const file = path.join(dir, 'fleet.yaml');
  mkdirSync(path.join(dir, 'data'), { recursive: true });
  writeFileSync(file, stringify({ log: { level: 'warn' }, fleet: { amqp: { host: '127.0.0.1', port: rmqPort, username: 'guest', password: 'guest' }, statusAddress: '/exchange/amq.topic/status.*', dataDir: path.join(dir, 'data'), http: { host: '127.0.0.1', port }, maxGateways: Math.max(2000, n) } }));
  const fleet = spawn(process.execPath, [EDGEWAY_BIN, 'fleet', '--config', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const conn = await connectAmqp(rmqPort);
  try {
    await new Promise((r) => setTimeout(r, 1500));
    const ctxs: LifecycleContext[] = Array.from({ length: n }, (_, i) => ({ gateway: `bench-gw-${i}`, address: `/exchange/amq.topic/status.bench-gw-${i}`, bootId: `boot-${i}`, heartbeatSeconds: 60 }));
    const senders = ctxs.map((c) => conn.open_sender({ target: { address: c.address } }));
    await Promise.all(senders.map((s) => new Promise((r) => s.once('sendable', r))));
    const send = (i: number, seq: number): boolean => {
      const s = senders[i]!;
      if (!s.sendable()) return false;
      const m = seq === 0 ? birthMessage(ctxs[i]!, { version: 'bench', configDigest: '0000000000000000' }, [], Date.now(), seq) : heartbeatMessage(ctxs[i]!, { version: 'bench', backlog: { depth: seq, bytes: 0, oldestAgeSeconds: 0, deadLettered: 0 }, upstreams: [] }, [], Date.now(), seq);
      s.send({ ...m, body: rhea.message.data_section(m.body) });
      return true;
    };
    // Discovery: the first message of each gateway only makes the fleet consume it on its own address.
    for (let i = 0; i < n; i++) send(i, 0);
    await new Promise((r) => setTimeout(r, 2000));
    for (let i = 0; i < n; i++) send(i, 1);
    for (let t = 0; t < 60 && (await counters(port)).gateways < n; t++) await new Promise((r) => setTimeout(r, 500));
    ctx.log(`fleet: ${n} gateways known; sending for ${seconds} s`);
    const before = (await counters(port)).accepted;
    let sent = 0, seq = 2;
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      let any = false;
      for (let i = 0; i < n; i++) if (send(i, seq)) { sent++; any = true; }
      seq++;
      await new Promise((r) => setImmediate(r));
      if (!any) await new Promise((r) => setTimeout(r, 1));
    }
    await new Promise((r) => setTimeout(r, 2000));
    const after = await counters(port);
    const browser = await launchBrowser();
    const renders: number[] = [];
    try {
      for (let i = 0; i < loads; i++) {
        const page = await browser.newPage();
        await page.goto(`http://127.0.0.1:${port}/`);
        await page.waitForFunction(() => document.documentElement.dataset.firstRender !== undefined, undefined, { timeout: 60000 });
        renders.push(Number(await page.evaluate(() => document.documentElement.dataset.firstRender)));
        await page.close();
      }
    } finally { await browser.close(); }
    const refused = Object.values(after.refused).reduce((a, b) => a + b, 0);
    return { gateways: n, sentPerSec: sent / seconds, appliedPerSec: (after.accepted - before) / seconds, refused, firstRenderMs: median(renders) };
  } finally {
    conn.close();
    fleet.kill('SIGKILL');
    cleanup();
  }
}

export const fleetSection: BenchSection = {
  id: 'fleet',
  description: 'edgeway fleet: status ingest from N simulated gateways (msgs/s) and the fleet page\'s time to first render',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const seconds = envNumber('BENCH_FLEET_SECONDS', 10);
    const loads = envNumber('BENCH_FLEET_LOADS', 5);
    const rmq = await startRabbitMq();
    const runs: Run[] = [];
    try {
      for (const n of sizes()) { ctx.log(`fleet: ${n} gateways`); runs.push(await runOne(ctx, rmq.port, n, seconds, loads)); }
    } finally { await rmq.cleanup(); }
    const table: Table = {
      title: 'edgeway fleet: ingest and first render',
      columns: ['gateways', 'sent msgs/s', 'applied msgs/s', 'refused', 'first render ms (median)'].map((header) => ({ header, align: 'right' as const })),
      rows: runs.map((r) => [fmt.int(r.gateways), fmt.int(r.sentPerSec), fmt.int(r.appliedPerSec), fmt.int(r.refused), r.firstRenderMs === undefined ? '-' : fmt.int(r.firstRenderMs)]),
    };
    return { tables: [table], notes: ['each status message is delivered twice by RabbitMQ (the discovery link status.* and the gateway\'s own link); only the own link\'s copy is applied'], data: runs };
  },
};
