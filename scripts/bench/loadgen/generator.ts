/**
 * Load-generator process (started by loadgen/index.ts with an IPC channel).
 *
 * Raw `net` sockets + mqtt-packet: MQTT.js cannot saturate the brokers under
 * test. CONNECT is generated and every inbound packet parsed with mqtt-packet;
 * QoS 1 PUBLISHes are stamped from a per-connection template (checked once
 * byte-for-byte against mqtt-packet.generate) so the generator spends its core
 * on the socket work rather than on encoding. MQTT 5 (cfg.protocolVersion 5):
 * the same PUBLISH with an empty property block, or, with cfg.topicAlias, the
 * first one setting topic alias 1 and every later one an empty topic plus the
 * alias (two templates, both checked the same way).
 */
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import { LatencyHistogram } from '../lib/histogram.ts';
import {
  isParentMessage,
  type GeneratorConfig,
  type GeneratorMessage,
  type ParentMessage,
} from './protocol.ts';

const SLOT_MASK = 1023; // send-time ring indexed by messageId & SLOT_MASK (window <= 1024)

function send(msg: GeneratorMessage): void {
  process.send?.(msg);
}

const PREFIX = '{"t":21.5,"h":40.1,"seq":';
const PAD_KEY = ',"pad":"';

/** Payload tails (`,"pad":"xxx"}`) by digit count of seq, so the payload stays payloadBytes long. */
function buildTails(payloadBytes: number): Buffer[] {
  const tails: Buffer[] = [];
  for (let d = 0; d <= 16; d++) {
    const pad = Math.max(0, payloadBytes - PREFIX.length - d - PAD_KEY.length - 2);
    tails.push(Buffer.from(`${PAD_KEY}${'x'.repeat(pad)}"}`, 'latin1'));
  }
  return tails;
}

function payloadFor(seq: number, tails: Buffer[]): Buffer {
  const s = String(seq);
  return Buffer.concat([Buffer.from(PREFIX + s, 'latin1'), tails[s.length] ?? Buffer.alloc(0)]);
}

