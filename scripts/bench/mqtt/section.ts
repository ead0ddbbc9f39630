/**
 * Section `mqtt`: Mosquitto vs bare aedes vs the edgeway gateway, same machine,
 * same run, same load (QoS 1, 100 connections, window 32, ~100-byte JSON to
 * devices/<clientId>/telemetry).
 *
 * Per target, two fresh broker processes:
 *   A. start-up + memory: spawn -> accepting TCP, idle RSS, RSS with N idle clients
 *   B. load: saturating run (msgs/s, ack latency, broker CPU%, peak RSS), then a
 *      rate-limited run at half the gateway's max rate (ack latency)
 * The gateway runs first so its max rate is known for everyone's half-rate run.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt, type Table } from '../lib/table.ts';
import { readRssAnonBytes, readRssBytes, readThreadCount, startCpuWindow, startRssSampler } from '../lib/proc-metrics.ts';
import { holdIdleClients, runLoad, type LoadResult } from '../loadgen/index.ts';
import { gatewayTarget } from './targets/gateway.ts';
import { aedesPlainNodeTarget, aedesTarget } from './targets/aedes.ts';
import { mosquittoTarget } from './targets/mosquitto.ts';
import { TOPIC_TEMPLATE, type MqttTarget, type RunningTarget, type TargetContext } from './targets/types.ts';

const ALL_TARGETS: MqttTarget[] = [gatewayTarget, aedesTarget, mosquittoTarget, aedesPlainNodeTarget];

export interface MqttBenchConfig {
  warmupMs: number;
  measureMs: number;
  connections: number;
  window: number;
  payloadBytes: number;
  generators: number;
  idleClients: number;
  settleMs: number;
  idleSettledMs: number;
  startTimeoutMs: number;
  halfRateFactor: number;
  targets: string[];
}

function readConfig(): MqttBenchConfig {
  const targets = (process.env.BENCH_TARGETS ?? ALL_TARGETS.map((t) => t.id).join(','))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const t of targets) {
    if (!ALL_TARGETS.some((x) => x.id === t)) {
      throw new Error(`BENCH_TARGETS: unknown target "${t}" (known: ${ALL_TARGETS.map((x) => x.id).join(', ')})`);
    }
  }
  const window = envNumber('BENCH_WINDOW', 32);
  if (window < 1 || window > 1024) throw new Error('BENCH_WINDOW must be 1..1024');
  return {
    warmupMs: envNumber('BENCH_WARMUP_SECONDS', 2) * 1000,
    measureMs: envNumber('BENCH_SECONDS', 8) * 1000,
    connections: envNumber('BENCH_CONNECTIONS', 100),
    window,
    payloadBytes: envNumber('BENCH_PAYLOAD_BYTES', 100),
    generators: Math.max(1, envNumber('BENCH_GENERATORS', 1)),
    idleClients: envNumber('BENCH_IDLE_CLIENTS', 1000),
    settleMs: envNumber('BENCH_SETTLE_MS', 1000),
    idleSettledMs: envNumber('BENCH_IDLE_SETTLED_MS', 10_000),
    startTimeoutMs: envNumber('BENCH_START_TIMEOUT_MS', 30_000),
    halfRateFactor: 0.5,
    targets,
  };
}

interface StartupResult {
  spawnToAcceptMs: number[];
  spawnToReadyMs: number[];
  idleRssBytes?: number;
  /** After idleSettledMs: V8's memory reducer has run by then (start-up garbage collected, heaps shrunk). */
  settledRssBytes?: number;
  settledRssAnonBytes?: number;
  idleClientsRssBytes?: number;
  idleClientsConnected?: number;
  idleClientsConnectMs?: number;
  threads?: number;
}

interface SaturationResult extends LoadResult {
  brokerCpuPct?: number;
  /** CPU% of the broker's main thread (its event loop for node brokers). */
  brokerMainThreadCpuPct?: number;
  brokerPeakRssBytes?: number;
}

