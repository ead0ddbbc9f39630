import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Reopener } from '../devices/reopen.ts'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

test('reopener: failed tries are retried after the backoff and counted; only the first failure of a run is news', async () => {
  let tries = 0
  let stopped = false
  const r = new Reopener(5, 20, () => { tries++ }, () => stopped)
  const a = r.failed()
  assert.equal(a.first, true)
  assert.ok(a.delayMs >= 2 && a.delayMs <= 20, `delay ${a.delayMs}`)
  await sleep(40)
  assert.equal(tries, 1)
  assert.equal(r.count, 1)
  const b = r.failed()
  assert.equal(b.first, false, 'the second failure in a row is not news')
  r.failed() // a try is already scheduled: not a second timer
  await sleep(40)
  assert.equal(tries, 2)
  r.opened()
  assert.equal(r.failed().first, true, 'after a success, a failure is news again')
  r.cancel()
  await sleep(40)
  assert.equal(tries, 2, 'cancelled: no try')
  stopped = true
  r.lost()
  await sleep(40)
  assert.equal(tries, 2, 'stopped: nothing scheduled')
  stopped = false
  r.lost()
  await sleep(40)
  assert.equal(tries, 3)
  assert.equal(r.count, 3)
})
