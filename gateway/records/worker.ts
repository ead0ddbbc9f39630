// The records thread (see thread.ts): history and the device journal, each served on the port it was attached with.
import { parentPort } from 'node:worker_threads'
import { serveHistory } from '../history/worker.ts'
import { serveJournal } from '../journal/worker.ts'
import type { RecordsAttach } from './protocol.ts'

const port = parentPort
if (!port) throw new Error('the records thread must run in a worker thread')
port.on('message', (m: RecordsAttach) => {
  if (m.t !== 'attach') return
  if (m.service === 'history') serveHistory(m.port, m.init)
  else serveJournal(m.port, m.init)
})
