// History's side of the records thread (gateway/records/): owns history.db so its writes, pruning and queries never
// run on the broker's event loop. Readings arrive on the tap port straight from the outbox worker (tap.ts); the
// main thread's HistoryService sends queries on `port`.
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads'
import { HistoryEngine } from './engine.ts'
import type { FromHistory, HistoryInit, TapBatch, ToHistory } from './protocol.ts'

export function serveHistory(port: MessagePort, { tap, ...init }: HistoryInit & { tap: MessagePort }): void {
  const engine = new HistoryEngine(init)
  const send = (m: FromHistory): void => port.postMessage(m)
  try {
    engine.open()
  } catch (err) {
    // The thread is shared with the journal: history alone stops (its client sees the port close).
    send({ t: 'failed', message: `cannot open history ${init.file}: ${(err as Error).message}` })
    tap.close()
    port.close()
    return
  }

  let started = false
  port.on('message', (m: ToHistory | { t: 'catchUp' }) => {
    try {
      switch (m.t) {
        case 'catchUp': {
          // Only now the tap is listened to: its first batch must not move the position past rows still to catch up.
          const caughtUp = started ? 0 : engine.catchUp()
          if (!started) {
            started = true
            // A batch that cannot be taken (a new series on a full disk) is reported, never fatal: history goes on.
            tap.on('message', (b: TapBatch) => { try { engine.onBatch(b) } catch (err) { send({ t: 'failed', message: `history ingest: ${(err as Error).message}` }) } })
            engine.startTimers((what, err) => send({ t: 'failed', message: `history ${what}: ${err.message}` }))
          }
          send({ t: 'ready', lastRow: engine.store.lastRow, caughtUp })
          return
        }
        case 'query': send({ t: 'answer', id: m.id, value: engine.query(m.query) }); return
        case 'close': {
          // The outbox closed first: whatever its tap posted is queued on the port already.
          for (let next = receiveMessageOnPort(tap); next; next = receiveMessageOnPort(tap)) engine.onBatch(next.message as TapBatch)
          engine.close()
          tap.close()
          send({ t: 'closed', id: m.id })
          port.close()
          return
        }
      }
    } catch (err) {
      send({ t: 'failed', id: m.t === 'query' || m.t === 'close' ? m.id : undefined, message: (err as Error).message })
    }
  })
}
