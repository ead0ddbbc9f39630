// The records thread, main-thread side: one worker thread for the gateway's local records, history (history.db)
// and the device journal (journal.db). Neither is on the ack path and both write with synchronous=NORMAL, so they
// share a thread: every thread is a V8 isolate of its own (~5 MiB of RSS each, measured). Each service talks to
// its side over a MessagePort of its own, as if it had the thread alone. Constructors do no I/O: the thread starts
// at the first attach and ends when the last service detaches.
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads'
import type { RecordsAttach, RecordsService } from './protocol.ts'

/** Compiled (dist/): the entry is plain JS. From source: the outbox's plain-JS entry registers tsx in the thread first. */
function spawnWorker(): Worker {
  if (import.meta.url.endsWith('.js')) return new Worker(new URL('./worker.js', import.meta.url), { name: 'edgeway-records' })
  return new Worker(new URL('../outbox/worker-boot.mjs', import.meta.url), { workerData: { entry: new URL('./worker.ts', import.meta.url).href }, name: 'edgeway-records' })
}

export class RecordsThread {
  private worker: Worker | null = null
  /** The attached services, each with what to call if the thread dies under it. */
  private readonly attached = new Map<RecordsService, (reason: string) => void>()

  /**
   * Starts the thread if it is not running and starts `service` in it with `init` (whose ports are in `transfer`).
   * Answers the port the service's client talks on. `onLost` is called once if the thread fails or exits before
   * the service detaches.
   */
  attach<S extends RecordsService>(service: S, init: Extract<RecordsAttach, { service: S }>['init'], transfer: MessagePort[], onLost: (reason: string) => void): MessagePort {
    if (this.attached.has(service)) throw new Error(`records thread: ${service} is attached already`)
    const { port1, port2 } = new MessageChannel()
    const worker = this.worker ?? this.spawn()
    this.attached.set(service, onLost)
    worker.postMessage({ t: 'attach', service, port: port2, init } as RecordsAttach, [port2, ...transfer])
    return port1
  }

  /** The service has closed its side (its database is closed); the last one to leave ends the thread. */
  async detach(service: RecordsService): Promise<void> {
    this.attached.delete(service)
    const w = this.worker
    if (this.attached.size > 0 || !w) return
    this.worker = null
    await w.terminate()
  }

  get running(): boolean { return this.worker !== null }

  private spawn(): Worker {
    const w = spawnWorker()
    this.worker = w
    const lost = (reason: string): void => {
      if (this.worker !== w) return
      this.worker = null
      const services = [...this.attached.values()]
      this.attached.clear()
      for (const onLost of services) onLost(reason)
    }
    w.on('error', (err) => lost(`records thread failed: ${err.message}`))
    w.on('exit', (code) => lost(`records thread exited (code ${code})`))
    return w
  }
}
