// The AMQP upstream over TLS against a real RabbitMQ TLS listener that demands a client certificate: verified server
// certificate (the config's CA), the client certificate and key from the config, SASL PLAIN inside TLS and SASL
// EXTERNAL (the certificate is the identity); a CA that does not match fails with a clear line and loses nothing.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { amqpConsumer } from './helpers/amqp.ts'
import { simulateDevice, audit } from './helpers/load.ts'
import { waitFor, freePort, tempDir } from './helpers/net.ts'
import { makeCa, issueCert, type CertFiles } from './helpers/certs.ts'
import { parse, stringify } from 'yaml'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const certs = tempDir('edgeway-amqp-certs-')
cleanups.push(() => certs.cleanup())
const CLIENT_CN = 'edgeway-gw'
let ca: CertFiles, otherCa: CertFiles, server: CertFiles, client: CertFiles, strangerCert: CertFiles

/** A CA, a server certificate for 127.0.0.1/localhost and client certificates signed by it; an unrelated CA. */
function makeCertificates(): void {
  ca = makeCa(certs.dir, 'ca', 'edgeway test CA')
  // Trusting this one instead must fail verification.
  otherCa = makeCa(certs.dir, 'other-ca', 'some other CA')
  server = issueCert(certs.dir, ca, 'server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1')
  client = issueCert(certs.dir, ca, 'client', CLIENT_CN, 'extendedKeyUsage=clientAuth')
  // Valid, but its CN is no RabbitMQ user.
  strangerCert = issueCert(certs.dir, ca, 'stranger', 'stranger', 'extendedKeyUsage=clientAuth')
}

let rmq: RabbitMq
let tlsPort: number
before(async () => {
  makeCertificates()
  tlsPort = await freePort()
  rmq = await startRabbitMq({
    plugins: ['rabbitmq_auth_mechanism_ssl'],
    conf: [
      `listeners.ssl.1 = 127.0.0.1:${tlsPort}`,
      `ssl_options.cacertfile = ${ca.cert}`,
      `ssl_options.certfile = ${server.cert}`,
      `ssl_options.keyfile = ${server.key}`,
      'ssl_options.verify = verify_peer',
      'ssl_options.fail_if_no_peer_cert = true',
      'auth_mechanisms.1 = PLAIN',
      'auth_mechanisms.2 = EXTERNAL',
      'ssl_cert_login_from = common_name',
    ],
  })
  cleanups.push(() => rmq.cleanup())
  // SASL EXTERNAL maps the certificate's CN to a RabbitMQ user, which must exist and have permissions.
  for (const args of [['add_user', CLIENT_CN, 'not-used-by-external'], ['set_permissions', '-p', '/', CLIENT_CN, '.*', '.*', '.*']]) {
    const r = await rmq.ctl(args)
    assert.equal(r.code, 0, `rabbitmqctl ${args[0]}: ${r.out}`)
  }
})

async function gateway(upstream: Record<string, unknown>): Promise<GatewayProc> {
  const g = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [{ name: 'cloud', type: 'amqp', host: '127.0.0.1', port: tlsPort, reconnectMinMs: 100, reconnectMaxMs: 500, ...upstream }],
  })
  cleanups.push(() => g.cleanup())
  return g
}

test('TLS with a verified server certificate and a client certificate, SASL PLAIN inside: every reading arrives; an untrusted server certificate is a clear error and loses nothing', async () => {
  const queue = '/queue/tls-plain'
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  const tls = { ca: otherCa.cert, cert: client.cert, key: client.key }
  const g = await gateway({ address: queue, username: 'guest', password: 'guest', tls })
  const failed = await g.waitLog((l) => l.msg.startsWith('upstream connect failed'), 15000)
  assert.match(String(failed.err), /certificate/i, 'the log line names the certificate problem')
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 't1', { window: 8, max: 200 })
  await waitFor('acked while the upstream is refused', () => sim.acked.size === 200, 15000)
  assert.equal(consumer.got.length, 0, 'nothing reached RabbitMQ over an unverified link')

  // The right CA: the same readings go out over TLS.
  await g.stop()
  const cfg = parse(readFileSync(g.configFile, 'utf8')) as { upstreams: Record<string, unknown>[] }
  cfg.upstreams[0]!.tls = { ...tls, ca: ca.cert }
  writeFileSync(g.configFile, stringify(cfg))
  await g.start()
  await g.waitLog((l) => l.msg === 'upstream connected', 15000)
  await waitFor('all delivered', () => audit([sim], consumer.got).missing.length === 0, 20000, 100)
  const report = audit([sim], consumer.got)
  assert.equal(report.duplicates, 0)
  assert.deepEqual(report.outOfOrder, [])
  await sim.stop()
})

test('SASL EXTERNAL: the client certificate is the identity (no password in the config); readings arrive; a certificate naming no RabbitMQ user is refused', async () => {
  const queue = '/queue/tls-external'
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  // Same CA, valid certificate, but its CN is no RabbitMQ user: TLS succeeds, SASL EXTERNAL does not.
  const stranger = await gateway({ address: queue, sasl: 'EXTERNAL', tls: { ca: ca.cert, cert: strangerCert.cert, key: strangerCert.key } })
  const refused = await stranger.waitLog((l) => l.msg.startsWith('upstream connect failed'), 15000)
  assert.match(String(refused.err), /auth|unauthori[sz]ed|stranger|EXTERNAL/i)
  await stranger.stop()

  const g = await gateway({ address: queue, sasl: 'EXTERNAL', tls: { ca: ca.cert, cert: client.cert, key: client.key } })
  await g.waitLog((l) => l.msg === 'upstream connected', 15000)
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'x1', { window: 8, max: 100 })
  await waitFor('all acked', () => sim.acked.size === 100, 15000)
  await waitFor('all delivered', () => audit([sim], consumer.got).missing.length === 0, 20000, 100)
  assert.equal(audit([sim], consumer.got).duplicates, 0)
  await sim.stop()
})
