// The broker's persistence is durable without an fsync on the broker's thread: its commits run at
// synchronous=NORMAL and each write resolves only after the WAL file was fdatasynced on libuv's pool
// (gateway/store/wal-sync.ts). These tests hold the fdatasync back and watch what waits for it.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { open } from 'node:fs/promises'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SqlitePersistence } from '../gateway/broker/persistence/store.ts'
import { WalSync } from '../gateway/store/wal-sync.ts'
import { tempDir, waitFor, pause } from './helpers/net.ts'

const tmp = tempDir('edgeway-walsync-')
after(() => tmp.cleanup())

/** Every fdatasync in this process goes through here while `gate` is set: calls are counted, and held until opened. */
interface Gate { calls: number; open(): void; fail: Error | null }
async function gateDatasync(): Promise<Gate & { restore(): void }> {
  const probe = await open(join(tmp.dir, 'probe'), 'w')
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> }
  await probe.close()
  const real = proto.datasync
  let release: () => void = () => undefined
  let held = new Promise<void>((r) => { release = r })
  const g = {
    calls: 0,
    fail: null as Error | null,
    open() { release(); held = Promise.resolve() },
    restore() { proto.datasync = real },
  }
  proto.datasync = async function (this: unknown) {
    g.calls++
    await held
    if (g.fail) throw g.fail
    return real.call(this)
  }
  return g
}

const retained = (topic: string, payload: string) => ({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: true, messageId: 0 })

test('a subscription is stored (resolved to aedes) only after the WAL is fdatasynced; a queued or retained message is synced right after without waiting; a write that changes nothing syncs nothing', async () => {
  const file = join(tmp.dir, 'broker.db')
  const p = new SqlitePersistence({ file })
  await p.setup({ id: 'b1' } as never)
  const gate = await gateDatasync()
  const client = { id: 'dev1' }
  try {
    let subscribed = false
    const sub = p.addSubscriptions(client as never, [{ topic: 'devices/dev1/cmd/#', qos: 1 }] as never).then(() => { subscribed = true })
    await waitFor('the fdatasync of the WAL', () => gate.calls >= 1)
    await pause(100)
    assert.equal(subscribed, false, 'addSubscriptions resolved before its fdatasync returned')
    gate.open()
    await sub
    // the gate is open from here: count the syncs
    let n = gate.calls
    await p.outgoingEnqueueCombi([{ clientId: 'dev1' }], { cmd: 'publish', topic: 'devices/dev1/cmd/x', payload: Buffer.from('q'), qos: 1, retain: false, brokerId: 'b1', brokerCounter: 1 } as never)
    await waitFor('the queued message synced right after', () => gate.calls === n + 1)
    n = gate.calls
    await p.storeRetained(retained('devices/d1/state', '{"fw":"1"}') as never)
    await waitFor('the retained message synced right after', () => gate.calls === n + 1)
    n = gate.calls
    // deleting a retained message that does not exist changes no row: nothing to sync
    await p.storeRetained(retained('devices/none/state', '') as never)
    await pause(100)
    assert.equal(gate.calls, n, 'a write that changed nothing synced')
  } finally {
    gate.restore()
    await p.destroy()
  }
  // and it is there after a restart
  const q = new SqlitePersistence({ file })
  await q.setup({ id: 'b2' } as never)
  const got = await q.createRetainedStream('devices/d1/state').toArray() as { payload: Buffer }[]
  assert.equal(got.length, 1)
  assert.equal(got[0]!.payload.toString(), '{"fw":"1"}')
  await q.destroy()
})

test('WalSync: every commit made while a sync runs is covered by one more sync, not one each', async () => {
  const wal = join(tmp.dir, 'coalesce.db-wal')
  writeFileSync(wal, 'x')
  const s = new WalSync(wal)
  const gate = await gateDatasync()
  try {
    const first = s.synced()
    await waitFor('the first sync', () => gate.calls === 1)
    const more = Array.from({ length: 20 }, () => s.synced())
    gate.open()
    await Promise.all([first, ...more])
    assert.equal(gate.calls, 2, `20 waiters during a sync should share the next one (got ${gate.calls} syncs)`)
  } finally {
    gate.restore()
  }
})

test('WalSync fails closed: after an fdatasync error every later waiter is refused, even if the disk recovers', async () => {
  const wal = join(tmp.dir, 'fail.db-wal')
  writeFileSync(wal, 'x')
  const s = new WalSync(wal)
  const gate = await gateDatasync()
  try {
    gate.fail = Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })
    gate.open()
    await assert.rejects(s.synced(), /fdatasync failed \(EIO: i\/o error\)/)
    gate.fail = null
    await assert.rejects(s.synced(), /no write is durable from here on/)
  } finally {
    gate.restore()
  }
})

test('WalSync: no -wal file (the database was closed and checkpointed) is nothing to sync', async () => {
  const s = new WalSync(join(tmp.dir, 'absent.db-wal'))
  await s.synced()
})
