// The control socket: CLI commands reach the running gateway; a second gateway on the same data dir is refused.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { createConnection } from 'node:net'
import { startGatewayProc } from './helpers/gateway.ts'

test('edgeway status answers through the control socket; a second gateway on the same data dir stops with the reason', async () => {
  const g = await startGatewayProc()
  let other: Awaited<ReturnType<typeof startGatewayProc>> | null = null
  try {
    const r = await g.cli(['status'])
    assert.equal(r.code, 0, r.stderr)
    const h = JSON.parse(r.stdout) as { status: string; gateway: string }
    assert.equal(h.status, 'ok')
    assert.equal(h.gateway, 'test-gw')
    assert.equal(statSync(join(g.dataDir, 'control.sock')).mode & 0o777, 0o600, 'only the owner may use it')

    // Unknown methods and garbage get an error line; the gateway keeps serving.
    const answer = await new Promise<string>((resolve, reject) => {
      const c = createConnection(join(g.dataDir, 'control.sock'))
      let buf = ''
      c.on('data', (d) => { buf += d.toString(); if (buf.split('\n').length > 2) { c.destroy(); resolve(buf) } })
      c.on('error', reject)
      c.write('not json\n{"id":7,"method":"nope"}\n')
    })
    const [bad, unknown] = answer.trim().split('\n').map((l) => JSON.parse(l) as { id: number; error: string })
    assert.match(bad!.error, /bad control request/)
    assert.equal(unknown!.id, 7)
    assert.match(unknown!.error, /unknown control method "nope" \(known: .*status/)

    other = await startGatewayProc({}, { dataDir: g.dataDir, start: false })
    await assert.rejects(other.start(), /another edgeway is running with this data dir/)
    assert.equal((await g.cli(['status'])).code, 0, 'the first gateway is untouched')

    // After a crash the socket file is left behind: the next start replaces it.
    await g.kill()
    const down = await g.cli(['status'])
    assert.equal(down.code, 3)
    assert.match(down.stderr, /gateway is not running with data dir/)
    await g.start()
    assert.equal((await g.cli(['status'])).code, 0)
  } finally {
    await other?.cleanup()
    await g.cleanup()
  }
})
