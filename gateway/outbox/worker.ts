// Outbox worker thread: owns the outbox database so commits (and their fsync) run on the second core,
// never on the broker's event loop. Every message queued while a commit ran is drained and committed
// together: group commit without a timer.
import { parentPort, workerData, receiveMessageOnPort } from 'node:worker_threads'
import { OutboxEngine } from './engine.ts'
import type { FromWorker, ToWorker, WorkerInit } from './protocol.ts'

const port = parentPort
if (!port) throw new Error('outbox worker must run in a worker thread')
const init = workerData as WorkerInit
const engine = new OutboxEngine(init, (m: FromWorker) => port.postMessage(m))
try {
  engine.open()
} catch (err) {
  port.postMessage({ t: 'error', message: `cannot open outbox ${init.file}: ${(err as Error).message}` } satisfies FromWorker)
  process.exit(1)
}

port.on('message', (first: ToWorker) => {
  const msgs: ToWorker[] = [first]
  for (;;) {
    const next = receiveMessageOnPort(port)
    if (!next) break
    msgs.push(next.message as ToWorker)
  }
  engine.handle(msgs)
  if (engine.closed) port.close()
})
