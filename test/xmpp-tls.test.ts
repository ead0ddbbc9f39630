// Client mode over TLS against a real Prosody that requires encryption: STARTTLS on the c2s port and direct TLS
// (xmpps://, XEP-0368), with a server certificate from a private CA the gateway trusts through NODE_EXTRA_CA_CERTS
// (xmpp.js takes no CA option: Node's extra-CA variable is how the gateway's systemd unit or shell adds one).
// Without that CA the link fails with a clear certificate error and retries; it never falls back to plain text.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startProsody, type Prosody } from './helpers/prosody.ts'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { makeCa, issueCert, type CertFiles } from './helpers/certs.ts'
import { tempDir, pause } from './helpers/net.ts'

const certs = tempDir('edgeway-xmpp-certs-')
let ca: CertFiles
let p: Prosody
const gateways: GatewayProc[] = []

before(async () => {
  ca = makeCa(certs.dir, 'ca', 'edgeway test CA')
  p = await startProsody({ tls: issueCert(certs.dir, ca, 'server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1') })
  p.register('gw', 'gwpw')
})

after(async () => {
  for (const g of gateways) await g.cleanup()
  await p?.cleanup()
  certs.cleanup()
})

async function clientGateway(port: number, mode: 'none' | 'direct', env: NodeJS.ProcessEnv): Promise<GatewayProc> {
  const g = await startGatewayProc({
    xmpp: {
      enabled: true, mode: 'client',
      server: { host: '127.0.0.1', port },
      client: { jid: 'gw@localhost/edgeway', password: 'gwpw' },
      tls: { mode },
      reconnectMinMs: 200, reconnectMaxMs: 500,
    },
  }, { env })
  gateways.push(g)
  return g
}

test('STARTTLS (required by the server) with the private CA trusted: the gateway comes online; without it, a certificate error and no plain-text fallback', async () => {
  const trusted = await clientGateway(p.c2sPort, 'none', { NODE_EXTRA_CA_CERTS: ca.cert })
  await trusted.waitLog((l) => l.msg === 'xmpp presence announced', 15000)

  const untrusted = await clientGateway(p.c2sPort, 'none', { NODE_EXTRA_CA_CERTS: '' })
  const failed = await untrusted.waitLog((l) => l.msg === 'xmpp connect failed: retrying with backoff', 15000)
  assert.match(String(failed.err), /certificate|self[- ]signed|unable to verify/i)
  await pause(1500) // several retries
  assert.equal(untrusted.logs.some((l) => l.msg === 'xmpp presence announced'), false, 'never online without a verified certificate')
  assert.equal(untrusted.proc.exitCode, null, 'still running')
})

test('direct TLS (xmpps://) with the private CA trusted: online; without it, a certificate error', async () => {
  const trusted = await clientGateway(p.directTlsPort!, 'direct', { NODE_EXTRA_CA_CERTS: ca.cert })
  await trusted.waitLog((l) => l.msg === 'xmpp presence announced', 15000)

  const untrusted = await clientGateway(p.directTlsPort!, 'direct', { NODE_EXTRA_CA_CERTS: '' })
  const failed = await untrusted.waitLog((l) => l.msg === 'xmpp connect failed: retrying with backoff', 15000)
  assert.match(String(failed.err), /certificate|self[- ]signed|unable to verify/i)
})