function encodeRemainingLength(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** Fixed header + topic for a PUBLISH whose variable part (packet id, properties, payload) is `rest` bytes. */
function publishHead(topic: Buffer, rest: number): Buffer {
  return Buffer.concat([
    Buffer.from([0x32, ...encodeRemainingLength(2 + topic.length + rest)]),
    Buffer.from([topic.length >> 8, topic.length & 0xff]),
    topic,
  ]);
}

/** MQTT 5 property blocks (length byte + properties) after the packet id. */
const NO_PROPS = Buffer.from([0]);
const ALIAS_1 = Buffer.from([3, 0x23, 0, 1]);

class Conn {
  readonly sock: net.Socket;
  readonly parser: ReturnType<typeof mqttPacket.parser>;
  private head: Buffer; // fixed header + topic (the current template)
  private props: Buffer; // MQTT 5 property block, empty for 3.1.1
  private readonly aliasHead: Buffer | null; // MQTT 5 topic alias: the template after the first PUBLISH
  private readonly prefix = Buffer.from(PREFIX, 'latin1');
  private readonly tails: Buffer[];
  private readonly payloadLen: number;
  private readonly sendTimes = new Float64Array(SLOT_MASK + 1);
  private nextId = 1;
  private seq = 0;
  inflight = 0;
  scheduled = 0;
  connected = false;
  closed = false;

  constructor(
    readonly clientId: string,
    private readonly gen: Generator,
  ) {
    const cfg = gen.cfg;
    const v5 = cfg.protocolVersion === 5;
    this.parser = mqttPacket.parser({ protocolVersion: v5 ? 5 : 4 });
    const topic = Buffer.from(cfg.topicTemplate.replaceAll('{clientId}', clientId), 'utf8');
    this.tails = buildTails(cfg.payloadBytes);
    const samplePayload = payloadFor(1, this.tails);
    this.payloadLen = samplePayload.length;
    this.props = !v5 ? Buffer.alloc(0) : cfg.topicAlias ? ALIAS_1 : NO_PROPS;
    const rest = 2 + this.props.length + this.payloadLen;
    this.head = publishHead(topic, rest);
    this.aliasHead = v5 && cfg.topicAlias ? publishHead(Buffer.alloc(0), rest) : null;
    // self-check: each template must produce exactly what mqtt-packet would
    const seqProbe = 123456;
    const check = (t: string, props: Record<string, unknown> | undefined): void => {
      const reference = mqttPacket.generate({
        cmd: 'publish',
        topic: t,
        payload: payloadFor(seqProbe, this.tails),
        qos: 1,
        messageId: 4242,
        retain: false,
        dup: false,
        ...(props ? { properties: props } : {}),
      } as Packet, { protocolVersion: v5 ? 5 : 4 });
      const mine = this.build(4242, seqProbe);
      if (!reference.equals(mine)) throw new Error(`PUBLISH template (${v5 ? 'MQTT 5' : '3.1.1'}${t === '' ? ', alias' : ''}) does not match mqtt-packet.generate`);
    };
    check(topic.toString('utf8'), v5 && cfg.topicAlias ? { topicAlias: 1 } : undefined);
    if (this.aliasHead) {
      const first = this.head;
      this.head = this.aliasHead;
      check('', { topicAlias: 1 });
      this.head = first;
    }

    this.sock = new net.Socket();
    this.sock.setNoDelay(true);
    this.parser.on('packet', (p: Packet) => this.onPacket(p));
    this.parser.on('error', (e: Error) => this.gen.fail(`parse error on ${clientId}: ${e.message}`));
    this.sock.on('data', (chunk: Buffer) => {
      // every PUBLISH triggered by this chunk's PUBACKs goes out in one writev
      this.sock.cork();
      this.parser.parse(chunk);
      this.sock.uncork();
    });
    this.sock.on('close', () => {
      if (!this.closed) this.gen.onDisconnect(this);
      this.closed = true;
      this.connected = false;
    });
    this.sock.on('error', () => undefined);
  }

  private build(id: number, seq: number): Buffer {
    const s = String(seq);
    const tail = this.tails[s.length] ?? Buffer.alloc(0);
    const buf = Buffer.allocUnsafe(this.head.length + 2 + this.props.length + this.payloadLen);
    let o = this.head.copy(buf, 0);
    buf[o++] = id >> 8;
    buf[o++] = id & 0xff;
    o += this.props.copy(buf, o);
    o += this.prefix.copy(buf, o);
    o += buf.write(s, o, 'latin1');
    tail.copy(buf, o);
    return buf;
  }

  connect(onDone: (err?: string) => void): void {
    const cfg = this.gen.cfg;
    let finished = false;
    const finish = (err?: string): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      onDone(err);
    };
    const timer = setTimeout(() => finish(`${this.clientId}: no CONNACK within ${cfg.connectTimeoutMs} ms`), cfg.connectTimeoutMs);
    this.onConnack = (rc: number): void => {
      if (rc === 0) {
        this.connected = true;
        finish();
      } else finish(`${this.clientId}: CONNACK returnCode ${rc}`);
    };
    this.sock.once('error', (e: Error) => finish(`${this.clientId}: ${e.message}`));
    this.sock.once('close', () => finish(`${this.clientId}: closed before CONNACK`));
    this.sock.connect({ host: cfg.host, port: cfg.port }, () => {
      this.sock.write(
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: cfg.protocolVersion === 5 ? 5 : 4,
          clean: true,
          clientId: this.clientId,
          keepalive: cfg.keepalive,
        }),
      );
    });
  }

  private onConnack: (rc: number) => void = () => undefined;

  private onPacket(p: Packet): void {
    switch (p.cmd) {
      case 'puback': {
        const id = p.messageId ?? 0;
        const t = this.sendTimes[id & SLOT_MASK] ?? 0;
        this.inflight--;
        this.gen.onAck((performance.now() - t) * 1000);
        if (this.gen.saturating) this.fill();
        break;
      }
      case 'connack':
        this.onConnack(p.returnCode ?? p.reasonCode ?? 0);
        break;
      case 'pingresp':
        break;
      default:
        break;
    }
  }

  sendOne(): void {
    const id = this.nextId;
    this.nextId = id === 65535 ? 1 : id + 1;
    const buf = this.build(id, ++this.seq);
    // after the PUBLISH that set the alias, the topic travels as alias 1 only
    if (this.aliasHead !== null && this.head !== this.aliasHead) this.head = this.aliasHead;
    this.sendTimes[id & SLOT_MASK] = performance.now();
    this.inflight++;
    this.sock.write(buf);
    this.gen.onSent();
  }

  /** Top the window up. */
  fill(): void {
    if (!this.connected) return;
    const w = this.gen.cfg.window;
    while (this.inflight < w) this.sendOne();
  }

  close(): void {
    this.closed = true;
    if (this.connected) {
      try {
        this.sock.end(mqttPacket.generate({ cmd: 'disconnect' }));
      } catch {
        this.sock.destroy();
      }
    } else this.sock.destroy();
  }
}

class Generator {
  conns: Conn[] = [];
  running = false;
  saturating = false;
  private hist = new LatencyHistogram();
  private acked = 0;
  private sent = 0;
  private skipped = 0;
  private disconnects = 0;
  private markAt = performance.now();
  private ticker: NodeJS.Timeout | undefined;
  private failed = false;

