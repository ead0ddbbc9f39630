/**
 * Parent-side API of the load generator: splits connections over one or more
 * generator processes (separate from the broker's process and event loop) and
 * drives them through connect -> warm-up -> measure -> stop.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { startChild, type ManagedChild } from '../lib/children.ts';
import { LatencyHistogram } from '../lib/histogram.ts';
import { startCpuWindow } from '../lib/proc-metrics.ts';
import {
  isGeneratorMessage,
  type GeneratorConfig,
  type GeneratorMessage,
  type GeneratorResult,
  type ParentMessage,
} from './protocol.ts';

const GENERATOR_ENTRY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'generator.ts');

export interface ConnectionPlan {
  host: string;
  port: number;
  connections: number;
  clientIdPrefix: string;
  topicTemplate: string;
  window: number;
  payloadBytes: number;
  keepalive: number;
  /** Number of generator processes the connections are split over. */
  generators: number;
  connectConcurrency?: number;
  connectTimeoutMs?: number;
  /** 4 (MQTT 3.1.1, default) or 5. */
  protocolVersion?: 4 | 5;
  /** MQTT 5: publish with topic alias 1 after the first PUBLISH. */
  topicAlias?: boolean;
}

export interface LoadPlan extends ConnectionPlan {
  /** Total target rate in msgs/s over all connections; null = saturate. */
  totalRate: number | null;
  warmupMs: number;
  measureMs: number;
}

export interface MeasureHooks {
  /** Called right after the generators reset their counters (start of the measuring period). */
  onMeasureStart?: () => void;
  /** Called right before the generators are told to stop (end of the measuring period). */
  onMeasureEnd?: () => void;
}

export interface LoadResult {
  connections: number;
  generators: number;
  targetRate: number | null;
  acked: number;
  sent: number;
  skipped: number;
  disconnects: number;
  measuredMs: number;
  ackedPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  /** CPU% (100 = one core) of each generator process during the measuring period. */
  generatorCpuPct: number[];
  connectMs: number;
}

class GeneratorProc {
  private readonly inbox: GeneratorMessage[] = [];
  private waiter: (() => void) | undefined;
  readonly child: ManagedChild;

  constructor(readonly index: number) {
    this.child = startChild(process.execPath, ['--import', 'tsx', GENERATOR_ENTRY], {
      ipc: true,
      cwd: process.cwd(),
    });
    this.child.proc.on('message', (m: unknown) => {
      if (!isGeneratorMessage(m)) return;
      this.inbox.push(m);
      this.waiter?.();
    });
    this.child.proc.on('exit', () => this.waiter?.());
  }

  send(m: ParentMessage): void {
    if (this.child.proc.connected) this.child.proc.send(m);
  }

  /** Wait for the next message of the given type; an 'error' message or exit rejects. */
  async next<T extends GeneratorMessage['type']>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<GeneratorMessage, { type: T }>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex((m) => m.type === type || m.type === 'error');
      if (i >= 0) {
        const [m] = this.inbox.splice(i, 1);
        if (m === undefined) continue;
        if (m.type === 'error') throw new Error(`generator ${this.index}: ${m.message}`);
        return m as Extract<GeneratorMessage, { type: T }>;
      }
      const ex = this.child.exited();
      if (ex !== undefined) throw new Error(`generator ${this.index} exited (code ${ex.code}, signal ${ex.signal})`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`generator ${this.index}: timeout waiting for '${type}'`);
      await Promise.race([
        new Promise<void>((r) => {
          this.waiter = r;
        }),
        sleep(left),
      ]);
      this.waiter = undefined;
    }
  }

  async close(): Promise<void> {
    this.send({ type: 'close' });
    if (this.child.exited() === undefined) {
      await Promise.race([once(this.child.proc, 'exit'), sleep(2000)]);
    }
    await this.child.stop(500);
  }
}

