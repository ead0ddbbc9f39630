// `edgeway fleet`: wiring of the operator's fleet server. Lifecycle messages from the broker are decoded
// (fleet/message.ts), applied to the state model (fleet/model.ts), persisted once a second (fleet/store.ts) and shown
// by the dashboard (fleet/server.ts); commands from the page go out through fleet/amqp.ts and come back through the
// tracker (fleet/commands.ts). Start order: store, model restored from it, HTTP, then the broker link.
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { HttpServer } from '../gateway/http/server.ts'
import { expandAddress } from '../bridges/amqp/map.ts'
import type { FleetConfig } from './config.ts'
import { decodeLifecycle, gatewayAddress, GATEWAY_ID_RE, type RawLifecycle } from './message.ts'
import { FleetModel, type Transition } from './model.ts'
import { FleetStore } from './store.ts'
import { FleetAmqp } from './amqp.ts'
import { CommandTracker, commandMessage, requestProblem, type FleetCommandRequest, type FleetCommandResult } from './commands.ts'
import { FleetServer, type FleetEvent } from './server.ts'

const FLUSH_MS = 1000
const TICK_MS = 500
const MAX_EVENTS = 500
/** One warning per claimed gateway and reason per this interval: a spoofing flood must not flood the log. */
const REFUSAL_LOG_MS = 60_000

export interface Fleet {
  http: HttpServer
  model: FleetModel
  stop(): Promise<void>
}

export async function startFleet(cfg: FleetConfig, log: Logger): Promise<Fleet> {
  const now = (): number => Date.now()
  const store = new FleetStore(resolve(cfg.dataDir))
  store.open()
  const model = new FleetModel({ maxGateways: cfg.maxGateways, maxDevices: cfg.maxDevicesPerGateway, maxAlerts: cfg.maxAlertsPerGateway, defaultTtlSeconds: cfg.defaultTtlSeconds })
  const restored = store.load()
  model.restore(restored, now())
  log.info({ gateways: model.size, file: store.file }, 'fleet: last-known state loaded')

  const events: FleetEvent[] = []
  let eventId = 0
  const record = (ts: Transition[]): void => {
    for (const t of ts) {
      events.push({ ...t, id: ++eventId })
      log.info({ gateway: t.gateway, from: t.from, to: t.to, why: t.why }, 'fleet: gateway state')
    }
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS)
  }

  const tracker = new CommandTracker(cfg.commandTimeoutSeconds * 1000)
  let amqp: FleetAmqp | null = null
  if (!gatewayAddress(cfg.statusAddress)) log.warn({ statusAddress: cfg.statusAddress }, 'fleet: the status address has no single "*" segment for the gateway id, so the routing key cannot vouch for the sender; only the application properties and the body are compared')
  const limits = { maxDevices: cfg.maxDevicesPerGateway, maxAlerts: cfg.maxAlertsPerGateway }
  const refusalLogged = new Map<string, number>()
  let server: FleetServer | null = null
  let pushSoon: NodeJS.Timeout | null = null
  const onStatus = (raw: RawLifecycle): void => {
    if (amqp?.perGateway && raw.routedFor === null) {
      // The discovery link (status.*) only tells of gateways: their state is read from their own link, whose routing
      // key names them (a message there in another gateway's name is refused). A gateway's first message is missed.
      const id = raw.applicationProperties?.gateway
      if (typeof id === 'string' && GATEWAY_ID_RE.test(id) && !amqp.watching(id)) { amqp.watch(id); log.info({ gateway: id }, 'fleet: new gateway, consumed on its own address') }
      return
    }
    const d = decodeLifecycle(raw, limits)
    if (!d.ok) {
      model.count(d.reason)
      const key = `${d.gateway ?? '?'}:${d.reason}`
      const last = refusalLogged.get(key)
      if (last === undefined || now() - last > REFUSAL_LOG_MS) {
        if (refusalLogged.size > 10_000) refusalLogged.clear()
        refusalLogged.set(key, now())
        log.warn({ gateway: d.gateway, reason: d.reason, detail: d.detail }, 'fleet: status message refused')
      }
      return
    }
    const r = model.ingest(d.message, now())
    if (!r.ok) {
      const key = `*:${r.reason}`
      const last = refusalLogged.get(key)
      if (last === undefined || now() - last > REFUSAL_LOG_MS) { refusalLogged.set(key, now()); log.warn({ gateway: d.message.gateway, max: cfg.maxGateways }, 'fleet: a new gateway refused: maxGateways reached') }
      return
    }
    record(r.transitions)
    // A burst of messages is one update to the browsers, soon, not one per message.
    if (!pushSoon) pushSoon = setTimeout(() => { pushSoon = null; server?.tick() }, 100)
  }

  amqp = new FleetAmqp(cfg, log, {
    status: onStatus,
    reply: (raw) => {
      const r = tracker.reply(raw)
      if (r === 'foreign') log.warn({ correlationId: raw.correlationId, from: raw.applicationProperties?.gateway }, 'fleet: command reply from another gateway than the one asked: ignored')
    },
    link: () => undefined,
  })
  const link = amqp
  for (const g of restored) link.watch(g.id)

  const command = async (req: FleetCommandRequest, user: string): Promise<FleetCommandResult> => {
    const problem = requestProblem(req)
    if (problem) return { ok: false, code: 'bad_request', error: problem }
    if (!model.has(req.gateway)) return { ok: false, code: 'unknown_gateway', error: `no gateway "${req.gateway}" in the fleet` }
    const t = tracker.begin(req)
    if (t.id === null) return { ok: false, code: 'busy', error: t.error }
    log.info({ user, gateway: req.gateway, device: req.device, command: req.name, id: t.id }, 'fleet command')
    const address = expandAddress(cfg.commandAddress, req.gateway)
    const err = await link.send(address, commandMessage(t.id, req, cfg.replyAddress, cfg.commandTimeoutSeconds * 1000, now()))
    if (err) tracker.fail(t.id, 'not_sent', err)
    const result = await t.result
    log.info({ gateway: req.gateway, device: req.device, command: req.name, id: t.id, ok: result.ok, ...(result.ok ? {} : { code: result.code }) }, 'fleet command result')
    return result
  }

  const http = new HttpServer(cfg.http.host, cfg.http.port, log)
  server = new FleetServer(cfg, http, {
    views: (t) => model.views(t),
    devices: (g) => model.devices(g),
    events: () => events,
    counters: () => ({ ...model.counters, gateways: model.size, received: link.received, commands: tracker.counters }),
    brokerConnected: () => link.connected,
    command,
  }, log)
  server.start()
  await http.start()
  const timers = [
    setInterval(() => { try { store.save(model.takeDirty(), now()) } catch (err) { log.error({ err: (err as Error).message }, 'fleet: store write failed') } }, FLUSH_MS),
    setInterval(() => record(model.tick(now())), TICK_MS),
  ]
  link.start()
  log.info({ http: `${cfg.http.host}:${http.port}`, gateways: model.size }, 'edgeway fleet ready')

  return {
    http, model,
    async stop() {
      for (const t of timers) clearInterval(t)
      if (pushSoon) clearTimeout(pushSoon)
      tracker.close()
      await link.stop()
      await server?.stop()
      await http.stop()
      try { store.save(model.takeDirty(), now()) } finally { store.close() }
    },
  }
}