interface RateResult extends LoadResult {
  brokerCpuPct?: number;
  rateReference: string;
}

interface TargetResult {
  id: string;
  label: string;
  startupOnly: boolean;
  skipped?: string;
  errors: string[];
  startup: StartupResult;
  saturation?: SaturationResult;
  halfRate?: RateResult;
}

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));

async function withTarget<T>(target: MqttTarget, tctx: TargetContext, fn: (t: RunningTarget) => Promise<T>): Promise<{ running: RunningTarget; value: T }> {
  const running = await target.start(tctx);
  try {
    // a target that dies mid-run must show up as an error, not as slow numbers
    const value = await fn(running);
    const ex = running.child.exited();
    if (ex !== undefined) throw new Error(`${target.label} exited during the run (code ${ex.code}, signal ${ex.signal})`);
    return { running, value };
  } finally {
    await running.stop();
  }
}

async function runStartupPhase(target: MqttTarget, tctx: TargetContext, cfg: MqttBenchConfig, r: TargetResult, log: (m: string) => void): Promise<void> {
  await withTarget(target, tctx, async (t) => {
    r.startup.spawnToAcceptMs.push(t.spawnToAcceptMs);
    if (t.spawnToReadyMs !== undefined) r.startup.spawnToReadyMs.push(t.spawnToReadyMs);
    await sleep(cfg.settleMs);
    r.startup.idleRssBytes = readRssBytes(t.pid);
    r.startup.threads = readThreadCount(t.pid);
    if (cfg.idleSettledMs > cfg.settleMs) {
      await sleep(cfg.idleSettledMs - cfg.settleMs);
      r.startup.settledRssBytes = readRssBytes(t.pid);
      r.startup.settledRssAnonBytes = readRssAnonBytes(t.pid);
    }
    if (cfg.idleClients > 0) {
      log(`  ${target.id}: connecting ${cfg.idleClients} idle clients`);
      const idle = await holdIdleClients({
        host: t.host,
        port: t.port,
        connections: cfg.idleClients,
        clientIdPrefix: 'idle-',
        topicTemplate: TOPIC_TEMPLATE,
        window: 1,
        payloadBytes: cfg.payloadBytes,
        keepalive: 60,
        generators: 1,
        // below Mosquitto's listen backlog (100): a connect storm that overflows it costs a
        // 1 s SYN retransmit and would measure the storm, not the broker
        connectConcurrency: 64,
        connectTimeoutMs: 20_000,
      });
      try {
        r.startup.idleClientsConnected = idle.connected;
        r.startup.idleClientsConnectMs = idle.connectMs;
        await sleep(cfg.settleMs);
        r.startup.idleClientsRssBytes = readRssBytes(t.pid);
      } finally {
        await idle.close();
      }
    }
  });
}

