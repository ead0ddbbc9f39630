/**
 * Bare aedes (the installed version: 2.0.0-beta.1), in-memory persistence, default options (but a topic alias maximum), on a plain
 * `net` server: the reference the gateway's embedded broker is compared with.
 *
 *   node --import tsx scripts/bench/bare-aedes.ts <port> [host]
 *
 * Deliberately free of TypeScript-only syntax, so the bench can also run this
 * very file under plain node (`node --input-type=module -e <source>`, port and
 * host then come from BARE_AEDES_PORT / BARE_AEDES_HOST) to show the cost of
 * the tsx loader that the gateway is run with.
 */
import net from 'node:net';
import { Aedes } from 'aedes';

const args = process.argv.slice(1).filter((a) => !a.endsWith('.ts'));
const port = Number(process.env.BARE_AEDES_PORT ?? args[0]);
const host = process.env.BARE_AEDES_HOST ?? args[1] ?? '127.0.0.1';
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: bare-aedes.ts <port> [host]\n');
  process.exit(2);
}

// topicAliasMaximum: aedes 2 accepts no topic aliases by default; the MQTT 5 + alias run needs one (the gateway advertises 32).
const broker = await Aedes.createBroker({ topicAliasMaximum: 32 });
const server = net.createServer((socket) => {
  broker.handle(socket);
});
server.listen(port, host, () => {
  process.stdout.write(`bare-aedes listening on ${host}:${port}\n`);
});

const shutdown = () => {
  server.close();
  broker.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
