/**
 * Section `amqp`: the amqp upstream against a private RabbitMQ 3.10 (AMQP 1.0 plugin), same machine, same run.
 *   1. references: a raw rhea sender -> RabbitMQ, unsettled, counted on `accepted` (window BENCH_AMQP_WINDOW); and one
 *      sending the gateway's own messages while a consumer drains the queue (the drain's setting)
 *   2. live: paced MQTT devices at half the shaped reference's rate -> gateway -> RabbitMQ -> consumer; latency from
 *      the gateway's receive time (`receivedAt` in the body) to the consumer's receipt (same clock, loopback device
 *      hop not included)
 *   3. backlog drain: BENCH_AMQP_BACKLOG readings stored while RabbitMQ is down, then RabbitMQ starts; time from
 *      "upstream connected" until the consumer has every backlog reading, while live devices keep publishing
 *      BENCH_AMQP_DRAIN_LIVE readings/s
 * Reuses the test helpers (private RabbitMQ, gateway child process, simulated devices, delivery report).
 */
import mqtt from 'mqtt';
import rhea, { type Message } from 'rhea';
import { setTimeout as sleep } from 'node:timers/promises';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt } from '../lib/table.ts';
import { startRabbitMq } from '../../../test/helpers/rabbitmq.ts';
import { startGatewayProc } from '../../../test/helpers/gateway.ts';
import { amqpConsumer, connectAmqp, type AmqpConsumer } from '../../../test/helpers/amqp.ts';
import { simulateDevice } from '../../../test/helpers/load.ts';
import { waitFor } from '../../../test/helpers/net.ts';
import { deliveryReport, formatReport } from '../../../test/helpers/report.ts';
import { readingToAmqp } from '../../../bridges/amqp/map.ts';
import { messageId } from '../../../gateway/readings.ts';

function pct(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * A raw rhea sender: `messages` messages from `make`, unsettled, at most `window` unaccepted; done when all were
 * accepted and, with a consumer, when the consumer has them all.
 */
async function rawSender(port: number, address: string, messages: number, window: number, make: (i: number) => Message, consumer?: AmqpConsumer): Promise<{ msgsPerS: number; ms: number }> {
  const conn = await connectAmqp(port);
  const sender = conn.open_sender({ target: { address, durable: 1 } });
  await new Promise<void>((resolve) => sender.once('sendable', () => resolve()));
  let sent = 0;
  let accepted = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const finished = (): boolean => accepted >= messages && (!consumer || consumer.messages.length >= messages);
    const pump = (): void => {
      while (sent < messages && sent - accepted < window && sender.sendable()) sender.send(make(sent++));
    };
    sender.on('accepted', () => { accepted++; if (finished()) resolve(); else pump(); });
    sender.on('sendable', pump);
    pump();
    if (consumer) { const check = setInterval(() => { if (finished()) { clearInterval(check); resolve(); } }, 50); }
  });
  const ms = performance.now() - t0;
  conn.close();
  return { msgsPerS: (messages / ms) * 1000, ms };
}

/** The light reference: `bodyBytes` of padding and three properties, to a queue nobody reads. */
function rawReference(port: number, messages: number, window: number, bodyBytes: number): Promise<{ msgsPerS: number; ms: number }> {
  const body = rhea.message.data_section(Buffer.from(JSON.stringify({ pad: 'x'.repeat(Math.max(0, bodyBytes - 12)) })));
  return rawSender(port, '/queue/bench-raw', messages, window, (i) => ({ message_id: `raw-${i}`, durable: true, content_type: 'application/json', body }));
}

/**
 * The like-for-like reference: a raw rhea sender sending exactly what the gateway sends (readingToAmqp: the same
 * envelope body, properties and application properties) while the same consumer drains the queue, timed until the
 * consumer has them all, as the drain is. RabbitMQ's cost per message depends on its shape and on the consumer, so
 * the light publish-only reference above overstates what any sender could reach in the drain's setting.
 */
async function rawShaped(port: number, messages: number, window: number): Promise<{ msgsPerS: number; ms: number }> {
  const address = '/queue/bench-raw-shaped';
  const consumer = await amqpConsumer(port, address);
  const now = Date.now();
  const shaped = (i: number): Message => {
    const device = `r${i % 10}`;
    const seq = Math.floor(i / 10) + 1;
    const out = readingToAmqp({ device, ts: now, deviceSeq: seq, kind: 'json', payload: JSON.stringify({ v: i, seq: i }), link: 'mqtt', rowId: i + 1, seq, msgId: messageId('bench', device, seq), receivedAt: now }, 'bench', address);
    return { ...out, body: rhea.message.data_section(out.body) };
  };
  try { return await rawSender(port, address, messages, window, shaped, consumer); } finally { await consumer.close(); }
}

