/**
 * Section `xmpp`: the XMPP bridge against a private Prosody 0.12, same machine, same run.
 *   1. reference: a raw @xmpp/component publishing to Prosody's PubSub (memory item store), window BENCH_XMPP_WINDOW
 *   2. backlog drain: BENCH_XMPP_BACKLOG readings stored while Prosody is down, then Prosody starts; time from
 *      "pubsub upstream ready" until the gateway has every reading acked by PubSub IQ results
 *   3. presence latency: BENCH_XMPP_DROPS devices, each subscribed by an XMPP user, drop their MQTT connection
 *      abruptly; time from the socket close to the user receiving `unavailable`
 * Prosody's persistent item stores are much slower (SQL ~60 publishes/s, the file store degrades as nodes grow):
 * the figures here are for the gateway's path, with a memory item store.
 */
import mqtt from 'mqtt';
import componentPkg from '@xmpp/component';
import { xml } from '@xmpp/client';
import { envNumber, type BenchContext, type BenchSection, type SectionReport } from '../lib/section.ts';
import { fmt } from '../lib/table.ts';
import { startProsody } from '../../../test/helpers/prosody.ts';
import { startGatewayProc } from '../../../test/helpers/gateway.ts';
import { simulateDevice } from '../../../test/helpers/load.ts';
import { waitFor } from '../../../test/helpers/net.ts';
import { xmppUser } from '../../../test/helpers/xmpp.ts';

function pct(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function rawReference(port: number, domain: string, secret: string, messages: number, window: number): Promise<{ msgsPerS: number; ms: number }> {
  const c = componentPkg.component({ service: `xmpp://127.0.0.1:${port}`, domain, password: secret });
  c.on('error', () => undefined);
  await c.start();
  const ps = { xmlns: 'http://jabber.org/protocol/pubsub' };
  // Ten nodes like the gateway's ten devices, configured the same way (Prosody's cost per publish grows with the node).
  const form = xml('configure', {}, xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
    xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, 'http://jabber.org/protocol/pubsub#node_config')),
    xml('field', { var: 'pubsub#max_items' }, xml('value', {}, '100000'))));
  for (let n = 0; n < 10; n++) await c.iqCaller.request(xml('iq', { type: 'set', to: 'pubsub.localhost' }, xml('pubsub', ps, xml('create', { node: `raw${n}` }), form)), 30000);
  const body = JSON.stringify({ id: 'x', device: 'raw', seq: 1, ts: Date.now(), metrics: { v: 1, pad: 'x'.repeat(60) } });
  let sent = 0;
  let done = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const pump = (): void => {
      while (sent < messages && sent - done < window) {
        const id = `r${sent++}`;
        c.iqCaller.request(xml('iq', { type: 'set', to: 'pubsub.localhost' }, xml('pubsub', ps, xml('publish', { node: `raw${sent % 10}` }, xml('item', { id }, xml('json', { xmlns: 'urn:xmpp:json:0' }, body))))), 30000)
          .then(() => { if (++done === messages) resolve(); else pump(); }, reject);
      }
    };
    pump();
  });
  const ms = performance.now() - t0;
  await c.stop().catch(() => undefined);
  return { msgsPerS: (messages / ms) * 1000, ms };
}