async function runLoadPhase(
  target: MqttTarget,
  tctx: TargetContext,
  cfg: MqttBenchConfig,
  r: TargetResult,
  halfRateRef: () => { rate: number; from: string } | undefined,
  log: (m: string) => void,
): Promise<void> {
  await withTarget(target, tctx, async (t) => {
    r.startup.spawnToAcceptMs.push(t.spawnToAcceptMs);
    if (t.spawnToReadyMs !== undefined) r.startup.spawnToReadyMs.push(t.spawnToReadyMs);
    await sleep(Math.min(cfg.settleMs, 500));
    const base = {
      host: t.host,
      port: t.port,
      connections: cfg.connections,
      clientIdPrefix: `bench-${target.id}-`,
      topicTemplate: TOPIC_TEMPLATE,
      window: cfg.window,
      payloadBytes: cfg.payloadBytes,
      keepalive: 60,
      generators: cfg.generators,
      warmupMs: cfg.warmupMs,
      measureMs: cfg.measureMs,
    };

    log(`  ${target.id}: saturating run (${cfg.warmupMs / 1000}s warm-up + ${cfg.measureMs / 1000}s)`);
    const rss = startRssSampler(t.pid, 100);
    let cpu: ReturnType<typeof startCpuWindow> | undefined;
    let mainCpu: ReturnType<typeof startCpuWindow> | undefined;
    let cpuPct: number | undefined;
    let mainCpuPct: number | undefined;
    let sat: LoadResult;
    let peak: number | undefined;
    try {
      sat = await runLoad(
        { ...base, totalRate: null },
        {
          onMeasureStart: () => {
            cpu = startCpuWindow(t.pid);
            mainCpu = startCpuWindow(t.pid, t.pid);
          },
          onMeasureEnd: () => {
            cpuPct = cpu?.stop();
            mainCpuPct = mainCpu?.stop();
          },
        },
      );
    } finally {
      peak = rss.stop();
    }
    const saturation: SaturationResult = { ...sat };
    if (cpuPct !== undefined) saturation.brokerCpuPct = cpuPct;
    if (mainCpuPct !== undefined) saturation.brokerMainThreadCpuPct = mainCpuPct;
    if (peak !== undefined) saturation.brokerPeakRssBytes = peak;
    r.saturation = saturation;
    log(`  ${target.id}: ${fmt.int(sat.ackedPerSec)} msgs/s, p99 ${fmt.ms(sat.latencyMs.p99)} ms, broker CPU ${fmt.fixed(cpuPct, 0)}%`);

    const ref = halfRateRef();
    if (ref === undefined) {
      r.errors.push('half-rate run skipped: no reference max rate');
      return;
    }
    const rate = ref.rate * cfg.halfRateFactor;
    log(`  ${target.id}: rate-limited run at ${fmt.int(rate)} msgs/s (${cfg.halfRateFactor} x ${ref.from} max)`);
    let cpu2: ReturnType<typeof startCpuWindow> | undefined;
    let cpu2Pct: number | undefined;
    const half = await runLoad(
      { ...base, totalRate: rate },
      {
        onMeasureStart: () => (cpu2 = startCpuWindow(t.pid)),
        onMeasureEnd: () => (cpu2Pct = cpu2?.stop()),
      },
    );
    const halfRate: RateResult = { ...half, rateReference: ref.from };
    if (cpu2Pct !== undefined) halfRate.brokerCpuPct = cpu2Pct;
    r.halfRate = halfRate;
  });
}

