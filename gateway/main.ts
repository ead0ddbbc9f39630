// Wires the gateway together and owns start/stop order. Constructors elsewhere do no I/O; this does it all.
import { dirname, join, resolve } from 'node:path'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { Config } from './config/schema.ts'
import { Registry } from './registry/registry.ts'
import { OutboxClient } from './outbox/client.ts'
import type { OutboxStats } from './outbox/types.ts'
import { recoveryReasons } from './outbox/protocol.ts'
import { MqttBroker } from './broker/broker.ts'
import { resolveRoles } from './broker/roles.ts'
import { Metrics } from './metrics.ts'
import { GatewayBus } from './events.ts'
import { HttpServer, sendJson } from './http/server.ts'
import { evaluateHealth } from './health.ts'
import { Forwarder } from './upstream/forwarder.ts'
import type { Upstream } from './upstream/types.ts'
import { CommandRouter, type CommandResult } from './commands/router.ts'
import { CameraService } from './camera/service.ts'
import { cameraHealthReasons } from './camera/health.ts'
import { OtaService } from './ota/service.ts'
import { OtaStore } from './ota/store.ts'
import { DashboardServer } from './dashboard/server.ts'
import { readingMetrics } from './readings.ts'
import { ControlServer, type ControlHandler } from './control/server.ts'
import { controlSocketPath } from './control/client.ts'
import type { XmppBridge } from '../bridges/xmpp/bridge.ts'

/** For the heartbeat: package.json is next to gateway/ in the source tree, two levels up from dist/gateway/. */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 4; i++, dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version
  }
  return 'unknown'
}
const VERSION = packageVersion()
import { SerialLinks } from '../devices/serial/link.ts'
import { toSerialCommand } from '../devices/serial/commands.ts'
import { FLASH_METHOD, flashHandler } from '../devices/flash/service.ts'
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
    case 'mqtt': return new (await import('./upstream/mqtt.ts')).MqttUpstream(u, gatewayId, log)
    case 'amqp': return new (await import('../bridges/amqp/upstream.ts')).AmqpUpstream(u, gatewayId, log)
  }
}

