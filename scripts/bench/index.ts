/**
 * edgeway benchmark: `npm run bench [-- <section> ...]` (default: all sections).
 * Prints aligned tables to stdout, progress to stderr, and writes the raw
 * results to bench-results/bench-<timestamp>.json. It measures, it does not assert.
 *
 * Sections are modules implementing BenchSection (lib/section.ts); add a new
 * one (amqp, serial, dashboard, ...) by appending it to SECTIONS.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installSignalCleanup, killAllNow } from './lib/children.ts';
import type { BenchContext, BenchSection } from './lib/section.ts';
import { renderTable } from './lib/table.ts';
import { mqttSection } from './mqtt/section.ts';
import { amqpSection } from './amqp/section.ts';
import { amqpClusterSection } from './amqp/cluster.ts';
import { serialSection } from './serial/section.ts';
import { xmppSection } from './xmpp/section.ts';
import { dashboardSection } from './dashboard/section.ts';
import { cameraSection } from './camera/section.ts';
import { historySection } from './history/section.ts';
import { fleetSection } from './fleet/section.ts';
import { devicePageSection } from './devicepage/section.ts';

const SECTIONS: BenchSection[] = [mqttSection, amqpSection, amqpClusterSection, serialSection, dashboardSection, xmppSection, cameraSection, historySection, devicePageSection, fleetSection];

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function usage(): string {
  return [
    'usage: npm run bench [-- <section> ...]',
    'sections:',
    ...SECTIONS.map((s) => `  ${s.id.padEnd(10)} ${s.description}`),
    'env (mqtt): BENCH_SECONDS=8 BENCH_WARMUP_SECONDS=2 BENCH_CONNECTIONS=100 BENCH_WINDOW=32',
    '            BENCH_PAYLOAD_BYTES=100 BENCH_GENERATORS=1 BENCH_IDLE_CLIENTS=1000 BENCH_SETTLE_MS=1000 BENCH_IDLE_SETTLED_MS=10000',
    '            BENCH_START_TIMEOUT_MS=30000 BENCH_TARGETS=gateway,aedes,mosquitto,aedes-node',
    '            BENCH_MOSQUITTO=/usr/sbin/mosquitto BENCH_MOSQUITTO_NODELAY=0',
    '            BENCH_FIXED_RATES=100,1000,10000 (empty: none) BENCH_FIXED_MIN_SAMPLES=5000 BENCH_FIXED_MAX_SECONDS=30',
    '            BENCH_FSYNC_SAMPLES=2000 (4 KiB append + fdatasync probe; 0: none)',
    'env (amqp): BENCH_AMQP_MESSAGES=100000 BENCH_AMQP_WINDOW=500 BENCH_AMQP_BACKLOG=1000000 BENCH_AMQP_LIVE_SECONDS=8 BENCH_AMQP_LIVE_WARMUP_SECONDS=2',
    '            BENCH_AMQP_DRAIN_LIVE=1000 (readings/s of live ingest during the drain)',
    'env (amqp-cluster): BENCH_AMQP_MESSAGES BENCH_AMQP_WINDOW as above, BENCH_AMQP_CLUSTER_MESSAGES=50000 BENCH_AMQP_CLUSTER_RATE=1000',
    'env (serial): BENCH_SERIAL_SECONDS=10 BENCH_SERIAL_WINDOW=4 (the firmware ack window) BENCH_SERIAL_SYNC=FULL|NORMAL',
    'env (xmpp): BENCH_XMPP_MESSAGES=5000 BENCH_XMPP_WINDOW=200 BENCH_XMPP_BACKLOG=5000 BENCH_XMPP_DROPS=20',
    'env (camera): BENCH_CAMERA_SECONDS=10 BENCH_CAMERA_VIEWERS=0,1,3 BENCH_CAMERA_BITRATE=4M (empty: bare test pattern)',
    'env (dashboard): BENCH_DASH_DEVICES=100 BENCH_DASH_WARMUP_SECONDS=20 BENCH_DASH_SECONDS=15 BENCH_DASH_LOADS=5',
    'env (history): BENCH_HISTORY_RATES=1000,10000 BENCH_HISTORY_SECONDS=8 BENCH_HISTORY_CONNECTIONS=100 BENCH_HISTORY_LOADS=3',
  ].join('\n');
}

async function main(): Promise<number> {
  const args = process.argv.slice(2).filter((a) => a !== '--');
  if (args.includes('-h') || args.includes('--help')) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const unknown = args.filter((a) => !SECTIONS.some((s) => s.id === a));
  if (unknown.length > 0) {
    process.stderr.write(`unknown section(s): ${unknown.join(', ')}\n${usage()}\n`);
    return 2;
  }
  const selected = args.length === 0 ? SECTIONS : SECTIONS.filter((s) => args.includes(s.id));

  installSignalCleanup();
  const ctx: BenchContext = {
    repoRoot,
    log: (m) => process.stderr.write(`${m}\n`),
  };
  const cpus = os.cpus();
  const env = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    cpu: `${cpus[0]?.model ?? 'unknown'} x ${cpus.length}`,
    memGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
  };
  process.stdout.write(`edgeway bench  ${env.date}  node ${env.node}  ${env.cpu}  ${env.memGiB} GiB\n\n`);

  const out: Record<string, unknown> = {};
  let failed = false;
  const t0 = performance.now();
  for (const section of selected) {
    const s0 = performance.now();
    try {
      const report = await section.run(ctx);
      for (const t of report.tables) process.stdout.write(`${renderTable(t)}\n\n`);
      for (const n of report.notes) process.stdout.write(`! ${n}\n`);
      if (report.notes.length > 0) process.stdout.write('\n');
      out[section.id] = { durationS: (performance.now() - s0) / 1000, notes: report.notes, ...(report.data as object) };
    } catch (e) {
      failed = true;
      const msg = e instanceof Error ? (e.stack ?? e.message) : String(e);
      process.stdout.write(`section ${section.id} FAILED: ${msg}\n\n`);
      out[section.id] = { error: msg };
    }
  }

  const dir = path.join(repoRoot, 'bench-results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `bench-${env.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify({ env, sections: out }, null, 2)}\n`);
  process.stdout.write(`results: ${path.relative(process.cwd(), file)}  (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  return failed ? 1 : 0;
}

main()
  .then((code) => {
    killAllNow();
    process.exit(code);
  })
  .catch((e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    killAllNow();
    process.exit(1);
  });