function buildTables(cfg: MqttBenchConfig, results: TargetResult[]): Table[] {
  const tables: Table[] = [];
  const ran = results;
  const loaded = ran.filter((r) => !r.startupOnly);
  const busy = (s: SaturationResult): string => {
    const parts: string[] = [];
    if ((s.brokerMainThreadCpuPct ?? 0) >= 90 || (s.brokerCpuPct ?? 0) >= 90) parts.push('broker');
    if (s.generatorCpuPct.some((c) => c >= 90)) parts.push('generator');
    return parts.length > 0 ? parts.join('+') : 'neither';
  };
  const load = `${cfg.connections} conns, QoS 1, window ${cfg.window}, ${cfg.payloadBytes} B payload, ${cfg.warmupMs / 1000}s warm-up + ${cfg.measureMs / 1000}s, ${cfg.generators} generator proc(s)`;

  tables.push({
    title: `MQTT saturation (${load})`,
    columns: [
      { header: 'target' },
      { header: 'acked msgs/s' },
      { header: 'p50 ms' },
      { header: 'p99 ms' },
      { header: 'p99.9 ms' },
      { header: 'broker CPU%' },
      { header: 'main thr%' },
      { header: 'peak RSS MiB' },
      { header: 'gen CPU%' },
      { header: 'busy (>=90%)' },
    ],
    rows: loaded.map((r) => {
      const s = r.saturation;
      if (r.skipped !== undefined) return [r.label, 'NOT RUN'];
      if (s === undefined) return [r.label, 'FAILED'];
      return [
        r.label,
        fmt.int(s?.ackedPerSec),
        fmt.ms(s?.latencyMs.p50),
        fmt.ms(s?.latencyMs.p99),
        fmt.ms(s?.latencyMs.p999),
        fmt.fixed(s?.brokerCpuPct, 0),
        fmt.fixed(s?.brokerMainThreadCpuPct, 0),
        fmt.mib(s?.brokerPeakRssBytes),
        s ? s.generatorCpuPct.map((c) => fmt.fixed(c, 0)).join('+') : 'n/a',
        s ? busy(s) : 'n/a',
      ];
    }),
    notes: [
      'broker CPU% = utime+stime of the broker process, all threads, over the measuring period (100 = one core);',
      'main thr% = its main thread only (the event loop of a node broker). busy = which processes were >= 90%',
      '(on 2 cores, "broker+generator" means the machine is full and the figure is a lower bound).',
    ],
  });

  const by = (id: string): TargetResult | undefined => results.find((r) => r.id === id);
  const gw = by('gateway')?.saturation?.ackedPerSec;
  tables.push({
    title: 'Throughput ratios (acked msgs/s)',
    columns: [{ header: 'ratio' }, { header: 'value' }],
    rows: [
      ['gateway / bare aedes', fmt.ratio(gw, by('aedes')?.saturation?.ackedPerSec)],
      ['gateway / Mosquitto', fmt.ratio(gw, by('mosquitto')?.saturation?.ackedPerSec)],
      ['bare aedes / Mosquitto', fmt.ratio(by('aedes')?.saturation?.ackedPerSec, by('mosquitto')?.saturation?.ackedPerSec)],
    ],
  });

  const refFrom = ran.find((r) => r.halfRate)?.halfRate?.rateReference;
  tables.push({
    title: `Ack latency at ${cfg.halfRateFactor} x the ${refFrom ?? 'gateway'}'s max rate (rate-limited, same load shape)`,
    columns: [
      { header: 'target' },
      { header: 'offered msgs/s' },
      { header: 'acked msgs/s' },
      { header: 'p50 ms' },
      { header: 'p99 ms' },
      { header: 'p99.9 ms' },
      { header: 'broker CPU%' },
      { header: 'skipped' },
    ],
    rows: loaded.map((r) => {
      const h = r.halfRate;
      if (r.skipped !== undefined) return [r.label, 'NOT RUN'];
      if (h === undefined) return [r.label, r.saturation ? 'n/a' : 'FAILED'];
      return [
        r.label,
        fmt.int(h?.targetRate ?? undefined),
        fmt.int(h?.ackedPerSec),
        fmt.ms(h?.latencyMs.p50),
        fmt.ms(h?.latencyMs.p99),
        fmt.ms(h?.latencyMs.p999),
        fmt.fixed(h?.brokerCpuPct, 0),
        fmt.int(h?.skipped),
      ];
    }),
    notes: [`skipped = scheduled sends dropped because the ${cfg.window}-message window was full (0 = the offered rate was met).`],
  });

  tables.push({
    title: `Start-up and memory`,
    columns: [
      { header: 'target' },
      { header: 'spawn->accept ms' },
      { header: 'spawn->healthz ms' },
      { header: `idle RSS MiB ${cfg.settleMs / 1000} s` },
      { header: `${cfg.idleSettledMs / 1000} s (anon)` },
      { header: `RSS ${cfg.idleClients} clients MiB` },
      { header: `connect ${cfg.idleClients} ms` },
      { header: 'threads' },
    ],
    rows: ran.map((r) => r.skipped !== undefined ? [r.label, 'NOT RUN'] : r.startup.spawnToAcceptMs.length === 0 ? [r.label, 'FAILED'] : [
      r.label,
      r.startup.spawnToAcceptMs.map((v) => fmt.ms(v)).join(' / ') || 'n/a',
      r.startup.spawnToReadyMs.map((v) => fmt.ms(v)).join(' / ') || '-',
      fmt.mib(r.startup.idleRssBytes),
      r.startup.settledRssBytes === undefined ? 'n/a' : `${fmt.mib(r.startup.settledRssBytes)} (${fmt.mib(r.startup.settledRssAnonBytes)})`,
      fmt.mib(r.startup.idleClientsRssBytes),
      fmt.ms(r.startup.idleClientsConnectMs),
      fmt.int(r.startup.threads),
    ]),
    notes: [
      'spawn->accept: TCP connect polled every 5 ms; two values = the two fresh starts (memory phase / load phase).',
      `idle RSS: VmRSS ${cfg.settleMs / 1000} s after accepting, and after ${cfg.idleSettledMs / 1000} s (V8 has shrunk its heaps by then);`,
      '  anon = RssAnon, the private part; the rest is mapped files, mostly the node executable (about 31 MiB for a bare `node`).',
    ],
  });
  return tables;
}

