import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CommandRouter, type CommandTarget } from '../gateway/commands/router.ts'
import { DeviceLinks, type DeviceLink, type LinkCommand } from '../gateway/links/device-link.ts'
import { MqttDeviceLink } from '../gateway/broker/device-link.ts'

function target(known: string[], online: string[]): CommandTarget & { sent: { device: string; cmd: LinkCommand }[] } {
  const sent: { device: string; cmd: LinkCommand }[] = []
  return {
    sent,
    isKnown: (d) => known.includes(d),
    isOnline: (d) => online.includes(d),
    send: async (device, cmd) => { sent.push({ device, cmd }); return { kind: 'sent' } },
  }
}

test('a command goes to the device and resolves with its result', async () => {
  const t = target(['d1'], ['d1'])
  const r = new CommandRouter(t)
  const p = r.dispatch({ id: 'c1', device: 'd1', name: 'reboot', args: { delay: 5 } })
  await new Promise((res) => setImmediate(res))
  assert.equal(t.sent.length, 1)
  const sent = t.sent[0]!
  assert.deepEqual({ device: sent.device, id: sent.cmd.id, name: sent.cmd.name, args: sent.cmd.args }, { device: 'd1', id: 'c1', name: 'reboot', args: { delay: 5 } })
  assert.ok(sent.cmd.expiresAt !== undefined && Math.abs(sent.cmd.expiresAt - Date.now() - 30000) < 1000, 'the command carries its deadline (the router timeout)')
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
  assert.equal((ttl as { code: string }).code, 'timeout', 'the TTL ran out after the device had the command: no answer is a timeout')
})

test('an offline device whose link holds commands: expired if it never had it, timeout if it had it and did not answer', async () => {
  let deliver: (d: boolean) => void = () => undefined
  const t: CommandTarget = {
    isKnown: () => true,
    isOnline: () => false,
    queues: async (d) => d !== 'gone',
    send: async () => ({ kind: 'sent', delivered: new Promise<boolean>((res) => { deliver = res }) }),
  }
  const r = new CommandRouter(t, { timeoutMs: 60 })
  assert.equal((await r.dispatch({ id: 'g', device: 'gone', name: 'x', args: null }) as { code: string }).code, 'offline', 'no session to hold it')
  const never = await r.dispatch({ id: 'n', device: 'd1', name: 'x', args: null })
  assert.equal((never as { code: string }).code, 'expired', (never as { error: string }).error)
  const late = r.dispatch({ id: 'l', device: 'd1', name: 'x', args: null })
  await new Promise((res) => setTimeout(res, 10))
  deliver(true)
  assert.equal((await late as { code: string }).code, 'timeout')
  const answered = r.dispatch({ id: 'a', device: 'd1', name: 'x', args: null })
  await new Promise((res) => setTimeout(res, 10))
  deliver(true)
  r.handleResult('d1', 'x', '{"id":"a","result":1}')
  assert.deepEqual(await answered, { id: 'a', device: 'd1', name: 'x', ok: true, result: 1 })
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

test('a link that answers at once (a board) settles the command with its answer, typed, with no result topic', async () => {
  const answers: Record<string, Awaited<ReturnType<DeviceLink['command']>>> = {
    ok: { kind: 'answered', ok: true, result: { state: 1 } },
    bad: { kind: 'answered', ok: false, error: 'bad_args' },
  }
  const board: DeviceLink = { kind: 'serial', serves: (d) => d === 'b1', isOnline: () => true, devices: () => ['b1'], command: async (_d, c) => answers[c.name]! }
  const published: { topic: string; payload: string }[] = []
  const mqtt = new MqttDeviceLink({ isDeviceOnline: (d) => d === 'm1', connectedDevices: ['m1'], publish: async (topic, payload) => { published.push({ topic, payload: String(payload) }) } })
  const links = new DeviceLinks([board, mqtt])
  assert.deepEqual(links.devices(), ['b1', 'm1'])
  assert.equal(links.linkOf('b1'), board)
  assert.equal(links.linkOf('m1'), mqtt, 'MQTT serves every device the boards do not')
  const r = new CommandRouter({ isKnown: (d) => links.devices().includes(d), isOnline: (d) => links.isOnline(d), send: (d, c) => links.command(d, c) })
  assert.deepEqual(await r.dispatch({ id: 'a', device: 'b1', name: 'ok', args: null }), { id: 'a', device: 'b1', name: 'ok', ok: true, result: { state: 1 } })
  assert.deepEqual(await r.dispatch({ id: 'b', device: 'b1', name: 'bad', args: null }), { id: 'b', device: 'b1', name: 'bad', ok: false, code: 'device_error', error: 'bad_args' })
  const m = r.dispatch({ id: 'c', device: 'm1', name: 'reboot', args: { in: 1 } })
  await new Promise((res) => setImmediate(res))
  assert.deepEqual(published, [{ topic: 'devices/m1/cmd/reboot', payload: '{"id":"c","args":{"in":1}}' }])
  assert.equal(r.handleResult('m1', 'reboot', '{"id":"c","result":"ok"}'), true)
  assert.deepEqual(await m, { id: 'c', device: 'm1', name: 'reboot', ok: true, result: 'ok' })
})
