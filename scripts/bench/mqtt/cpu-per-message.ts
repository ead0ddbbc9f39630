/**
 * Gateway CPU time per acknowledged message, MQTT 3.1.1 vs MQTT 5 (issue 13):
 *
 *   npx tsx scripts/bench/mqtt/cpu-per-message.ts [--rate 10000] [--messages 50000] [--reps 3] [--rounds 2] [--profile]
 *
 * Throughput needs a quiet machine; CPU time per message at a fixed rate is less sensitive to what else runs, and
 * pairing the modes back to back cancels most of the drift that remains. Each of --reps runs starts a fresh gateway
 * (the built dist/, as `npm run bench` does: targets/gateway.ts); each of its --rounds drives --messages messages
 * with the bench's load shape (100 connections, QoS 1, window 32, 100 B) for 3.1.1 clients, v5 clients and v5 with a
 * topic alias, in an order rotated per round. CPU is utime+stime from /proc/<pid>/stat over the measuring period:
 * the whole process (outbox and other worker threads included) and its main thread (MQTT parsing, fast path, acks).
 * Also printed: the load generator's CPU per message, whose work is the same in every mode, and the gateway's main
 * thread in those units (it drifts less with the machine's load than either figure alone).
 *
 * --profile: one gateway per mode started with node's --cpu-prof; prints the main thread's self time per message by
 * function and by library, counted over the measuring period only (sampled wall time: noisy on a busy machine).
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { installSignalCleanup, killAllNow } from '../lib/children.ts';
import { readCpuTicks } from '../lib/proc-metrics.ts';
import { runLoad, type LoadPlan } from '../loadgen/index.ts';
import { gatewayTarget } from './targets/gateway.ts';
import { TOPIC_TEMPLATE, type RunningTarget, type TargetContext } from './targets/types.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

interface Mode {
  id: string;
  protocolVersion: 4 | 5;
  topicAlias: boolean;
}
const MODES: Mode[] = [
  { id: '3.1.1', protocolVersion: 4, topicAlias: false },
  { id: 'v5', protocolVersion: 5, topicAlias: false },
  { id: 'v5+alias', protocolVersion: 5, topicAlias: true },
];

interface Options {
  messages: number;
  rate: number;
  reps: number;
  rounds: number;
  connections: number;
  window: number;
  payloadBytes: number;
  warmupMs: number;
  profile: boolean;
  top: number;
  modes: Mode[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { messages: 50_000, rate: 10_000, reps: 3, rounds: 2, connections: 100, window: 32, payloadBytes: 100, warmupMs: 3000, profile: false, top: 30, modes: MODES };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    switch (a) {
      case '--messages': o.messages = num(); break;
      case '--rate': o.rate = num(); break;
      case '--reps': o.reps = num(); break;
      case '--rounds': o.rounds = num(); break;
      case '--connections': o.connections = num(); break;
      case '--window': o.window = num(); break;
      case '--payload': o.payloadBytes = num(); break;
      case '--warmup-seconds': o.warmupMs = num() * 1000; break;
      case '--top': o.top = num(); break;
      case '--profile': o.profile = true; break;
      case '--modes': {
        const ids = (argv[++i] ?? '').split(',');
        o.modes = ids.map((id) => {
          const m = MODES.find((x) => x.id === id);
          if (!m) throw new Error(`--modes: unknown mode "${id}" (known: ${MODES.map((x) => x.id).join(', ')})`);
          return m;
        });
        break;
      }
      case '--': break;
      default: throw new Error(`unknown argument ${a} (see the comment at the top of ${path.relative(repoRoot, fileURLToPath(import.meta.url))})`);
    }
  }
  return o;
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const hrUs = (): number => Number(process.hrtime.bigint() / 1000n);

interface Measured {
  mode: string;
  acked: number;
  ackedPerSec: number;
  skipped: number;
  /** Gateway CPU µs per acknowledged message: whole process, main thread. */
  usPerMsg: number;
  mainUsPerMsg: number;
  /** The load generator's CPU µs per message (it shares the machine's 2 cores with the gateway at saturation). */
  generatorUsPerMsg: number;
  cpuPct: number;
  /** The measuring period on the CLOCK_MONOTONIC µs scale V8's profiles use. */
  windowUs: [number, number];
}

