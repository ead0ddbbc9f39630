/**
 * Section `serial`: the sensor-node firmware (benchmark build: INTERVAL_MS=0 samples whenever its ack window has
 * room) in the simulated ATmega328P at 115200 baud, the gateway (child process) reading its pty, readings forwarded
 * to a private Mosquitto and checked for gaps there.
 *   1. throughput: readings/s stored, the bytes/s that puts on the line vs the physical 11,520 bytes/s (8N1),
 *      frames lost (gaps in the board's own counter), damaged frames, gateway CPU per link
 *   2. flash: a 16 KiB image through the Arduino bootloader (STK500v1, 57600 baud) with read-back verify
 * Env: BENCH_SERIAL_SECONDS=10 BENCH_SERIAL_WINDOW=4 (firmware ack window) BENCH_SERIAL_SYNC=FULL (outbox.synchronous)
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt } from '../lib/table.ts';
import { readCpuTicks } from '../lib/proc-metrics.ts';
import { startGatewayProc } from '../../../test/helpers/gateway.ts';
import { startMosquitto } from '../../../test/helpers/mosquitto.ts';
import { buildSimBoard, requireBootloader, startSimBoard } from '../../../test/helpers/simavr.ts';
import { waitFor } from '../../../test/helpers/net.ts';
import { encodeFrame, encodeReadingPayload, FrameType } from '../../../devices/serial/framing.ts';
import { flashBoard } from '../../../devices/flash/flasher.ts';
import { boardProfile } from '../../../devices/flash/boards.ts';

const LINE_BYTES_PER_S = 115200 / 10; // 8N1: 10 bits per byte

async function throughput(ctx: BenchContext, seconds: number, window: number, synchronous: string): Promise<Record<string, number>> {
  const build = buildSimBoard({ version: 'bench', intervalMs: 0, window });
  const mosq = await startMosquitto();
  const path = join(build.dir, 'uart0');
  const board = await startSimBoard(build, path);
  const up = mqtt.connect(`mqtt://127.0.0.1:${mosq.port}`, { reconnectPeriod: 100 });
  const counts: number[] = [];
  up.on('message', (_t, p) => {
    const m = (JSON.parse(p.toString()) as { metrics?: { count?: number } }).metrics;
    if (typeof m?.count === 'number') counts.push(m.count);
  });
  await new Promise<void>((resolve) => up.once('connect', () => resolve()));
  await up.subscribeAsync('edgeway/#', { qos: 1 });
  const g = await startGatewayProc({
    outbox: { synchronous },
    serial: { ports: [{ device: 'bench-node', path, baudRate: 115200, reopenMinMs: 100, reopenMaxMs: 500 }] },
    upstreams: [{ name: 'ref', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 1000 }],
  });
  try {
    await waitFor('first readings', () => counts.length > 20, 20000);
    await sleep(1000); // warm-up
    const in0 = await g.metric('edgeway_messages_in_total', { link: 'serial' });
    const cpu0 = readCpuTicks(g.proc.pid!) ?? 0;
    const sim0 = readCpuTicks(board.pid) ?? 0;
    const from = counts.length;
    const t0 = performance.now();
    ctx.log(`serial: measuring ${seconds} s`);
    await sleep(seconds * 1000);
    const in1 = await g.metric('edgeway_messages_in_total', { link: 'serial' });
    const cpu1 = readCpuTicks(g.proc.pid!) ?? 0;
    const sim1 = readCpuTicks(board.pid) ?? 0;
    const s = (performance.now() - t0) / 1000;
    await sleep(1500); // let the forwarder catch up before looking for gaps
    const window_ = counts.slice(from).sort((a, b) => a - b);
    const unique = new Set(window_);
    const lo = window_[0] ?? 0;
    const hi = window_[window_.length - 1] ?? 0;
    const lost = hi - lo + 1 - unique.size;
    const damaged = await g.metric('edgeway_serial_frames_total', { device: 'bench-node', result: 'bad' }) + await g.metric('edgeway_serial_frames_total', { device: 'bench-node', result: 'resync' });
    // bytes one reading takes on the line, board -> gateway: the frame as the firmware sends it (with its two 0x00 delimiters)
    const sample = encodeReadingPayload({ adc0: 511, count: 100000, sim: 250, skipped: 0 });
    const frameBytes = encodeFrame({ type: FrameType.READING, seq: 1, payload: sample }).length;
    const rate = (in1 - in0) / s;
    return {
      readingsPerS: rate, frameBytes, lineBytesPerS: rate * frameBytes, lineUse: (rate * frameBytes) / LINE_BYTES_PER_S,
      lost, duplicates: window_.length - unique.size, damaged, gatewayCpu: (cpu1 - cpu0) / 100 / s, simboardCpu: (sim1 - sim0) / 100 / s,
    };
  } finally {
    await g.cleanup();
    up.end(true);
    await board.stop();
    await mosq.stop();
    build.cleanup();
  }
}

async function flashTime(ctx: BenchContext): Promise<Record<string, number>> {
  const build = buildSimBoard({ version: 'bench' });
  const path = join(build.dir, 'uart0');
  const board = await startSimBoard(build, path, { bootloader: requireBootloader() });
  try {
    ctx.log('serial: flashing 16 KiB');
    const r = await flashBoard({ port: path, board: boardProfile('nano'), baud: 57600, image: { data: randomBytes(16384), base: 0, bytesSet: 16384 } });
    return { bytes: r.bytes, totalMs: r.totalMs, syncMs: r.syncMs, writeMs: r.writeMs, verifyMs: r.verifyMs, writeBytesPerS: r.bytes / (r.writeMs / 1000) };
  } finally {
    await board.stop();
    build.cleanup();
  }
}

export const serialSection: BenchSection = {
  id: 'serial',
  description: 'sensor-node firmware in simavr at 115200 baud: readings/s vs the line limit, frame loss, gateway CPU; 16 KiB flash time',
  async run(ctx): Promise<SectionReport> {
    const seconds = envNumber('BENCH_SERIAL_SECONDS', 10);
    const window = envNumber('BENCH_SERIAL_WINDOW', 4);
    const sync = process.env.BENCH_SERIAL_SYNC === 'NORMAL' ? 'NORMAL' : 'FULL';
    const t = await throughput(ctx, seconds, window, sync);
    const f = await flashTime(ctx);
    const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
    return {
      tables: [{
        title: `serial link, binary framing at 115200 baud (ack window ${window}, outbox synchronous=${sync}, ${seconds} s)`,
        columns: [{ header: 'readings/s' }, { header: 'frame bytes' }, { header: 'line bytes/s' }, { header: 'of 11,520' }, { header: 'lost' }, { header: 'dup' }, { header: 'damaged' }, { header: 'gateway CPU' }, { header: 'simboard CPU' }],
        rows: [[fmt.int(t.readingsPerS), fmt.int(t.frameBytes), fmt.int(t.lineBytesPerS), pct(t.lineUse!), fmt.int(t.lost), fmt.int(t.duplicates), fmt.int(t.damaged), pct(t.gatewayCpu!), pct(t.simboardCpu!)]],
        notes: [
          'each reading is acked only after its durable outbox commit; the ack window bounds the readings in flight',
          'the simulated line tops out at 10,695 bytes/s: 115200 is really 117,647 baud (UBRR 16, U2X) and simavr counts 11 bits a byte',
        ],
      }, {
        title: 'flash a 16 KiB image (STK500v1 through ATmegaBOOT, 57600 baud, write + read-back verify)',
        columns: [{ header: 'total s' }, { header: 'sync s' }, { header: 'write s' }, { header: 'verify s' }, { header: 'write bytes/s' }],
        rows: [[(f.totalMs! / 1000).toFixed(2), (f.syncMs! / 1000).toFixed(2), (f.writeMs! / 1000).toFixed(2), (f.verifyMs! / 1000).toFixed(2), fmt.int(f.writeBytesPerS)]],
        notes: ['line limit at 57600 8N1: 5,760 bytes/s each way'],
      }],
      notes: [],
      data: { throughput: t, flash: f },
    };
  },
};
