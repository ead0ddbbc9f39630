// History and the device journal in one records thread (gateway/records/): both work through the one thread, each
// leaves it on its own (the thread ends with the last), and a history that cannot open its file stops alone.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import pino from 'pino'
import { RecordsThread } from '../gateway/records/thread.ts'
import { HistoryService } from '../gateway/history/client.ts'
import { DeviceJournal } from '../gateway/journal/journal.ts'
import { presenceEntry } from '../gateway/journal/entries.ts'
import type { TapBatch } from '../gateway/history/protocol.ts'
import { tempDir, waitFor } from './helpers/net.ts'

const log = pino({ level: 'silent' })
const historyConfig = { enabled: true, rawHours: 48, rollupDays: 90, maxBytes: 64 * 1024 * 1024, maxMetricsPerDevice: 64, minIntervalMs: 0, maxSeries: 20000 }

function services(dir: string, thread: RecordsThread, historyFile = join(dir, 'history.db')): { history: HistoryService; journal: DeviceJournal } {
  return {
    history: new HistoryService({ file: historyFile, outboxFile: join(dir, 'outbox.db'), config: historyConfig, thread, log, commitMs: 20 }),
    journal: new DeviceJournal({ file: join(dir, 'journal.db'), dataDir: dir, thread, flushMs: 60_000, payloadFlushMs: 60_000, log }),
  }
}

/** One committed reading, as the outbox worker's tap posts it. */
const batch = (device: string, id: number, ts: number, payload: string): TapBatch =>
  ({ t: 'rows', names: [device], dev: Uint32Array.of(0), ts: Float64Array.of(ts), ids: Float64Array.of(id), text: payload })

test('history and the journal share one records thread; each leaves on its own, the last one ends it', async () => {
  const { dir, cleanup } = tempDir('edgeway-records-')
  const thread = new RecordsThread()
  try {
    const { history, journal } = services(dir, thread)
    const tap = history.tapPort()
    assert.equal(thread.running, false, 'constructors start nothing')
    await history.start()
    assert.equal(thread.running, true)
    await journal.start()
    await history.catchUp()

    tap.postMessage(batch('s1', 1, Date.now(), '{"temperature":21.5}'))
    journal.record(presenceEntry({ device: 's1', link: 'mqtt', clientId: 's1' }, true, Date.now()))
    await waitFor('history has the reading', async () => (await history.query({ q: 'series', device: 's1' })).length === 1, 5000)
    assert.deepEqual((await journal.read('s1')).entries.presence.map((e) => e.data.online), [true])

    await journal.close()
    assert.equal(thread.running, true, 'history is still attached')
    assert.deepEqual((await history.query({ q: 'series', device: 's1' })).map((s) => s.metric), ['temperature'], 'history answers after the journal left')
    await history.stop()
    assert.equal(thread.running, false, 'the last one out ended the thread')
    tap.close()

    // Both files were closed cleanly: a new pair (on a new thread) reads them back.
    const again = services(dir, new RecordsThread())
    await again.history.start()
    await again.journal.start()
    await again.history.catchUp()
    assert.equal((await again.history.query({ q: 'series', device: 's1' })).length, 1)
    assert.equal((await again.journal.read('s1')).entries.presence.length, 1)
    await again.journal.close()
    await again.history.stop()
  } finally { cleanup() }
})

test('a history that cannot open its file stops alone: the journal in the same thread goes on', async () => {
  const { dir, cleanup } = tempDir('edgeway-records-')
  const thread = new RecordsThread()
  try {
    // history.db is a directory: SQLite cannot open it.
    const { history, journal } = services(dir, thread, dir)
    const tap = history.tapPort()
    await history.start()
    await journal.start()
    await history.catchUp()
    await assert.rejects(history.query({ q: 'stats' }), 'history is down')
    journal.record(presenceEntry({ device: 's2', link: 'mqtt', clientId: 's2' }, true, Date.now()))
    assert.deepEqual((await journal.read('s2')).entries.presence.map((e) => e.data.online), [true], 'the journal still reads and writes')
    assert.equal(thread.running, true)
    await journal.close()
    await history.stop()
    assert.equal(thread.running, false)
    tap.close()
  } finally { cleanup() }
})