async function measure(t: RunningTarget, mode: Mode, o: Options, tag: string): Promise<Measured> {
  const measureMs = Math.ceil((o.messages / o.rate) * 1000);
  const plan: LoadPlan = {
    host: t.host,
    port: t.port,
    connections: o.connections,
    clientIdPrefix: `cpu-${tag}-${mode.id.replace(/\W/g, '')}-`,
    topicTemplate: TOPIC_TEMPLATE,
    window: o.window,
    payloadBytes: o.payloadBytes,
    keepalive: 60,
    generators: 1,
    protocolVersion: mode.protocolVersion,
    topicAlias: mode.topicAlias,
    totalRate: o.rate,
    warmupMs: o.warmupMs,
    measureMs,
  };
  let c0 = 0, m0 = 0, t0 = 0, w0 = 0;
  let c1 = 0, m1 = 0, t1 = 0, w1 = 0;
  const res = await runLoad(plan, {
    onMeasureStart: () => {
      c0 = readCpuTicks(t.pid) ?? Number.NaN;
      m0 = readCpuTicks(t.pid, t.pid) ?? Number.NaN;
      t0 = performance.now();
      w0 = hrUs();
    },
    onMeasureEnd: () => {
      c1 = readCpuTicks(t.pid) ?? Number.NaN;
      m1 = readCpuTicks(t.pid, t.pid) ?? Number.NaN;
      t1 = performance.now();
      w1 = hrUs();
    },
  });
  if (res.acked === 0) throw new Error(`${mode.id}: no message acknowledged`);
  // CPU rate over our window divided by the ack rate over the generator's (the two differ by a few ms)
  const wallS = (t1 - t0) / 1000;
  const perMsg = (ticks: number): number => ((ticks / CLK_TCK / wallS) / res.ackedPerSec) * 1e6;
  return {
    mode: mode.id,
    acked: res.acked,
    ackedPerSec: res.ackedPerSec,
    skipped: res.skipped,
    usPerMsg: perMsg(c1 - c0),
    mainUsPerMsg: perMsg(m1 - m0),
    generatorUsPerMsg: (res.generatorCpuPct.reduce((a, b) => a + b, 0) / 100 / res.ackedPerSec) * 1e6,
    cpuPct: ((c1 - c0) / CLK_TCK / wallS) * 100,
    windowUs: [w0, w1],
  };
}

const tctx: TargetContext = { repoRoot, host: '127.0.0.1', startTimeoutMs: 30_000 };

async function withGateway<T>(nodeArgs: string[], fn: (t: RunningTarget) => Promise<T>): Promise<T> {
  const t = await gatewayTarget.start({ ...tctx, nodeArgs });
  try {
    await sleep(500);
    return await fn(t);
  } finally {
    await t.child.stop(15_000); // a --cpu-prof profile is written at exit
    await t.stop();
  }
}

const f1 = (n: number): string => n.toFixed(1);
const f2 = (n: number): string => n.toFixed(2);

function stats(xs: number[]): { mean: number; min: number; max: number } {
  return { mean: xs.reduce((a, b) => a + b, 0) / xs.length, min: Math.min(...xs), max: Math.max(...xs) };
}