interface Paced { stop(): Promise<void>; published: number }

/** `devices` MQTT clients publishing QoS 1 telemetry at `rate` readings/s in total (10 ms ticks). */
async function pacedDevices(url: string, prefix: string, devices: number, rate: number): Promise<Paced> {
  const clients = await Promise.all(Array.from({ length: devices }, (_, i) => new Promise<mqtt.MqttClient>((resolve) => {
    const c = mqtt.connect(url, { clientId: `${prefix}${i}`, reconnectPeriod: 0 });
    c.once('connect', () => resolve(c));
  })));
  const tickMs = 10;
  const perTick = (rate * tickMs) / 1000 / devices;
  let carry = 0;
  let seq = 0;
  const p: Paced = {
    published: 0,
    async stop() { clearInterval(timer); await sleep(200); for (const c of clients) c.end(true); },
  };
  const timer = setInterval(() => {
    carry += perTick;
    const n = Math.floor(carry);
    carry -= n;
    for (let i = 0; i < clients.length; i++) {
      for (let k = 0; k < n; k++) { clients[i]!.publish(`devices/${prefix}${i}/telemetry`, JSON.stringify({ v: seq, seq: seq++ }), { qos: 1 }); p.published++; }
    }
  }, tickMs);
  return p;
}

export const amqpSection: BenchSection = {
  id: 'amqp',
  description: 'amqp upstream vs raw rhea -> RabbitMQ: backlog drain, live latency',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const messages = envNumber('BENCH_AMQP_MESSAGES', 100_000);
    const window = envNumber('BENCH_AMQP_WINDOW', 500);
    const backlog = envNumber('BENCH_AMQP_BACKLOG', 1_000_000);
    const liveSeconds = envNumber('BENCH_AMQP_LIVE_SECONDS', 8);
    const liveWarmupSeconds = envNumber('BENCH_AMQP_LIVE_WARMUP_SECONDS', 2);
    const drainLive = envNumber('BENCH_AMQP_DRAIN_LIVE', 1000);
    const notes: string[] = [];
    ctx.log('amqp: starting a private RabbitMQ');
    const rmq = await startRabbitMq();
    const cleanups: (() => Promise<void> | void)[] = [() => rmq.cleanup()];
    try {
      ctx.log(`amqp: raw rhea reference, ${messages} messages, window ${window}`);
      const raw = await rawReference(rmq.port, messages, window, 200);
      ctx.log(`amqp: raw rhea reference with the gateway's messages and a consumer, ${messages} messages`);
      const shaped = await rawShaped(rmq.port, messages, window);

      // One gateway for both runs; the consumer follows RabbitMQ through the outage below.
      const g = await startGatewayProc({
        log: { level: 'info' },
        mqtt: { openBroker: true },
        upstreams: [{ name: 'bench', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest', address: '/queue/bench-gw', maxInflight: window, reconnectMinMs: 50, reconnectMaxMs: 100 }],
      });
      cleanups.push(() => g.cleanup());
      const url = `mqtt://127.0.0.1:${g.mqttPort}`;
      const consumer = await amqpConsumer(rmq.port, '/queue/bench-gw', { reconnect: true });
      cleanups.push(() => consumer.close());
      await g.waitLog((l) => l.msg === 'upstream connected', 60_000);

      // Live first (the order), while this process holds little: the latency is stamped on receipt here,
      // so it must not include GC pauses over a million kept messages. Half the max rate: half of what RabbitMQ
      // took of the gateway's own messages in the shaped reference.
      const rate = Math.max(100, Math.round(shaped.msgsPerS / 2));
      ctx.log(`amqp: live forwarding at ${rate} readings/s, ${liveWarmupSeconds} s warm-up + ${liveSeconds} s`);
      const paced = await pacedDevices(url, 'live', 10, rate);
      // As in the mqtt section: the first seconds (JIT, the queue's first use) are not measured.
      await sleep(liveWarmupSeconds * 1000);
      const measureFrom = Date.now();
      await sleep(liveSeconds * 1000);
      const measureTo = Date.now();
      await paced.stop();
      await sleep(1000);
      const live = consumer.messages.filter((m) => String(m.body.device).startsWith('live') && Number(m.body.receivedAt) >= measureFrom && Number(m.body.receivedAt) < measureTo);
      const lat = live.map((m) => m.at - Number(m.body.receivedAt)).sort((a, b) => a - b);
      const liveRate = (live.length / liveSeconds);
      consumer.messages.length = 0;
      consumer.got.length = 0;
      consumer.keepMessages = false; // the drain is counted from the compact records alone

      // Backlog: the gateway stores readings while RabbitMQ is down.
      await rmq.stop('SIGTERM');
      await waitFor('upstream seen down', async () => (await g.health()).upstreams[0]?.connected === false, 30_000, 100);
      const devices = 10;
      const per = Math.ceil(backlog / devices);
      ctx.log(`amqp: storing a backlog of ${per * devices} readings with RabbitMQ down`);
      const sims = Array.from({ length: devices }, (_, i) => simulateDevice(url, `b${i}`, { window: 32, max: per }));
      await waitFor('backlog acked', () => sims.every((s) => s.acked.size === per), 600_000, 200);
      for (const s of sims) await s.stop();
      // Live ingest keeps flowing during the drain (BENCH_AMQP_DRAIN_LIVE readings/s).
      const during = drainLive > 0 ? await pacedDevices(url, 'during', 5, drainLive) : null;
      // The connect after this start, not the one before the live run (same machine clock for both).
      const restartedAt = Date.now();
      await rmq.start();
      const connected = await g.waitLog((l) => l.msg === 'upstream connected' && Number(l.time) >= restartedAt, 60_000);
      const drainStart = Number(connected.time);
      // Drained = every backlog reading has reached the consumer (live readings keep the outbox from being empty).
      // Counted incrementally: a full report every 50 ms would steal the CPU this process's consumer needs.
      let scanned = 0;
      const backlogIds = new Set<string>();
      await waitFor('backlog drained', () => {
        for (; scanned < consumer.got.length; scanned++) { const r = consumer.got[scanned]!; if (/^b\d+$/.test(r.device)) backlogIds.add(r.id); }
        return backlogIds.size >= per * devices;
      }, 600_000, 50);
      const drainMs = Date.now() - drainStart;
      await during?.stop();
      const duringDelivered = consumer.got.filter((r) => r.device.startsWith('during')).length;
      const drain = { readings: per * devices, ms: drainMs, msgsPerS: ((per * devices) / drainMs) * 1000, liveDuring: during?.published ?? 0, liveDuringDelivered: duringDelivered };
      await waitFor('consumer has the backlog', () => consumer.got.length >= per * devices, 60_000, 100).catch(() => undefined);
      const backlogReport = deliveryReport(sims, consumer.got);

      const tables = [{
        title: 'amqp: RabbitMQ 3.10 AMQP 1.0, unsettled sends acked on accepted',
        columns: [{ header: 'run' }, { header: 'messages', align: 'right' as const }, { header: 'msgs/s', align: 'right' as const }, { header: 'vs raw', align: 'right' as const }, { header: 'p50 ms', align: 'right' as const }, { header: 'p99 ms', align: 'right' as const }],
        rows: [
          ['raw rhea sender (reference)', fmt.int(messages), fmt.int(raw.msgsPerS), '1.00x', '', ''],
          ['raw rhea, gateway-shaped + consumer', fmt.int(messages), fmt.int(shaped.msgsPerS), fmt.ratio(shaped.msgsPerS, raw.msgsPerS), '', ''],
          ['gateway: backlog drain', fmt.int(drain.readings), fmt.int(drain.msgsPerS), fmt.ratio(drain.msgsPerS, raw.msgsPerS), '', ''],
          ['gateway drain / shaped reference', '', '', fmt.ratio(drain.msgsPerS, shaped.msgsPerS), '', ''],
          [`gateway: live at ${fmt.int(rate)}/s`, fmt.int(live.length), fmt.int(liveRate), fmt.ratio(liveRate, raw.msgsPerS), fmt.ms(pct(lat, 50)), fmt.ms(pct(lat, 99))],
        ],
      }];
      notes.push(`backlog delivery: ${formatReport(backlogReport)}`);
      notes.push(`during the drain, live devices published ${fmt.int(drain.liveDuring)} readings (${fmt.int(drainLive)}/s); ${fmt.int(drain.liveDuringDelivered)} reached the consumer by the end of the drain`);
      notes.push('live latency is gateway receipt -> consumer receipt (same clock); readings leave in row order, so live readings stored during a drain queue behind the backlog unless they are in the priority lane (outbox.priority)');
      notes.push('"vs raw" is against the light publish-only reference (200 B body, three properties, nobody consuming); the shaped reference sends the gateway\'s own messages with the same consumer attached, as in the drain');
      if (drain.msgsPerS < 0.8 * raw.msgsPerS) notes.push(`drain is below 0.8x the publish-only reference (${fmt.ratio(drain.msgsPerS, raw.msgsPerS)})`);
      if (drain.msgsPerS < 0.8 * shaped.msgsPerS) notes.push(`drain is below 0.8x the shaped reference (${fmt.ratio(drain.msgsPerS, shaped.msgsPerS)})`);
      return { tables, notes, data: { raw, shaped, drain, live: { rate, received: live.length, p50: pct(lat, 50), p99: pct(lat, 99), max: lat[lat.length - 1] }, backlogReport } };
    } finally {
      for (const c of cleanups.reverse()) await c();
    }
  },
};