export const xmppSection: BenchSection = {
  id: 'xmpp',
  description: 'xmpp bridge vs raw @xmpp/component -> Prosody PubSub: backlog drain; presence latency after a drop',
  async run(ctx: BenchContext): Promise<SectionReport> {
    const messages = envNumber('BENCH_XMPP_MESSAGES', 5_000);
    const window = envNumber('BENCH_XMPP_WINDOW', 200);
    const backlog = envNumber('BENCH_XMPP_BACKLOG', 5_000);
    const drops = envNumber('BENCH_XMPP_DROPS', 20);
    const notes: string[] = [];
    ctx.log('xmpp: starting a private Prosody (PubSub with a memory item store)');
    const p = await startProsody({ pubsub: true, pubsubStorage: 'memory' });
    const cleanups: (() => Promise<void> | void)[] = [() => p.cleanup()];
    try {
      ctx.log(`xmpp: raw component reference, ${messages} publishes, window ${window}`);
      const raw = await rawReference(p.componentPort, p.componentDomain, p.secret, messages, window);

      await p.stop();
      const g = await startGatewayProc({
        mqtt: { openBroker: true },
        xmpp: {
          enabled: true, server: { host: '127.0.0.1', port: p.componentPort }, component: { domain: p.componentDomain, secret: p.secret },
          reconnectMinMs: 50, reconnectMaxMs: 100, allow: [{ jids: ['*'] }], alerts: { offline: false },
          pubsub: { enabled: true, service: 'pubsub.localhost', maxInflight: window, maxItems: 100000 },
        },
      });
      cleanups.push(() => g.cleanup());
      const url = `mqtt://127.0.0.1:${g.mqttPort}`;
      const devices = 10;
      const per = Math.ceil(backlog / devices);
      ctx.log(`xmpp: storing a backlog of ${per * devices} readings with Prosody down`);
      const sims = Array.from({ length: devices }, (_, i) => simulateDevice(url, `b${i}`, { window: 32, max: per }));
      await waitFor('backlog acked', () => sims.every((s) => s.acked.size === per), 600_000, 200);
      for (const s of sims) await s.stop();
      await p.start();
      const ready = await g.waitLog((l) => l.msg === 'pubsub upstream ready', 60_000);
      await waitFor('backlog published', async () => (await g.metric('edgeway_messages_out_total', { upstream: 'xmpp' })) >= per * devices, 600_000, 100);
      const drainMs = Date.now() - Number(ready.time);
      const drain = { readings: per * devices, ms: drainMs, msgsPerS: ((per * devices) / drainMs) * 1000 };

      ctx.log(`xmpp: presence latency over ${drops} abrupt device drops`);
      const user = await xmppUser(p, 'bench');
      cleanups.push(() => user.stop());
      const lat: number[] = [];
      for (let i = 0; i < drops; i++) {
        const id = `pl${i}`;
        const c = mqtt.connect(url, { clientId: id, reconnectPeriod: 0 });
        await new Promise<void>((resolve) => c.once('connect', () => resolve()));
        await c.publishAsync(`devices/${id}/telemetry`, '{"v":1}', { qos: 1 });
        const from = user.got.length;
        await user.send(xml('presence', { to: `${id}@${p.componentDomain}`, type: 'subscribe' }));
        await user.wait('available', (s) => s.name === 'presence' && s.attrs.from === `${id}@${p.componentDomain}` && !s.attrs.type, 10000, from);
        const f2 = user.got.length;
        const t0 = performance.now();
        c.stream.destroy();
        await user.wait('unavailable', (s) => s.name === 'presence' && s.attrs.from === `${id}@${p.componentDomain}` && s.attrs.type === 'unavailable', 10000, f2);
        lat.push(performance.now() - t0);
        c.end(true);
      }
      lat.sort((a, b) => a - b);

      const tables = [{
        title: 'xmpp: Prosody 0.12 PubSub (memory item store), publishes acked on the IQ result',
        columns: [{ header: 'run' }, { header: 'readings', align: 'right' as const }, { header: 'msgs/s', align: 'right' as const }, { header: 'vs raw', align: 'right' as const }],
        rows: [
          ['raw @xmpp/component (reference)', fmt.int(messages), fmt.int(raw.msgsPerS), '1.00x'],
          ['gateway: backlog drain', fmt.int(drain.readings), fmt.int(drain.msgsPerS), fmt.ratio(drain.msgsPerS, raw.msgsPerS)],
        ],
      }, {
        title: 'xmpp: presence latency, abrupt MQTT drop -> subscriber gets unavailable',
        columns: [{ header: 'drops', align: 'right' as const }, { header: 'p50 ms', align: 'right' as const }, { header: 'p99 ms', align: 'right' as const }, { header: 'max ms', align: 'right' as const }],
        rows: [[fmt.int(lat.length), fmt.ms(pct(lat, 50)), fmt.ms(pct(lat, 99)), fmt.ms(lat[lat.length - 1])]],
      }];
      notes.push('the raw reference runs first, against a cold Prosody, from this process (which also runs the MQTT devices and the XMPP user): read it as a floor, not a ceiling');
      notes.push('Prosody persistent item stores are far slower than this path: SQL (lua-dbi-sqlite3) ~60 publishes/s, the file store degrades as a node grows');
      return { tables, notes, data: { raw, drain, presence: { drops: lat.length, p50: pct(lat, 50), p99: pct(lat, 99), max: lat[lat.length - 1] } } };
    } finally {
      for (const c of cleanups.reverse()) await c();
    }
  },
};
