// The device journal's side of the records thread (gateway/records/): owns journal.db (writes in batches, reads for
// the device page) and reads the device's OTA jobs from ota.db, off the broker's event loop.
import type { MessagePort } from 'node:worker_threads'
import { JournalStore } from './store.ts'
import { readJobs } from '../ota/store.ts'
import type { FromJournalWorker, JournalWorkerInit, ToJournalWorker } from './protocol.ts'

export function serveJournal(port: MessagePort, init: JournalWorkerInit): void {
  const store = new JournalStore(init.file, init.bounds)
  const post = (m: FromJournalWorker): void => port.postMessage(m)
  try {
    store.open()
  } catch (err) {
    // The thread is shared with history: the journal alone stops.
    post({ t: 'error', message: `cannot open the device journal ${init.file}: ${(err as Error).message}` })
    port.close()
    return
  }
  post({ t: 'ready' })

  port.on('message', (m: ToJournalWorker) => {
    switch (m.t) {
      case 'write':
        try { store.write(m.entries, m.payloads) } catch (err) { post({ t: 'error', message: `journal write failed: ${(err as Error).message}` }) }
        return
      case 'read':
        try {
          post({ t: 'read', id: m.id, view: { entries: store.all(m.device, m.limits), lastPayload: store.lastPayload(m.device), otaJobs: readJobs(init.dataDir, m.device, 20) } })
        } catch (err) { post({ t: 'read', id: m.id, view: null, error: (err as Error).message }) }
        return
      case 'close':
        store.close()
        post({ t: 'closed' })
        port.close()
    }
  })
}
