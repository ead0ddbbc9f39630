/**
 * Section `amqp-cluster`: the amqp upstream against a 3-node RabbitMQ cluster beside a single node, same machine
 * (test/helpers/rabbitmq-cluster.ts; heavy: three Erlang VMs on the same cores as the gateway and the load).
 * Targets: one node with a classic queue (the amqp section's setting), one node with a quorum queue, the cluster with
 * a quorum queue (3 replicas: a publish is accepted once 2 have it). For each:
 *   1. raw rhea sender, unsettled, window BENCH_AMQP_WINDOW: msgs/s and the settle latency (send -> accepted) p50/p99
 *   2. the gateway: BENCH_AMQP_CLUSTER_MESSAGES readings from 10 unpaced devices, msgs/s from the first reading's
 *      receipt until the consumer has them all, and gateway receipt -> consumer latency p50/p99
 * Cluster only: 3. the failover gap: paced devices (BENCH_AMQP_CLUSTER_RATE readings/s), the gateway's node is
 *   stopped: time from the stop to "upstream connected" on the next node, and the longest gap between readings
 *   reaching the consumer (which reads from a node that stays up); then 0-loss is checked with the delivery report.
 * Written to be run with `npm run bench -- amqp-cluster`; it measures, it does not assert.
 */
import rhea from 'rhea';
import { setTimeout as sleep } from 'node:timers/promises';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt } from '../lib/table.ts';
import { startRabbitMq } from '../../../test/helpers/rabbitmq.ts';
import { startRabbitCluster } from '../../../test/helpers/rabbitmq-cluster.ts';
import { startGatewayProc } from '../../../test/helpers/gateway.ts';
import { amqpConsumer, connectAmqp } from '../../../test/helpers/amqp.ts';
import { simulateDevice } from '../../../test/helpers/load.ts';
import { waitFor } from '../../../test/helpers/net.ts';
import { deliveryReport, formatReport } from '../../../test/helpers/report.ts';
import { checkQuorumQueue } from '../../../bridges/amqp/queue-check.ts';
import type { AmqpUpstreamConfig } from '../../../bridges/amqp/config.ts';

function pct(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

interface Target { name: string; ports: number[]; address: string; quorum: boolean }

/** Unsettled sends with at most `window` unaccepted; each one's send -> accepted time. */
async function rawSettle(port: number, address: string, messages: number, window: number): Promise<{ msgsPerS: number; p50?: number; p99?: number }> {
  const conn = await connectAmqp(port);
  const sender = conn.open_sender({ target: { address } });
  await new Promise<void>((resolve) => sender.once('sendable', () => resolve()));
  const body = rhea.message.data_section(Buffer.from(JSON.stringify({ pad: 'x'.repeat(180) })));
  const sentAt = new Map<unknown, number>();
  const lat: number[] = [];
  let sent = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (sent < messages && sentAt.size < window && sender.sendable()) {
        const d = sender.send({ message_id: `raw-${sent++}`, durable: true, content_type: 'application/json', body });
        sentAt.set(d, performance.now());
      }
    };
    sender.on('accepted', (ctx) => {
      const t = sentAt.get(ctx.delivery);
      if (t !== undefined) { lat.push(performance.now() - t); sentAt.delete(ctx.delivery); }
      if (lat.length >= messages) resolve(); else pump();
    });
    sender.on('sendable', pump);
    pump();
  });
  const ms = performance.now() - t0;
  conn.close();
  lat.sort((a, b) => a - b);
  return { msgsPerS: (messages / ms) * 1000, p50: pct(lat, 50), p99: pct(lat, 99) };
}

const creds = { username: 'guest', password: 'guest', address: '/amq/queue/x' } as unknown as AmqpUpstreamConfig;

function upstream(t: Target, window: number): Record<string, unknown> {
  return {
    name: 'bench', type: 'amqp', hosts: t.ports.map((port) => ({ host: '127.0.0.1', port })), username: 'guest', password: 'guest',
    address: t.address, maxInflight: window, reconnectMinMs: 100, reconnectMaxMs: 500,
    ...(t.quorum ? { queue: { type: 'quorum', declare: true } } : {}),
  };
}

async function gatewayRun(ctx: BenchContext, t: Target, messages: number, window: number): Promise<{ msgsPerS: number; p50?: number; p99?: number }> {
  const g = await startGatewayProc({ mqtt: { openBroker: true }, upstreams: [upstream(t, window)] });
  try {
    await g.waitLog((l) => l.msg === 'upstream connected', 60_000);
    const consumer = await amqpConsumer(t.ports[t.ports.length - 1]!, t.address);
    try {
      const per = Math.ceil(messages / 10);
      ctx.log(`amqp-cluster: ${t.name}: gateway, ${per * 10} readings`);
      const sims = Array.from({ length: 10 }, (_, i) => simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, `${t.name.replace(/\W/g, '')}${i}`, { window: 32, max: per }));
      await waitFor('all delivered', () => consumer.got.length >= per * 10, 600_000, 100);
      for (const s of sims) await s.stop();
      const received = consumer.messages.map((m) => Number(m.body.receivedAt));
      const first = Math.min(...received);
      const last = Math.max(...consumer.messages.map((m) => m.at));
      const lat = consumer.messages.map((m) => m.at - Number(m.body.receivedAt)).sort((a, b) => a - b);
      return { msgsPerS: (per * 10 / (last - first)) * 1000, p50: pct(lat, 50), p99: pct(lat, 99) };
    } finally { await consumer.close(); }
  } finally { await g.cleanup(); }
}

