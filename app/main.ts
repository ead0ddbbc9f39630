// Wires the gateway together and owns start/stop order. Constructors elsewhere do no I/O; this does it all.
import { join, resolve } from 'node:path'
import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { Config } from './config/schema.ts'
import { Registry } from '../gateway/registry/registry.ts'
import { OutboxClient } from '../gateway/outbox/client.ts'
import { MqttBroker } from '../gateway/broker/broker.ts'
import { resolveRoles, BUILTIN_ROLES } from '../gateway/broker/roles.ts'
import { Metrics } from '../gateway/metrics.ts'
import { GatewayBus } from '../gateway/events.ts'
import { HttpServer, sendJson } from '../gateway/http/server.ts'
import { Forwarder } from '../gateway/upstream/forwarder.ts'
import type { Upstream } from '../gateway/upstream/types.ts'
import { CommandRouter, type CommandResult } from '../gateway/commands/router.ts'
import { DeviceLinks } from '../gateway/links/device-link.ts'
import { MqttDeviceLink } from '../gateway/broker/device-link.ts'
import { CameraService } from '../gateway/camera/service.ts'
import { OtaService } from '../gateway/ota/service.ts'
import { OtaStore } from '../gateway/ota/store.ts'
import { DashboardServer } from '../gateway/dashboard/server.ts'
import { readingMetrics } from '../gateway/readings.ts'
import { HistoryService } from '../gateway/history/client.ts'
import { RecordsThread } from '../gateway/records/thread.ts'
import { collectStartupGarbage } from '../gateway/heap.ts'
import { historyRoutes } from '../gateway/history/api.ts'
import { ControlServer, type ControlHandler } from '../gateway/control/server.ts'
import { GatewayStatus, type HealthReport } from './status.ts'
import { registerControlHandlers } from './control.ts'
import { VERSION } from './version.ts'
import { DeviceJournal } from '../gateway/journal/journal.ts'
import { refusalEntry } from '../gateway/journal/entries.ts'
import { DeviceApi } from '../gateway/dashboard/device-api.ts'
import { controlSocketPath } from '../gateway/control/client.ts'
import type { XmppBridge } from '../bridges/xmpp/bridge.ts'
import { AlertEngine, isAlertSink } from '../gateway/alerts/engine.ts'
import { effectiveAlerts, legacyThresholdsWarning } from '../gateway/alerts/config.ts'
import { resolveHomeAssistant } from '../bridges/homeassistant/config.ts'
import { haRoles } from '../bridges/homeassistant/discovery.ts'
import type { HomeAssistantPublisher } from '../bridges/homeassistant/publisher.ts'
import { SerialLinks } from '../devices/serial/link.ts'
import { configDigest, isLifecycleSink, type DeviceState } from '../bridges/amqp/lifecycle.ts'
import { FirmataLinks } from '../devices/firmata/link.ts'


export interface RunningGateway {
  broker: MqttBroker
  http: HttpServer | null
  outbox: OutboxClient
  registry: Registry
  serial: SerialLinks
  /** Commands to any device (MQTT or serial), with exactly one result each. */
  commands: CommandRouter
  /** The optional WebRTC camera (state "off" when camera.enabled is false); a dashboard channel. */
  camera: CameraService
  /** Firmware updates over MQTT (`ota.push` on the control socket). */
  ota: OtaService
  /** The web dashboard (null when http or the dashboard is off); plug-in channels register with addChannel(). */
  dashboard: DashboardServer | null
  /** The control socket CLI commands use to reach this process (flash, OTA, status). */
  control: { handle(method: string, handler: ControlHandler): void }
  stop(): Promise<void>
}

export function dataFiles(config: Config): { outbox: string; registry: string; broker: string } {
  const dir = resolve(config.gateway.dataDir)
  return { outbox: join(dir, 'outbox.db'), registry: join(dir, 'registry.db'), broker: join(dir, 'broker.db') }
}

/** Connector libraries load only when configured: an unused MQTT client or AMQP stack costs RSS on a small board. */
async function makeUpstream(u: Config['upstreams'][number], gatewayId: string, log: Logger): Promise<Upstream> {
  switch (u.type) {
    case 'mqtt': return new (await import('../gateway/upstream/mqtt.ts')).MqttUpstream(u, gatewayId, log)
    case 'amqp': return new (await import('../bridges/amqp/upstream.ts')).AmqpUpstream(u, gatewayId, log)
  }
}