  constructor(readonly cfg: GeneratorConfig) {}

  fail(message: string): void {
    if (this.failed) return;
    this.failed = true;
    send({ type: 'error', message });
  }

  onAck(us: number): void {
    this.acked++;
    this.hist.record(us);
  }

  onSent(): void {
    this.sent++;
  }

  onDisconnect(_c: Conn): void {
    this.disconnects++;
  }

  async connectAll(): Promise<void> {
    const t0 = performance.now();
    this.conns = this.cfg.clientIds.map((id) => new Conn(id, this));
    let next = 0;
    let connected = 0;
    const errors: string[] = [];
    await new Promise<void>((resolve) => {
      let active = 0;
      const pump = (): void => {
        while (active < this.cfg.connectConcurrency && next < this.conns.length) {
          const c = this.conns[next++];
          if (c === undefined) break;
          active++;
          c.connect((err) => {
            active--;
            if (err === undefined) connected++;
            else errors.push(err);
            if (active === 0 && next >= this.conns.length) resolve();
            else pump();
          });
        }
        if (active === 0 && next >= this.conns.length) resolve();
      };
      pump();
    });
    if (errors.length > 0) {
      this.fail(`${errors.length}/${this.conns.length} connections failed, first: ${errors[0] ?? ''}`);
      return;
    }
    send({ type: 'ready', connected, connectMs: performance.now() - t0 });
  }

  start(): void {
    this.running = true;
    this.markAt = performance.now();
    const rate = this.cfg.ratePerClient;
    if (rate === null) {
      this.saturating = true;
      for (const c of this.conns) {
        c.sock.cork();
        c.fill();
        c.sock.uncork();
      }
      return;
    }
    // open-loop schedule: each connection sends at `rate`/s, phases staggered;
    // a send that finds the window full is dropped and counted as skipped
    const t0 = performance.now();
    const n = this.conns.length;
    const periodMs = 1000 / rate;
    const offsets = this.conns.map((_, i) => (i / n) * periodMs);
    const tick = (): void => {
      const now = performance.now();
      for (let i = 0; i < n; i++) {
        const c = this.conns[i];
        if (c === undefined || !c.connected) continue;
        const due = Math.floor(((now - t0 - (offsets[i] ?? 0)) * rate) / 1000) + 1;
        if (c.scheduled >= due) continue;
        c.sock.cork();
        while (c.scheduled < due) {
          c.scheduled++;
          if (c.inflight < this.cfg.window) c.sendOne();
          else this.skipped++;
        }
        c.sock.uncork();
      }
    };
    this.ticker = setInterval(tick, 1);
  }

  mark(): void {
    this.hist.reset();
    this.acked = 0;
    this.sent = 0;
    this.skipped = 0;
    this.disconnects = 0;
    this.markAt = performance.now();
    send({ type: 'marked' });
  }

  stop(): void {
    const elapsedMs = performance.now() - this.markAt;
    this.running = false;
    this.saturating = false;
    if (this.ticker !== undefined) clearInterval(this.ticker);
    send({
      type: 'result',
      result: {
        acked: this.acked,
        sent: this.sent,
        skipped: this.skipped,
        elapsedMs,
        disconnects: this.disconnects,
        histogram: this.hist.snapshot(),
      },
    });
  }

  close(): void {
    this.running = false;
    this.saturating = false;
    if (this.ticker !== undefined) clearInterval(this.ticker);
    for (const c of this.conns) c.close();
    setTimeout(() => process.exit(0), 200).unref();
    // exit once sockets are flushed/closed
    let open = this.conns.filter((c) => !c.sock.destroyed).length;
    if (open === 0) process.exit(0);
    for (const c of this.conns) {
      c.sock.once('close', () => {
        if (--open <= 0) process.exit(0);
      });
    }
  }
}

let gen: Generator | undefined;

process.on('message', (raw: unknown) => {
  if (!isParentMessage(raw)) return;
  const m: ParentMessage = raw;
  try {
    switch (m.type) {
      case 'init':
        gen = new Generator(m.config);
        void gen.connectAll().catch((e: unknown) => send({ type: 'error', message: String(e) }));
        break;
      case 'start':
        gen?.start();
        break;
      case 'mark':
        gen?.mark();
        break;
      case 'stop':
        gen?.stop();
        break;
      case 'close':
        if (gen) gen.close();
        else process.exit(0);
        break;
    }
  } catch (e) {
    send({ type: 'error', message: e instanceof Error ? e.message : String(e) });
  }
});

// parent gone -> exit (never outlive the bench)
process.on('disconnect', () => process.exit(0));
