// Outbox worker thread: owns the outbox database so commits (and their fsync) run on the second core,
// never on the broker's event loop. Every message queued while a commit ran is drained and committed
// together: group commit without a timer.
import { parentPort, workerData, receiveMessageOnPort } from 'node:worker_threads'
import { OutboxStore } from './store.ts'
import { isDiskFull } from '../store/sqlite.ts'
import type { FromWorker, ToWorker, WorkerInit } from './protocol.ts'
import type { ReadingInput } from '../readings.ts'

const port = parentPort
if (!port) throw new Error('outbox worker must run in a worker thread')
const init = workerData as WorkerInit
const send = (m: FromWorker): void => port.postMessage(m)

const store = new OutboxStore(init)
try {
  store.open()
} catch (err) {
  send({ t: 'error', message: `cannot open outbox ${init.file}: ${(err as Error).message}` })
  process.exit(1)
}
send({ t: 'ready', lastRowId: store.lastRowId, upstreams: store.upstreamNames })

let closing = false

function handleBatch(first: ToWorker): void {
  const msgs: ToWorker[] = [first]
  for (;;) {
    const next = receiveMessageOnPort(port!)
    if (!next) break
    msgs.push(next.message as ToWorker)
  }
  // Phase 1: every append in this drain goes into one transaction.
  const ids: number[] = []
  const rows: ReadingInput[] = []
  for (const m of msgs) if (m.t === 'append') { ids.push(m.id); for (const r of m.rows) rows.push(r) }
  if (rows.length > 0) {
    try {
      const lastRowId = store.appendBatch(rows)
      send({ t: 'appended', ids, lastRowId })
    } catch (err) {
      send({ t: 'appendFailed', ids, code: isDiskFull(err) ? 'disk_full' : 'io', message: (err as Error).message })
    }
  }
  // Phase 2: the rest in arrival order; claims see the rows just committed.
  for (const m of msgs) {
    try {
      switch (m.t) {
        case 'append': break
        case 'claim': send({ t: 'claimed', id: m.id, rows: store.claim(m.upstream, m.limit) }); break
        case 'ack': store.ack(m.upstream, m.ids); break
        case 'release': store.release(m.upstream, m.ids); break
        case 'dead': store.deadLetter(m.upstream, m.id, m.reason); break
        case 'stats': send({ t: 'stats', id: m.id, stats: store.stats() }); break
        case 'close':
          closing = true
          clearInterval(timer)
          store.close()
          send({ t: 'closed', id: m.id })
          port!.close()
          return
      }
    } catch (err) {
      send({ t: 'error', id: m.t === 'claim' || m.t === 'stats' ? m.id : undefined, message: `${m.t}: ${(err as Error).message}` })
    }
  }
}

function maintain(): void {
  if (closing) return
  try {
    for (const d of store.maintain()) send({ t: 'dropped', ...d })
  } catch (err) {
    send({ t: 'error', message: `outbox maintenance: ${(err as Error).message}` })
  }
}

const timer = setInterval(maintain, init.maintenanceMs)
port.on('message', (m: ToWorker) => handleBatch(m))