export async function startGateway(config: Config, log: Logger): Promise<RunningGateway> {
  const started = performance.now()
  const files = dataFiles(config)
  const metrics = new Metrics()
  const bus = new GatewayBus((err, event) => log.error({ err: (err as Error).message, event }, 'event listener failed'))
  const registry = new Registry(files.registry, { liveState: 'NORMAL' })
  // History and the journal share one worker thread (one V8 isolate less): neither is on the ack path.
  const records = new RecordsThread()
  // The per-device journal (journal.db, in the records thread): presence, commands, firmware, OTA/flash, refusals, last payload.
  const journal = new DeviceJournal({ file: join(resolve(config.gateway.dataDir), 'journal.db'), dataDir: resolve(config.gateway.dataDir), thread: records, log: log.child({ component: 'journal' }) })
  const enabled = config.upstreams.filter((u) => u.enabled)
  // XMPP bridge (devices as contacts; its PubSub upstream joins the outbox cursors). Closures: used after start.
  // Which devices exist and which are online, over every link: for the command router and the XMPP bridge.
  // (closures: `links` is built once the broker and the boards exist, below)
  /** The configured boards (their ids are reserved and tracked like registered devices). */
  const boardDevices = (): string[] => [...serial.devices(), ...firmata.devices()]
  const isOnline = (d: string): boolean => links.isOnline(d)
  const xmpp: XmppBridge | null = config.xmpp.enabled ? new (await import('../bridges/xmpp/bridge.ts')).XmppBridge(config.xmpp, {
    gatewayId: config.gateway.id, dataDir: config.gateway.dataDir, bus, log: log.child({ bridge: 'xmpp' }),
    devices: (): string[] => [...new Set([...registry.list().map((d) => d.id), ...links.devices()])],
    isOnline, dispatch: (cmd): Promise<CommandResult> => commands.dispatch(cmd),
  }) : null
  if (xmpp?.upstream && enabled.some((u) => u.name === xmpp.upstream!.name)) throw new Error(`xmpp.pubsub.upstream "${xmpp.upstream.name}" clashes with an entry of upstreams`)
  // history: committed readings go from the outbox worker to the history worker (gateway/history/), off the ack path.
  const history = config.history.enabled ? new HistoryService({
    file: join(resolve(config.gateway.dataDir), 'history.db'), outboxFile: files.outbox, config: config.history, thread: records, log,
    onStats: (d) => {
      metrics.historyPoints.inc(d.points)
      metrics.historyRefused.inc(d.refused)
      for (const p of d.pruned) metrics.historyPruned.inc({ tier: p.tier, reason: p.reason }, p.n)
    },
  }) : null
  const outbox = new OutboxClient({
    file: files.outbox, gatewayId: config.gateway.id, upstreams: [...enabled.map((u) => u.name), ...(config.xmpp.enabled && config.xmpp.pubsub.enabled ? [config.xmpp.pubsub.upstream] : [])],
    maxBytes: config.outbox.maxBytes, maxAgeMs: config.outbox.maxAgeSeconds * 1000,
    synchronous: config.outbox.synchronous, batchRows: config.outbox.batchRows, diskFullHoldMs: config.outbox.diskFullHoldSeconds * 1000, priority: config.outbox.priority, log,
    ...(history ? { tap: history.tapPort(), tapMinIntervalMs: config.history.minIntervalMs } : {}),
  })
  // Home Assistant discovery: its topics are the gateway's own (haRoles), its publisher starts after the broker.
  const haConfig = config.homeassistant.enabled ? resolveHomeAssistant(config.homeassistant, config.gateway.id) : null
  const roles = haConfig ? haRoles(resolveRoles(config.roles), BUILTIN_ROLES, haConfig) : resolveRoles(config.roles)
  const broker = new MqttBroker({ config: config.mqtt, roles, persistenceFile: files.broker, registry, outbox, metrics, bus, log })
  const ha: HomeAssistantPublisher | null = haConfig ? new (await import('../bridges/homeassistant/publisher.ts')).HomeAssistantPublisher({
    config: haConfig, gateway: { id: config.gateway.id, version: VERSION }, broker, bus, registry, isOnline,
    stateFile: join(resolve(config.gateway.dataDir), 'homeassistant.json'), log: log.child({ bridge: 'homeassistant' }),
  }) : null
  /** Revocation of a device (CLI, device page): the broker closes and purges, HA forgets a removed device. */
  const revokeDevice = async (id: string): Promise<{ disconnected: number; purgedSessions: number }> => {
    const r = await broker.revoke('device', id)
    ha?.deviceRevoked(id)
    return r
  }
  const upstreams = await Promise.all(enabled.map((u) => makeUpstream(u, config.gateway.id, log.child({ upstream: u.name }))))
  if (xmpp?.upstream) upstreams.push(xmpp.upstream)
  const forwarders = upstreams.map((u) => new Forwarder(u, outbox, metrics, log))
  const serial = new SerialLinks(config.serial.ports, { outbox, registry, bus, log })
  const firmata = new FirmataLinks(config.firmata.boards, { outbox, registry, bus, log })
  // Boards first, MQTT last: a configured board's id is its own, any other device is reached over MQTT.
  const links = new DeviceLinks([serial, firmata, new MqttDeviceLink(broker)])
  metrics.setReplySource(() => upstreams.flatMap((u) => {
    const s = u.status()
    return s.repliesFailed === undefined ? [] : [{ upstream: u.name, sent: s.repliesSent ?? 0, failed: s.repliesFailed }]
  }))
  metrics.setSerialSource(() => serial.links.map((l) => { const s = l.status(); return { device: s.device, ...s.framing, reopens: s.reopens } }))
  // Commands from any upstream go to the device's link: a board (it answers at once), else MQTT
  // (`devices/<id>/cmd/<name>`, the answer coming back through the broker hook below).
  const commands = new CommandRouter({
    isKnown: (d) => registry.get(d) !== undefined || links.devices().includes(d),
    isOnline,
    send: (d, cmd) => links.command(d, cmd),
    queues: (d, name) => links.queues(d, name),
  })
  broker.onCommandResult((d, name, payload) => { commands.handleResult(d, name, payload) })
  commands.onDone((e) => bus.safeEmit('commandDone', e))
  const ota = new OtaService({ publish: (t, p, q, r) => broker.publish(t, p, q, r), registry, bus, store: new OtaStore(resolve(config.gateway.dataDir)), log, metrics })
  broker.onOtaUplink((d, kind, payload) => ota.handleUplink(d, kind, payload))
  for (const u of upstreams) u.onCommand?.((cmd) => commands.dispatch(cmd))
  // Alerts: one engine for health, the dashboard, XMPP and AMQP. The deprecated xmpp.alerts.thresholds join its rules.
  if (config.xmpp.alerts.thresholds.length) log.warn({ thresholds: config.xmpp.alerts.thresholds.length }, legacyThresholdsWarning(config.xmpp.enabled))
  const alerts = new AlertEngine({
    config: effectiveAlerts(config.alerts, config.xmpp.enabled ? config.xmpp.alerts.thresholds : []), bus, metrics, log: log.child({ component: 'alerts' }),
    tracked: (d) => registry.get(d) !== undefined || boardDevices().includes(d),
    upstreams: () => upstreams.map((u) => ({ name: u.name, ...u.status() })),
  })
  const alertSinks = upstreams.filter(isAlertSink)
  if (alertSinks.length) {
    bus.on('alertRaised', (e) => { for (const u of alertSinks) u.publishAlert(e) })
    bus.on('alertCleared', (e) => { for (const u of alertSinks) u.publishAlert(e) })
  }
  const http = config.http.enabled ? new HttpServer(config.http.host, config.http.port, log) : null
  const camera = new CameraService(config.camera, log.child({ component: 'camera' }))
  if (config.camera.enabled) metrics.setCameraSource(() => { const c = camera.status(); return { viewers: c.viewers, bitrate: c.bitrate, live: c.state === 'live' } })

  // Every link's readings, counted once per commit: metrics, last-seen, live events (the dashboard).
  outbox.onCommitted((c) => {
    for (const [link, n] of c.storedByLink) metrics.messagesIn.inc({ link }, n)
    metrics.commitSeconds.observe(c.latencyMs / 1000)
    const ph = metrics.commitPhaseSeconds
    ph.observe({ phase: 'queue' }, c.phases.queueMs / 1000)
    ph.observe({ phase: 'decode' }, c.phases.decodeMs / 1000)
    ph.observe({ phase: 'write' }, c.phases.writeMs / 1000)
    ph.observe({ phase: 'handback' }, c.phases.handBackMs / 1000)
    for (const device of c.devices.keys()) registry.touch(device)
  })
  outbox.onLatest((r) => {
    if (bus.listenerCount('reading') === 0) return
    bus.safeEmit('reading', { device: r.device, link: r.link, ts: r.ts, seq: r.seq, metrics: r.payload === null ? {} : readingMetrics({ kind: 'json', payload: r.payload }) })
  })
  // The device journal: each device's newest payload (in memory, flushed now and then) and the decode refusals of
  // serial and Firmata readings (MQTT ones reach the bus as "refusal" events through the broker's intake).
  outbox.onLatest((r) => journal.latest(r))
  outbox.onRefused((r) => { if (r.link !== 'mqtt') journal.record(refusalEntry({ reason: 'decode', detail: r.reason, device: r.device }, Date.now())) })
  const status = new GatewayStatus({
    gatewayId: config.gateway.id, version: VERSION, outboxMaxBytes: config.outbox.maxBytes, diskFullHoldSeconds: config.outbox.diskFullHoldSeconds,
    outbox, metrics, alerts, camera, upstreams, log,
    mqtt: () => ({ clients: broker.connectedClients, devices: broker.connectedDevices.length }),
  })
  status.watchOutbox()
  const health = (): Promise<HealthReport> => status.health()
  for (const u of upstreams) u.setStatusSource?.(() => status.snapshot())
  // Lifecycle on the status address (bridges/amqp/lifecycle.ts): birth with every device, presence as it changes.
  const lifecycleSinks = upstreams.filter(isLifecycleSink)
  if (lifecycleSinks.length) {
    const lifecycleDevices = (): DeviceState[] => {
      const known = new Map(registry.list().map((d) => [d.id, d]))
      const ids = [...new Set([...known.keys(), ...links.devices()])].sort()
      return ids.map((id) => {
        const d = known.get(id)
        const link = links.onlineLink(id) ?? (serial.serves(id) ? 'serial' : firmata.serves(id) ? 'firmata' : d?.link ?? null)
        return { id, online: isOnline(id), link, firmware: d?.firmwareVersion ?? null, lastSeen: d?.lastSeen ?? null }
      })
    }
    const lifecycle = { bootId: randomUUID(), version: VERSION, configDigest: configDigest(config), devices: lifecycleDevices }
    for (const u of lifecycleSinks) u.setLifecycle(lifecycle)
    bus.on('deviceOnline', (e) => { for (const u of lifecycleSinks) u.publishPresence({ device: e.device, online: true, link: e.link, at: Date.now() }) })
    bus.on('deviceOffline', (e) => { for (const u of lifecycleSinks) u.publishPresence({ device: e.device, online: false, link: e.link, reason: e.reason, at: Date.now() }) })
  }
  const dashboard = http && config.dashboard.enabled ? new DashboardServer({
    config: config.dashboard, http, bus, log, gatewayId: config.gateway.id, version: VERSION, mqttPort: config.mqtt.tcp.port,
    devices: () => registry.list(), device: (id) => registry.get(id), addDevice: (id) => registry.add(id),
    dispatch: (cmd) => commands.dispatch(cmd), status: health, alerts: () => alerts.active(),
  }) : null
  // The camera panel's signalling rides on the dashboard WebSocket ("camera.*" messages, authenticated sessions only).
  dashboard?.addChannel(camera)
  // history API (/api/history/...), behind the dashboard's login.
  if (history) dashboard?.addRoutes(historyRoutes({ history, metadata: (id) => registry.get(id)?.metadata }))
  // The device page (/device/<id>) and its actions: the same registry and revocation paths as the CLI.
  dashboard?.addRoutes(new DeviceApi({
    registry, revoke: revokeDevice, isOnline, journal, dispatch: (cmd) => commands.dispatch(cmd), ota,
    uploadsDir: join(resolve(config.gateway.dataDir), 'uploads'), log,
  }))

  const control = new ControlServer(controlSocketPath(config.gateway.dataDir), log)
  registerControlHandlers(control, {
    status: health, boards: () => [...serial.links, ...firmata.links], journal, ota, log,
    revoke: (kind, id) => (kind === 'device' ? revokeDevice(id) : broker.revoke(kind, id)),
  })

  // First: a second gateway on the same data dir stops here, before it touches anything.
  await control.start()
  registry.open()
  registry.markAllOffline()
  // The journal listens from here on (buffering until its worker is up); its worker starts beside the stores'.
  journal.attach(bus)
  const journalReady = journal.start()
  journalReady.catch(() => undefined)
  await history?.start()
  await outbox.start()
  if (outbox.recovery) {
    const r = outbox.recovery
    log.error({ movedTo: r.movedTo, salvaged: r.salvaged, unreadable: r.unreadable, err: r.error }, 'OUTBOX CORRUPTED: the damaged file was moved aside and what could be read was salvaged into a fresh outbox; starting degraded')
  }
  await history?.catchUp()
  try {
    await journalReady
    alerts.start() // before the links: every device's first online is seen
    await broker.start()
    await ota.start()
    await ha?.start()
    for (const u of upstreams) await u.start()
    for (const f of forwarders) f.start()
    serial.start()
    firmata.start()
    xmpp?.start()
    if (http) {
      http.route('/healthz', async (_req, res) => {
        const h = await health()
        sendJson(res, h.status === 'failed' ? 503 : 200, h)
      })
      http.route('/metrics', async (_req, res) => {
        await status.refresh()
        res.writeHead(200, { 'content-type': metrics.contentType }).end(await metrics.text())
      })
      dashboard?.start()
      await http.start()
    }
    await camera.start()
  } catch (err) {
    alerts.stop()
    await ha?.stop().catch(() => undefined)
    await xmpp?.stop().catch(() => undefined)
    await camera.stop().catch(() => undefined)
    await ota.stop().catch(() => undefined)
    await serial.stop().catch(() => undefined)
    await firmata.stop().catch(() => undefined)
    await broker.stop().catch(() => undefined)
    await outbox.close().catch(() => undefined)
    await history?.stop().catch(() => undefined)
    await journal.close().catch(() => undefined)
    registry.close()
    await control.stop()
    throw err
  }
  const unwatchLoop = metrics.watchEventLoop()
  const timers = [
    setInterval(() => { try { registry.flushSeen() } catch (err) { log.warn({ err: (err as Error).message }, 'registry flush failed') } }, 5000),
    setInterval(() => { void status.refresh() }, 5000),
  ]

  const listening = broker.listeners.map((l) => `mqtt${l.kind === 'tcp' ? '' : '+' + l.kind}://${l.host}:${l.port}${l.path ?? ''}`)
  for (const l of serial.links) listening.push(`serial:${l.config.path} (${l.config.device})`)
  for (const l of firmata.links) listening.push(`firmata:${l.config.path} (${l.config.device})`)
  if (http) listening.push(`http://${config.http.host}:${http.port} (${dashboard ? 'dashboard, ' : ''}/healthz, /metrics)`)
  if (config.camera.enabled) listening.push(`rtp://127.0.0.1:${config.camera.rtpPort} (camera source)`)
  const gcMs = collectStartupGarbage() // gives the start-up heap back ~8 s from now (gateway/heap.ts)
  log.info({ gateway: config.gateway.id, dataDir: resolve(config.gateway.dataDir), listening, upstreams: upstreams.map((u) => u.name), readyMs: Math.round(performance.now() - started), gcMs: Math.round(gcMs) }, 'edgeway ready')

  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      log.info('stopping: no new connections, committing pending readings')
      for (const t of timers) clearInterval(t)
      alerts.stop() // first: devices going offline with the gateway raise nothing
      unwatchLoop()
      // First: subscribers get one "gateway stopped" presence, not an offline alert per device as the broker stops.
      await xmpp?.stop()
      await camera.stop()
      await ha?.stop() // its offline status, retained, while the broker still runs
      broker.stopAccepting()
      await ota.stop()
      await broker.stop()
      await serial.stop()
      await firmata.stop()
      for (const f of forwarders) f.stop()
      commands.close()
      await outbox.close()
      await history?.stop()
      await journal.close()
      await Promise.all(upstreams.map((u) => u.close()))
      await dashboard?.stop()
      await http?.stop()
      await control.stop()
      registry.close()
      log.info('stopped')
    })()
    return stopping
  }
  return { broker, http, outbox, registry, serial, commands, camera, dashboard, control, ota, stop }
}
