// Checkpointer thread: copies the outbox WAL into the database file on its own connection, so the fsyncs of a
// checkpoint never sit inside a commit that devices are waiting for (the writer runs with wal_autocheckpoint=0).
import { parentPort, workerData } from 'node:worker_threads'
import { openDatabase, checkpointPassive } from '../store/sqlite.ts'

const port = parentPort
if (!port) throw new Error('checkpointer must run in a worker thread')
const { file, intervalMs } = workerData as { file: string; intervalMs: number }
const db = openDatabase(file, { synchronous: 'FULL', autoCheckpoint: false })
const timer = setInterval(() => {
  try {
    checkpointPassive(db)
  } catch (err) {
    port.postMessage({ t: 'error', message: (err as Error).message })
  }
}, intervalMs)
port.on('message', (m: { t: string }) => {
  if (m.t !== 'close') return
  clearInterval(timer)
  db.close()
  port.postMessage({ t: 'closed' })
  port.close()
})
port.postMessage({ t: 'ready' })
