import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CommandRouter, type CommandTarget } from '../gateway/commands/router.ts'

function target(known: string[], online: string[]): CommandTarget & { sent: { device: string; name: string; payload: string }[] } {
  const sent: { device: string; name: string; payload: string }[] = []
  return {
    sent,
    isKnown: (d) => known.includes(d),
    isOnline: (d) => online.includes(d),
    send: async (device, name, payload) => { sent.push({ device, name, payload }) },
  }
}

test('a command goes to the device and resolves with its result', async () => {
  const t = target(['d1'], ['d1'])
  const r = new CommandRouter(t)
  const p = r.dispatch({ id: 'c1', device: 'd1', name: 'reboot', args: { delay: 5 } })
  await new Promise((res) => setImmediate(res))
  assert.deepEqual(t.sent, [{ device: 'd1', name: 'reboot', payload: '{"id":"c1","args":{"delay":5}}' }])
  assert.equal(r.handleResult('d2', 'reboot', '{"id":"c1","result":1}'), false, 'another device cannot answer it')
  assert.equal(r.handleResult('d1', 'reboot', '{"id":"c1","result":{"in":5}}'), true)
  assert.deepEqual(await p, { id: 'c1', device: 'd1', name: 'reboot', ok: true, result: { in: 5 } })
  assert.equal(r.handleResult('d1', 'reboot', '{"id":"c1","result":2}'), false, 'a duplicate result is ignored')
  assert.equal(r.inflight, 0)
})

test('device errors, unknown and offline devices, expired commands and timeouts all get an error result', async () => {
  let now = 1000
  const r = new CommandRouter(target(['d1', 'off'], ['d1']), { timeoutMs: 50, now: () => now })
  const p = r.dispatch({ id: 'e', device: 'd1', name: 'x', args: null })
  r.handleResult('d1', 'x', '{"id":"e","error":"no such relay"}')
  assert.deepEqual(await p, { id: 'e', device: 'd1', name: 'x', ok: false, code: 'device_error', error: 'no such relay' })
  assert.equal((await r.dispatch({ id: 'u', device: 'ghost', name: 'x', args: null }) as { code: string }).code, 'unknown_device')
  assert.equal((await r.dispatch({ id: 'o', device: 'off', name: 'x', args: null }) as { code: string }).code, 'offline')
  assert.equal((await r.dispatch({ id: 'x', device: 'd1', name: 'x', args: null, expiresAt: 999 }) as { code: string }).code, 'expired')
  assert.equal((await r.dispatch({ id: 'b', device: 'd1', name: 'no/slash', args: null }) as { code: string }).code, 'bad_request')
  const slow = await r.dispatch({ id: 't', device: 'd1', name: 'x', args: null })
  assert.deepEqual(slow, { id: 't', device: 'd1', name: 'x', ok: false, code: 'timeout', error: 'no result from the device within 50 ms' })
  now = 1000
  const ttl = await r.dispatch({ id: 'ttl', device: 'd1', name: 'x', args: null, expiresAt: 1020 })
  assert.equal((ttl as { code: string }).code, 'expired', 'the TTL ran out while waiting for the device')
})

test('a failed send and a stopping gateway resolve pending commands', async () => {
  const t = target(['d1'], ['d1'])
  t.send = async () => { throw new Error('broker closed') }
  const r = new CommandRouter(t)
  assert.deepEqual(await r.dispatch({ id: 's', device: 'd1', name: 'x', args: 1 }), { id: 's', device: 'd1', name: 'x', ok: false, code: 'send_failed', error: 'broker closed' })
  const r2 = new CommandRouter(target(['d1'], ['d1']))
  const p = r2.dispatch({ id: 'p', device: 'd1', name: 'x', args: 1 })
  r2.close()
  assert.equal((await p as { code: string }).code, 'timeout')
})
