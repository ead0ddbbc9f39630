// Outbox worker thread: owns the outbox database so commits (and their fsync) run on the second core,
// never on the broker's event loop. Every message queued while a commit ran is drained and committed
// together: group commit without a timer.
import { parentPort, workerData, receiveMessageOnPort } from 'node:worker_threads'
import { OutboxStore } from './store.ts'
import { isDiskFull } from '../store/sqlite.ts'
import type { FromWorker, LatestReading, Refusal, ToWorker, WorkerInit } from './protocol.ts'
import { decodeTelemetry, type ReadingInput } from '../readings.ts'

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
/** Device and link names by the numbers the broker thread sends instead of the strings (see client.ts). */
const names: string[] = []
const prioMetrics = new Set(init.priority?.metrics ?? [])
const prioDevices = new Set(init.priority?.devices ?? [])

// Each device's newest committed reading, sent at most every latestEveryMs: live views (dashboard, XMPP status)
// get values without a message per reading crossing threads.
// Keeps the decoded rows themselves (no object per reading on this hot path); the message is built at the flush.
const latest = new Map<string, ReadingInput>()
let latestTimer: NodeJS.Timeout | null = null
function noteLatest(rows: ReadingInput[]): void {
  if (init.latestEveryMs <= 0) return
  for (const r of rows) latest.set(r.device, r)
  latestTimer ??= setTimeout(flushLatest, init.latestEveryMs)
}
function flushLatest(): void {
  latestTimer = null
  if (latest.size === 0 || closing) return
  const readings: LatestReading[] = []
  for (const r of latest.values()) readings.push({ device: r.device, link: r.link, ts: r.ts, seq: r.deviceSeq, payload: r.kind === 'json' ? (r.payload as string) : null })
  send({ t: 'latest', readings })
  latest.clear()
}

function handleBatch(first: ToWorker): void {
  const msgs: ToWorker[] = [first]
  for (;;) {
    const next = receiveMessageOnPort(port!)
    if (!next) break
    msgs.push(next.message as ToWorker)
  }
  // Phase 1: decode every reading of this drain; the valid ones go into one transaction.
  const ids: number[] = []
  const rows: ReadingInput[] = []
  const refused: Refusal[] = []
  for (const m of msgs) {
    if (m.t !== 'append') continue
    ids.push(m.id)
    if (m.reset) names.length = 0
    for (const name of m.names) names.push(name)
    const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength)
    const meta = m.meta
    const n = meta.length / 3
    let off = 0
    for (let i = 0; i < n; i++) {
      const len = meta[i]!
      const device = names[meta[n + i]!]!
      const d = decodeTelemetry(device, data.subarray(off, off + len), m.receivedAt, names[meta[2 * n + i]!]!, prioMetrics.size ? prioMetrics : undefined)
      off += len
      if (d.ok) {
        if (prioDevices.size && prioDevices.has(device)) d.reading.priority = true
        rows.push(d.reading)
      }
      else refused.push({ id: m.id, index: i, device, reason: d.reason })
    }
  }
  if (ids.length > 0) {
    try {
      const lastRowId = rows.length > 0 ? store.appendBatch(rows) : store.lastRowId
      send({ t: 'appended', ids, lastRowId, refused })
      noteLatest(rows)
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
          if (catchUp) clearTimeout(catchUp)
          if (latestTimer) clearTimeout(latestTimer)
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

let catchUp: NodeJS.Timeout | null = null
function maintain(): void {
  if (closing) return
  try {
    for (const d of store.maintain()) send({ t: 'dropped', ...d })
  } catch (err) {
    send({ t: 'error', message: `outbox maintenance: ${(err as Error).message}` })
  }
  // After a drain, a large delivered backlog is deleted in small steps with commits and claims in between.
  if (store.deleteBehind && !catchUp) catchUp = setTimeout(() => { catchUp = null; maintain() }, 5)
}

const timer = setInterval(maintain, init.maintenanceMs)
port.on('message', (m: ToWorker) => handleBatch(m))