export const amqpClusterSection: BenchSection = {
  id: 'amqp-cluster',
  description: 'amqp upstream: 3-node RabbitMQ cluster (quorum queue) beside one node: throughput, p99 settle, failover gap',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const messages = envNumber('BENCH_AMQP_MESSAGES', 100_000);
    const window = envNumber('BENCH_AMQP_WINDOW', 500);
    const gwMessages = envNumber('BENCH_AMQP_CLUSTER_MESSAGES', 50_000);
    const rate = envNumber('BENCH_AMQP_CLUSTER_RATE', 1000);
    const notes: string[] = [];
    const rows: string[][] = [];
    const data: Record<string, unknown> = {};

    ctx.log('amqp-cluster: starting a single RabbitMQ node');
    const single = await startRabbitMq();
    try {
      for (const t of [
        { name: 'single node, classic queue', ports: [single.port], address: '/queue/bench-classic', quorum: false },
        { name: 'single node, quorum queue', ports: [single.port], address: '/amq/queue/bench-quorum', quorum: true },
      ]) {
        if (t.quorum) await checkQuorumQueue(creds, '127.0.0.1', single.port, 'bench-quorum', true, 10_000);
        ctx.log(`amqp-cluster: ${t.name}: raw rhea, ${messages} messages`);
        const raw = await rawSettle(single.port, t.quorum ? '/amq/queue/bench-quorum' : '/queue/bench-classic-raw', messages, window);
        const gw = await gatewayRun(ctx, t, gwMessages, window);
        rows.push([t.name, fmt.int(raw.msgsPerS), fmt.ms(raw.p50), fmt.ms(raw.p99), fmt.int(gw.msgsPerS), fmt.ms(gw.p50), fmt.ms(gw.p99)]);
        data[t.name] = { raw, gateway: gw };
      }
    } finally { await single.cleanup(); }

    ctx.log('amqp-cluster: starting a 3-node cluster');
    const cluster = await startRabbitCluster(3);
    let failover: Record<string, unknown> = {};
    try {
      const ports = cluster.nodes.map((n) => n.port);
      const t: Target = { name: '3-node cluster, quorum queue', ports, address: '/amq/queue/bench-quorum', quorum: true };
      await checkQuorumQueue(creds, '127.0.0.1', ports[0]!, 'bench-quorum', true, 10_000);
      ctx.log(`amqp-cluster: ${t.name}: raw rhea, ${messages} messages`);
      const raw = await rawSettle(ports[0]!, '/amq/queue/bench-quorum', messages, window);
      const gw = await gatewayRun(ctx, t, gwMessages, window);
      rows.push([t.name, fmt.int(raw.msgsPerS), fmt.ms(raw.p50), fmt.ms(raw.p99), fmt.int(gw.msgsPerS), fmt.ms(gw.p50), fmt.ms(gw.p99)]);
      data[t.name] = { raw, gateway: gw };

      // The failover gap: the gateway is on node 1 (first in hosts), the consumer on node 3.
      ctx.log(`amqp-cluster: failover under ${rate} readings/s`);
      const g = await startGatewayProc({ mqtt: { openBroker: true }, upstreams: [{ ...upstream(t, window), address: '/amq/queue/bench-failover', queue: { type: 'quorum', declare: true } }] });
      try {
        await g.waitLog((l) => l.msg === 'upstream connected', 60_000);
        const consumer = await amqpConsumer(ports[2]!, '/amq/queue/bench-failover');
        try {
          const sims = Array.from({ length: 10 }, (_, i) => simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, `f${i}`, { window: 1, intervalMs: Math.max(1, Math.round(10_000 / rate)) }));
          await sleep(3000);
          const mark = g.logs.length;
          const tStop = Date.now();
          await cluster.nodes[0]!.stop();
          const up = await g.waitLog((l) => l.msg === 'upstream connected' && g.logs.indexOf(l) >= mark, 60_000);
          await sleep(3000);
          for (const s of sims) await s.stop();
          // Every acknowledged reading, counted once (duplicates from the resent in-flight window do not count).
          await waitFor('failover readings delivered', () => deliveryReport(sims, consumer.got).lost === 0, 120_000, 200).catch(() => undefined);
          const arrivals = consumer.messages.map((m) => m.at).sort((a, b) => a - b);
          let gap = 0;
          for (let i = 1; i < arrivals.length; i++) if (arrivals[i]! >= tStop - 1000) gap = Math.max(gap, arrivals[i]! - arrivals[i - 1]!);
          const report = deliveryReport(sims, consumer.got);
          failover = { stopToConnectedMs: Number(up.time) - tStop, longestArrivalGapMs: gap, endpoint: up.endpoint, report };
          notes.push(`failover: node 1 stopped -> connected to ${String(up.endpoint)} in ${fmt.int(Number(up.time) - tStop)} ms; longest gap between readings at the consumer ${fmt.int(gap)} ms; ${formatReport(report)}`);
        } finally { await consumer.close(); }
      } finally { await g.cleanup(); }
    } finally { await cluster.cleanup(); }

    notes.push('settle latency: raw rhea send -> accepted (a quorum queue accepts once a majority of its replicas have the message); gateway latency: gateway receipt -> consumer receipt');
    notes.push('all on one machine: three Erlang VMs share the cores with the gateway and the load, so the cluster rows understate a real cluster on its own hosts');
    return {
      tables: [{
        title: 'amqp-cluster: RabbitMQ 3.10 AMQP 1.0, single node beside a 3-node cluster',
        columns: [{ header: 'target' }, { header: 'raw msgs/s', align: 'right' as const }, { header: 'settle p50 ms', align: 'right' as const }, { header: 'settle p99 ms', align: 'right' as const }, { header: 'gateway msgs/s', align: 'right' as const }, { header: 'gw p50 ms', align: 'right' as const }, { header: 'gw p99 ms', align: 'right' as const }],
        rows,
      }],
      notes,
      data: { ...data, failover },
    };
  },
};