export async function startGateway(config: Config, log: Logger): Promise<RunningGateway> {
  const started = performance.now()
  const files = dataFiles(config)
  const metrics = new Metrics()
  const bus = new GatewayBus((err, event) => log.error({ err: (err as Error).message, event }, 'event listener failed'))
  const registry = new Registry(files.registry, { liveState: 'NORMAL' })
  const enabled = config.upstreams.filter((u) => u.enabled)
  // XMPP bridge (devices as contacts; its PubSub upstream joins the outbox cursors). Closures: used after start.
  // Which devices exist and which are online, over every link: for the command router and the XMPP bridge.
  const linkDevices = (): string[] => [...serial.links, ...firmata.links].map((l): string => l.config.device)
  const isOnline = (d: string): boolean => broker.isDeviceOnline(d) || (serial.byDevice(d)?.status().online ?? false) || (firmata.byDevice(d)?.status().online ?? false)
  const xmpp: XmppBridge | null = config.xmpp.enabled ? new (await import('../bridges/xmpp/bridge.ts')).XmppBridge(config.xmpp, {
    gatewayId: config.gateway.id, dataDir: config.gateway.dataDir, bus, log: log.child({ bridge: 'xmpp' }),
    devices: (): string[] => [...new Set([...registry.list().map((d) => d.id), ...broker.connectedDevices, ...linkDevices()])],
    isOnline, dispatch: (cmd): Promise<CommandResult> => commands.dispatch(cmd),
  }) : null
  if (xmpp?.upstream && enabled.some((u) => u.name === xmpp.upstream!.name)) throw new Error(`xmpp.pubsub.upstream "${xmpp.upstream.name}" clashes with an entry of upstreams`)
  const outbox = new OutboxClient({
    file: files.outbox, gatewayId: config.gateway.id, upstreams: [...enabled.map((u) => u.name), ...(config.xmpp.enabled && config.xmpp.pubsub.enabled ? [config.xmpp.pubsub.upstream] : [])],
    maxBytes: config.outbox.maxBytes, maxAgeMs: config.outbox.maxAgeSeconds * 1000,
    synchronous: config.outbox.synchronous, batchRows: config.outbox.batchRows, diskFullHoldMs: config.outbox.diskFullHoldSeconds * 1000, priority: config.outbox.priority, log,
  })
  const broker = new MqttBroker({ config: config.mqtt, roles: resolveRoles(config.roles), persistenceFile: files.broker, registry, outbox, metrics, bus, log })
  const upstreams = await Promise.all(enabled.map((u) => makeUpstream(u, config.gateway.id, log.child({ upstream: u.name }))))
  if (xmpp?.upstream) upstreams.push(xmpp.upstream)
  const forwarders = upstreams.map((u) => new Forwarder(u, outbox, metrics, log))
  const serial = new SerialLinks(config.serial.ports, { outbox, registry, bus, log })
  const firmata = new FirmataLinks(config.firmata.boards, { outbox, registry, bus, log })
  metrics.setReplySource(() => upstreams.flatMap((u) => {
    const s = u.status()
    return s.repliesFailed === undefined ? [] : [{ upstream: u.name, sent: s.repliesSent ?? 0, failed: s.repliesFailed }]
  }))
  metrics.setSerialSource(() => serial.links.map((l) => { const s = l.status(); return { device: s.device, ...s.framing, reopens: s.reopens } }))
  // Commands from any upstream go to the device's link: a serial board, or `devices/<id>/cmd/<name>` over MQTT
  // (whose result comes back through the broker hook below).
  const commands = new CommandRouter({
    isKnown: (d) => registry.get(d) !== undefined || broker.isDeviceOnline(d) || linkDevices().includes(d),
    isOnline,
    send: async (d, name, payload, expiresAt) => {
      const board = firmata.byDevice(d)
      const link = serial.byDevice(d)
      // MQTT 5: a command carries its Message Expiry Interval: queued for a device that dropped off, it is not
      // delivered after the router has already reported it expired (or timed out) to its sender
      if (!board && !link) return broker.publish(`devices/${d}/cmd/${name}`, payload, 1, false, expiresAt === undefined ? undefined : { messageExpiryInterval: Math.max(1, Math.ceil((expiresAt - Date.now()) / 1000)) })
      // Firmata actuators act at once; a serial board answers in-band (COMMAND_RESULT). Either way the answer goes
      // to the router as the device's result.
      const { id, args } = JSON.parse(payload) as { id: string; args: unknown }
      let reply: { id: string; result: unknown } | { id: string; error: string }
      if (board) {
        const r = board.command(name, args)
        reply = r.ok ? { id, result: r.result } : { id, error: r.error }
      } else {
        const mapped = toSerialCommand(name, args)
        reply = mapped.ok
          ? await link!.send(mapped.command).then((r) => (r === 'ok' || r === 'sent' ? { id, result: r } : { id, error: r }))
          : { id, error: mapped.error }
      }
      commands.handleResult(d, name, JSON.stringify(reply))
    },
  })
  broker.onCommandResult((d, name, payload) => { commands.handleResult(d, name, payload) })
  const ota = new OtaService({ publish: (t, p, q, r) => broker.publish(t, p, q, r), registry, bus, store: new OtaStore(resolve(config.gateway.dataDir)), log, metrics })
  broker.onOtaUplink((d, kind, payload) => ota.handleUplink(d, kind, payload))
  for (const u of upstreams) u.onCommand?.((cmd) => commands.dispatch(cmd))
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
  let lastStats: OutboxStats | null = null
  let outboxError: string | null = null
  outbox.onFailure((err) => { outboxError = err.message })
  outbox.onDropped((d) => {
    metrics.drops.inc({ reason: d.reason }, d.rows)
    log.warn({ reason: d.reason, rows: d.rows, bytes: d.bytes }, 'outbox retention dropped the oldest readings')
  })
  let diskFullLogged = false
  const diskFull = (err: Error): void => {
    if (diskFullLogged) return
    diskFullLogged = true
    log.error({ err: err.message, holdSeconds: config.outbox.diskFullHoldSeconds }, 'DISK FULL: the outbox cannot store readings; devices wait for their acks (connections stay open) while the gateway retries')
  }
  outbox.onAppendHeld(diskFull)
  outbox.onAppendFailed((err) => { if (err.code === 'disk_full') diskFull(err) })
  const refreshStats = async (): Promise<OutboxStats | null> => {
    try {
      const s = await outbox.stats()
      lastStats = s
      metrics.outboxDepth.set(s.depth)
      metrics.outboxBytes.set(s.bytes)
      metrics.outboxFileBytes.set(s.fileBytes)
      metrics.outboxOldest.set(s.oldestAgeMs / 1000)
      metrics.outboxDiskFull.set(s.diskFull ? 1 : 0)
      if (!s.diskFull && diskFullLogged) { diskFullLogged = false; log.info('outbox writes succeed again') }
      for (const u of s.upstreams) metrics.upstreamLag.set({ upstream: u.upstream }, u.lag)
      return s
    } catch (err) {
      outboxError = (err as Error).message
      return null
    }
  }
  const health = async () => {
    const stats = await refreshStats()
    const cam = camera.status()
    const now = Date.now()
    return {
      ...evaluateHealth({
        outbox: stats, outboxError, maxBytes: config.outbox.maxBytes, now,
        upstreams: upstreams.map((u) => ({ name: u.name, status: u.status() })),
        degraded: [...cameraHealthReasons(cam, now), ...recoveryReasons(outbox.recovery, existsSync)],
      }),
      gateway: config.gateway.id,
      uptimeSeconds: Math.round(process.uptime()),
      mqtt: { clients: broker.connectedClients, devices: broker.connectedDevices.length },
      outbox: stats && { depth: stats.depth, bytes: stats.bytes, oldestAgeSeconds: Math.round(stats.oldestAgeMs / 1000), fileBytes: stats.fileBytes, drops: stats.drops, diskFull: stats.diskFull, deadLettered: stats.deadLettered },
      upstreams: upstreams.map((u) => {
        const s = u.status()
        const c = stats?.upstreams.find((x) => x.upstream === u.name)
        return { name: u.name, connected: s.connected, since: new Date(s.since).toISOString(), lastError: s.lastError, ...(s.repliesFailed !== undefined ? { repliesFailed: s.repliesFailed } : {}), lag: c?.lag ?? null, inflight: c?.inflight ?? null, ackedThrough: c?.ackedUpto ?? null }
      }),
      camera: cam,
    }
  }

  // Heartbeat content for upstreams that publish one: the same figures /healthz shows.
  const statusSnapshot = async (): Promise<Record<string, unknown>> => {
    const s = (await refreshStats()) ?? lastStats
    return {
      version: VERSION,
      uptimeSeconds: Math.round(process.uptime()),
      devicesOnline: broker.connectedDevices.length,
      backlog: s && { depth: s.depth, bytes: s.bytes, oldestAgeSeconds: Math.round(s.oldestAgeMs / 1000), deadLettered: s.deadLettered },
      upstreams: upstreams.map((u) => ({ name: u.name, connected: u.status().connected, lag: s?.upstreams.find((x) => x.upstream === u.name)?.lag ?? null })),
    }
  }
  for (const u of upstreams) u.setStatusSource?.(statusSnapshot)
  const dashboard = http && config.dashboard.enabled ? new DashboardServer({
    config: config.dashboard, http, bus, log, gatewayId: config.gateway.id, version: VERSION, mqttPort: config.mqtt.tcp.port,
    devices: () => registry.list(), device: (id) => registry.get(id), addDevice: (id) => registry.add(id),
    dispatch: (cmd) => commands.dispatch(cmd), status: health,
  }) : null
  // The camera panel's signalling rides on the dashboard WebSocket ("camera.*" messages, authenticated sessions only).
  dashboard?.addChannel(camera)

  const control = new ControlServer(controlSocketPath(config.gateway.dataDir), log)
  control.handle('status', async () => health())
  control.handle(FLASH_METHOD, flashHandler({ links: () => [...serial.links, ...firmata.links], log: log.child({ component: 'flash' }) }))
  control.handle('ota.push', (params, progress) => ota.push(params, progress))
  control.handle('ota.cancel', async (params) => ota.cancel(params))
  // `device remove|rotate-secret`, `client remove|rotate-secret` changed the registry: the running broker acts on it.
  control.handle('access.revoke', async (params) => {
    const p = params as { kind?: unknown; id?: unknown } | null
    if ((p?.kind !== 'device' && p?.kind !== 'client') || typeof p.id !== 'string') throw new Error('access.revoke needs { kind: "device" | "client", id }')
    return broker.revoke(p.kind, p.id)
  })

  // First: a second gateway on the same data dir stops here, before it touches anything.
  await control.start()
  registry.open()
  registry.markAllOffline()
  await outbox.start()
  if (outbox.recovery) {
    const r = outbox.recovery
    log.error({ movedTo: r.movedTo, salvaged: r.salvaged, unreadable: r.unreadable, err: r.error }, 'OUTBOX CORRUPTED: the damaged file was moved aside and what could be read was salvaged into a fresh outbox; starting degraded')
  }
  try {
    await broker.start()
    await ota.start()
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
        await refreshStats()
        res.writeHead(200, { 'content-type': metrics.contentType }).end(await metrics.text())
      })
      dashboard?.start()
      await http.start()
    }
    await camera.start()
  } catch (err) {
    await xmpp?.stop().catch(() => undefined)
    await camera.stop().catch(() => undefined)
    await ota.stop().catch(() => undefined)
    await serial.stop().catch(() => undefined)
    await firmata.stop().catch(() => undefined)
    await broker.stop().catch(() => undefined)
    await outbox.close().catch(() => undefined)
    registry.close()
    await control.stop()
    throw err
  }
  const unwatchLoop = metrics.watchEventLoop()
  const timers = [
    setInterval(() => { try { registry.flushSeen() } catch (err) { log.warn({ err: (err as Error).message }, 'registry flush failed') } }, 5000),
    setInterval(() => { void refreshStats() }, 5000),
  ]

  const listening = broker.listeners.map((l) => `mqtt${l.kind === 'tcp' ? '' : '+' + l.kind}://${l.host}:${l.port}${l.path ?? ''}`)
  for (const l of serial.links) listening.push(`serial:${l.config.path} (${l.config.device})`)
  for (const l of firmata.links) listening.push(`firmata:${l.config.path} (${l.config.device})`)
  if (http) listening.push(`http://${config.http.host}:${http.port} (${dashboard ? 'dashboard, ' : ''}/healthz, /metrics)`)
  if (config.camera.enabled) listening.push(`rtp://127.0.0.1:${config.camera.rtpPort} (camera source)`)
  log.info({ gateway: config.gateway.id, dataDir: resolve(config.gateway.dataDir), listening, upstreams: upstreams.map((u) => u.name), readyMs: Math.round(performance.now() - started) }, 'edgeway ready')

  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      log.info('stopping: no new connections, committing pending readings')
      for (const t of timers) clearInterval(t)
      unwatchLoop()
      // First: subscribers get one "gateway stopped" presence, not an offline alert per device as the broker stops.
      await xmpp?.stop()
      await camera.stop()
      broker.stopAccepting()
      await ota.stop()
      await broker.stop()
      await serial.stop()
      await firmata.stop()
      for (const f of forwarders) f.stop()
      commands.close()
      await outbox.close()
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