export const mqttSection: BenchSection = {
  id: 'mqtt',
  description: 'MQTT QoS 1 throughput/latency/CPU/RSS: Mosquitto vs bare aedes vs edgeway gateway',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const cfg = readConfig();
    const tctx: TargetContext = { repoRoot: ctx.repoRoot, host: '127.0.0.1', startTimeoutMs: cfg.startTimeoutMs };
    const targets = ALL_TARGETS.filter((t) => cfg.targets.includes(t.id));
    const results: TargetResult[] = [];
    const notes: string[] = [];

    const halfRateRef = (): { rate: number; from: string } | undefined => {
      const gw = results.find((r) => r.id === 'gateway')?.saturation;
      if (gw && gw.ackedPerSec > 0) return { rate: gw.ackedPerSec, from: 'gateway' };
      const first = results.find((r) => r.saturation && r.saturation.ackedPerSec > 0);
      return first?.saturation ? { rate: first.saturation.ackedPerSec, from: first.label } : undefined;
    };

    for (const target of targets) {
      const r: TargetResult = { id: target.id, label: target.label, startupOnly: target.startupOnly === true, errors: [], startup: { spawnToAcceptMs: [], spawnToReadyMs: [] } };
      results.push(r);
      const why = target.unavailable(tctx);
      if (why !== undefined) {
        r.skipped = why;
        ctx.log(`mqtt: ${target.label} SKIPPED: ${why}`);
        notes.push(`${target.label}: NOT RUN: ${why}`);
        continue;
      }
      ctx.log(`mqtt: ${target.label}`);
      try {
        await runStartupPhase(target, tctx, cfg, r, ctx.log);
      } catch (e) {
        r.errors.push(`start-up/memory phase: ${errMsg(e)}`);
        ctx.log(`  ${target.id}: start-up/memory phase FAILED: ${errMsg(e)}`);
      }
      if (r.startupOnly) continue;
      if (r.startup.spawnToAcceptMs.length === 0) {
        r.errors.push('load phase skipped: the target did not start');
      } else {
        try {
          await runLoadPhase(target, tctx, cfg, r, halfRateRef, ctx.log);
        } catch (e) {
          r.errors.push(`load phase: ${errMsg(e)}`);
          ctx.log(`  ${target.id}: load phase FAILED: ${errMsg(e)}`);
        }
      }
    }
    for (const r of results) {
      for (const e of r.errors) notes.push(`${r.label}: FAILED: ${e.split('\n')[0] ?? ''}`);
    }

    const ref = halfRateRef();
    if (ref !== undefined && ref.from !== 'gateway' && cfg.targets.includes('gateway')) {
      notes.push(`half-rate runs used ${ref.from}'s max rate as reference because the gateway produced no max rate.`);
    }
    return {
      tables: buildTables(cfg, results),
      notes,
      data: { config: cfg, results },
    };
  },
};