function splitConfigs(plan: ConnectionPlan, ratePerClient: number | null): GeneratorConfig[] {
  const n = Math.max(1, Math.min(plan.generators, plan.connections));
  const configs: GeneratorConfig[] = [];
  for (let g = 0; g < n; g++) {
    const ids: string[] = [];
    for (let i = g; i < plan.connections; i += n) ids.push(`${plan.clientIdPrefix}${i}`);
    configs.push({
      host: plan.host,
      port: plan.port,
      clientIds: ids,
      topicTemplate: plan.topicTemplate,
      window: plan.window,
      payloadBytes: plan.payloadBytes,
      keepalive: plan.keepalive,
      ratePerClient,
      connectConcurrency: Math.max(1, Math.floor((plan.connectConcurrency ?? 200) / n)),
      connectTimeoutMs: plan.connectTimeoutMs ?? 10_000,
      protocolVersion: plan.protocolVersion ?? 4,
      topicAlias: plan.topicAlias === true,
    });
  }
  return configs;
}

async function startGenerators(plan: ConnectionPlan, ratePerClient: number | null): Promise<{ procs: GeneratorProc[]; connectMs: number }> {
  const configs = splitConfigs(plan, ratePerClient);
  const procs = configs.map((_, i) => new GeneratorProc(i));
  try {
    configs.forEach((cfg, i) => procs[i]?.send({ type: 'init', config: cfg }));
    const timeout = (plan.connectTimeoutMs ?? 10_000) + 15_000; // + tsx start-up
    const ready = await Promise.all(procs.map((p) => p.next('ready', timeout)));
    return { procs, connectMs: Math.max(...ready.map((r) => r.connectMs)) };
  } catch (e) {
    await Promise.all(procs.map((p) => p.close()));
    throw e;
  }
}

/** Run one load phase (connect, warm-up, measure) and return merged results. */
export async function runLoad(plan: LoadPlan, hooks: MeasureHooks = {}): Promise<LoadResult> {
  const ratePerClient = plan.totalRate === null ? null : plan.totalRate / plan.connections;
  const { procs, connectMs } = await startGenerators(plan, ratePerClient);
  try {
    for (const p of procs) p.send({ type: 'start' });
    await sleep(plan.warmupMs);
    for (const p of procs) p.send({ type: 'mark' });
    await Promise.all(procs.map((p) => p.next('marked', 5000)));
    const genCpu = procs.map((p) => startCpuWindow(p.child.pid));
    hooks.onMeasureStart?.();
    await sleep(plan.measureMs);
    hooks.onMeasureEnd?.();
    const generatorCpuPct = genCpu.map((w) => w.stop() ?? Number.NaN);
    for (const p of procs) p.send({ type: 'stop' });
    const results: GeneratorResult[] = (await Promise.all(procs.map((p) => p.next('result', 10_000)))).map((m) => m.result);

    const hist = new LatencyHistogram();
    let acked = 0;
    let sent = 0;
    let skipped = 0;
    let disconnects = 0;
    let measuredMs = 0;
    for (const r of results) {
      hist.merge(r.histogram);
      acked += r.acked;
      sent += r.sent;
      skipped += r.skipped;
      disconnects += r.disconnects;
      measuredMs = Math.max(measuredMs, r.elapsedMs);
    }
    const us = (p: number): number => hist.percentile(p) / 1000;
    return {
      connections: plan.connections,
      generators: procs.length,
      targetRate: plan.totalRate,
      acked,
      sent,
      skipped,
      disconnects,
      measuredMs,
      ackedPerSec: measuredMs > 0 ? acked / (measuredMs / 1000) : 0,
      latencyMs: {
        p50: us(50),
        p90: us(90),
        p99: us(99),
        p999: us(99.9),
        max: hist.max / 1000,
        mean: hist.mean() / 1000,
      },
      generatorCpuPct,
      connectMs,
    };
  } finally {
    await Promise.all(procs.map((p) => p.close()));
  }
}

export interface IdleClients {
  connected: number;
  connectMs: number;
  close(): Promise<void>;
}

/** Connect plan.connections idle clients (keepalive as given) and keep them open until close(). */
export async function holdIdleClients(plan: ConnectionPlan): Promise<IdleClients> {
  const { procs, connectMs } = await startGenerators(plan, null);
  return {
    connected: plan.connections,
    connectMs,
    close: async () => {
      await Promise.all(procs.map((p) => p.close()));
    },
  };
}
