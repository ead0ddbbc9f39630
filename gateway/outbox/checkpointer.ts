// Checkpointer thread: copies the outbox WAL into the database file on its own connection, so the fsyncs of a
// checkpoint never sit inside a commit that devices are waiting for (the writer runs with wal_autocheckpoint=0).
// It exits by itself once the WAL has been fully copied and stayed unchanged for idleExitMs: an idle gateway does not
// keep a thread (and its ~9 MB) around; the client starts a new one with the next write.
import { parentPort, workerData } from 'node:worker_threads'
import { openDatabase, checkpointPassive } from '../store/sqlite.ts'

const port = parentPort
if (!port) throw new Error('checkpointer must run in a worker thread')
const { file, intervalMs, idleExitMs } = workerData as { file: string; intervalMs: number; idleExitMs: number }
const db = openDatabase(file, { synchronous: 'FULL', autoCheckpoint: false })
let lastFrames = -1
let quietSince = Date.now()
/** The failure being reported: one message per spell of failures (every 200 ms on a full disk was a log flood). */
let failing: string | null = null
const timer = setInterval(() => {
  try {
    const { walFrames, checkpointed } = checkpointPassive(db)
    if (failing !== null) { failing = null; port.postMessage({ t: 'recovered' }) }
    if (walFrames !== lastFrames || checkpointed < walFrames) quietSince = Date.now()
    lastFrames = walFrames
    if (Date.now() - quietSince >= idleExitMs) {
      clearInterval(timer)
      db.close()
      port.postMessage({ t: 'idle' })
      port.close()
    }
  } catch (err) {
    const message = (err as Error).message
    if (failing !== message) port.postMessage({ t: 'error', message })
    failing = message
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