async function cpuRuns(o: Options): Promise<void> {
  const all: (Measured & { run: number; round: number })[] = [];
  let round = 0;
  for (let r = 0; r < o.reps; r++) {
    await withGateway([], async (t) => {
      for (let k = 0; k < o.rounds; k++, round++) {
        const order = o.modes.map((_, i) => o.modes[(i + round) % o.modes.length]!);
        for (const mode of order) {
          process.stderr.write(`run ${r + 1}/${o.reps} round ${k + 1}/${o.rounds}: ${mode.id} at ${o.rate} msgs/s, ${o.messages} messages ... `);
          const m = await measure(t, mode, o, `r${r}k${k}`);
          all.push({ ...m, run: r, round });
          process.stderr.write(`${f1(m.usPerMsg)} µs/msg (main thread ${f1(m.mainUsPerMsg)}, generator ${f1(m.generatorUsPerMsg)}), ${m.acked} acked, ${m.skipped} skipped, CPU ${f1(m.cpuPct)}%\n`);
        }
      }
    });
  }
  // a run's figure: its slices' CPU over their messages; a round's ratio: modes measured back to back
  const runFigure = (mode: string, run: number, pick: (m: Measured) => number): number => {
    const ms = all.filter((m) => m.mode === mode && m.run === run);
    return ms.reduce((a, m) => a + pick(m) * m.acked, 0) / ms.reduce((a, m) => a + m.acked, 0);
  };
  const ratios = (mode: string, pick: (m: Measured) => number): number[] => {
    const out: number[] = [];
    for (let k = 0; k < round; k++) {
      const a = all.find((m) => m.mode === mode && m.round === k);
      const b = all.find((m) => m.mode === o.modes[0]!.id && m.round === k);
      if (a && b) out.push(pick(a) / pick(b));
    }
    return out.sort((x, y) => x - y);
  };
  const median = (xs: number[]): number => (xs.length % 2 ? xs[(xs.length - 1) / 2]! : (xs[xs.length / 2 - 1]! + xs[xs.length / 2]!) / 2);
  const lines = [
    `gateway CPU per acknowledged message: ${o.connections} conns, QoS 1, window ${o.window}, ${o.payloadBytes} B, ${o.rate} msgs/s;`,
    `${o.reps} gateway runs x ${o.rounds} rounds x ${o.messages} messages per mode (modes back to back, order rotated per round)`,
    `| mode | process µs/msg per run | mean [min-max] | main thread µs/msg per run | mean [min-max] | main thread x ${o.modes[0]!.id}, per round: median [min-max] | process x ${o.modes[0]!.id}: median | generator µs/msg | main thread / generator x ${o.modes[0]!.id}: median [min-max] | skipped |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const mode of o.modes) {
    const runs = [...Array(o.reps).keys()];
    const p = runs.map((r) => runFigure(mode.id, r, (m) => m.usPerMsg));
    const q = runs.map((r) => runFigure(mode.id, r, (m) => m.mainUsPerMsg));
    const ps = stats(p);
    const qs = stats(q);
    const rq = ratios(mode.id, (m) => m.mainUsPerMsg);
    const rp = ratios(mode.id, (m) => m.usPerMsg);
    // the generator's work per message is the same in every mode: gateway CPU in its units drifts less with the load
    const rn = ratios(mode.id, (m) => m.mainUsPerMsg / m.generatorUsPerMsg);
    const skipped = all.filter((m) => m.mode === mode.id).reduce((a, m) => a + m.skipped, 0);
    lines.push(`| ${mode.id} | ${p.map(f1).join(', ')} | ${f1(ps.mean)} [${f1(ps.min)}-${f1(ps.max)}] | ${q.map(f1).join(', ')} | ${f1(qs.mean)} [${f1(qs.min)}-${f1(qs.max)}] | ${f2(median(rq))} [${f2(rq[0]!)}-${f2(rq[rq.length - 1]!)}] | ${f2(median(rp))} | ${f1(stats(runs.map((r) => runFigure(mode.id, r, (m) => m.generatorUsPerMsg))).mean)} | ${f2(median(rn))} [${f2(rn[0]!)}-${f2(rn[rn.length - 1]!)}] | ${skipped} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ---- --profile: main-thread self time per message from a .cpuprofile ----

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function area(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)' || fn === '(program)' || fn === '(root)') return fn;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.includes('/dist/')) return 'gateway';
  if (url.startsWith('node:')) return 'node';
  return url === '' ? 'native/builtins' : url;
}

function shortUrl(url: string): string {
  const i = url.indexOf('node_modules/');
  if (i >= 0) return url.slice(i + 'node_modules/'.length);
  const d = url.indexOf('/dist/');
  if (d >= 0) return url.slice(d + 1);
  return url;
}

/** Self time (µs) per function key and per area over [from, to] (µs, the profile's clock). */
function selfTimes(p: CpuProfile, from: number, to: number): { fns: Map<string, number>; areas: Map<string, number>; inWindow: number } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const fns = new Map<string, number>();
  const areas = new Map<string, number>();
  let t = p.startTime;
  let inWindow = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    if (t < from || t > to) continue;
    // a sample's weight: the time to the next sample (V8's own attribution)
    const w = p.timeDeltas[i + 1] ?? dt;
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    inWindow++;
    const cf = n.callFrame;
    const key = `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
    fns.set(key, (fns.get(key) ?? 0) + w);
    const a = area(cf.url, cf.functionName);
    areas.set(a, (areas.get(a) ?? 0) + w);
  }
  return { fns, areas, inWindow };
}

function mainThreadProfile(dir: string): CpuProfile {
  // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const main = files.find((f) => f.split('.')[4] === '0') ?? files[0];
  if (!main) throw new Error(`no .cpuprofile in ${dir} (did the gateway exit cleanly?)`);
  return JSON.parse(readFileSync(path.join(dir, main), 'utf8')) as CpuProfile;
}

async function profileRuns(o: Options): Promise<void> {
  const results: { mode: string; acked: number; fns: Map<string, number>; areas: Map<string, number>; dir: string; m: Measured }[] = [];
  for (const mode of o.modes) {
    // not a bench temp dir: those are removed at exit, the profiles are kept
    const dir = mkdtempSync(path.join(os.tmpdir(), `cpuprof-${mode.id.replace(/\W/g, '')}-`));
    let m: Measured | undefined;
    await withGateway(['--cpu-prof', `--cpu-prof-dir=${dir}`], async (t) => {
      process.stderr.write(`profile: ${mode.id} at ${o.rate} msgs/s, ${o.messages} messages ... `);
      m = await measure(t, mode, o, 'prof');
      process.stderr.write(`${f1(m.usPerMsg)} µs/msg (main ${f1(m.mainUsPerMsg)}, profiler on)\n`);
    });
    if (!m) continue;
    const p = mainThreadProfile(dir);
    let [from, to] = m.windowUs;
    if (to < p.startTime || from > p.endTime) {
      process.stderr.write(`profile ${mode.id}: the measuring window is outside the profile's clock, counting the whole profile\n`);
      from = p.startTime;
      to = p.endTime;
    }
    const s = selfTimes(p, from, to);
    // acked over the generator's period; the window is the same period to a few ms
    results.push({ mode: mode.id, acked: m.acked, fns: s.fns, areas: s.areas, dir, m });
  }
  const per = (r: (typeof results)[number], us: number | undefined): number => (us ?? 0) / r.acked;
  const header = `| | ${results.map((r) => r.mode).join(' | ')} |${results.length > 1 ? ` ${results.slice(1).map((r) => `${r.mode} - ${results[0]!.mode}`).join(' | ')} |` : ''}`;
  const sep = `| --- |${results.map(() => ' ---: |').join('')}${results.slice(1).map(() => ' ---: |').join('')}`;
  const table = (title: string, pick: (r: (typeof results)[number]) => Map<string, number>, limit: number): string[] => {
    const keys = new Set<string>();
    for (const r of results) for (const k of pick(r).keys()) keys.add(k);
    const rows = [...keys].map((k) => ({ k, v: results.map((r) => per(r, pick(r).get(k))) }));
    // sorted by the largest difference from the first mode, then by size
    rows.sort((a, b) => Math.max(...b.v) - Math.max(...a.v));
    const top = rows.slice(0, limit);
    const out = [`${title} (main thread self time, µs per acknowledged message, measuring period only)`, header, sep];
    for (const r of top) out.push(`| ${r.k} | ${r.v.map(f2).join(' | ')} |${r.v.length > 1 ? ` ${r.v.slice(1).map((x) => f2(x - r.v[0]!)).join(' | ')} |` : ''}`);
    const total = results.map((r) => [...pick(r).entries()].filter(([k]) => k !== '(idle)' && !k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0) / r.acked);
    out.push(`| total busy | ${total.map(f2).join(' | ')} |${total.length > 1 ? ` ${total.slice(1).map((x) => f2(x - total[0]!)).join(' | ')} |` : ''}`);
    return out;
  };
  const byDiff = (title: string, limit: number): string[] => {
    if (results.length < 2) return [];
    const keys = new Set<string>();
    for (const r of results) for (const k of r.fns.keys()) keys.add(k);
    const rows = [...keys].map((k) => ({ k, v: results.map((r) => per(r, r.fns.get(k))) }));
    rows.sort((a, b) => Math.abs(Math.max(...b.v.slice(1)) - b.v[0]!) - Math.abs(Math.max(...a.v.slice(1)) - a.v[0]!));
    const out = [title, header, sep];
    for (const r of rows.slice(0, limit)) out.push(`| ${r.k} | ${r.v.map(f2).join(' | ')} | ${r.v.slice(1).map((x) => f2(x - r.v[0]!)).join(' | ')} |`);
    return out;
  };
  const out = [
    ...table('by area', (r) => r.areas, 40),
    '',
    ...table('top functions', (r) => r.fns, o.top),
    '',
    ...byDiff('largest differences from the first mode, by function', o.top),
    '',
    `profiles: ${results.map((r) => r.dir).join(' ')} (kept; open in Chrome DevTools)`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
}

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  if (gatewayTarget.unavailable(tctx)) throw new Error(gatewayTarget.unavailable(tctx));
  installSignalCleanup();
  if (o.profile) await profileRuns(o);
  else await cpuRuns(o);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`cpu-per-message: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    killAllNow();
    process.exit(1);
  },
);
