// The embedded MQTT broker: the one file that imports aedes. Listeners (TCP, TLS, WebSocket), authentication,
// the topic ACL and the durable telemetry intake are wired here.
import { EventEmitter } from 'node:events'
import { Aedes, type Client, type PublishPacket, type Subscription, type AuthenticateError } from 'aedes'
import { createServer as createNetServer, Socket as NetSocket, type Server as NetServer } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { readFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Config } from '../config/schema.ts'
import type { Registry } from '../registry/registry.ts'
import type { Metrics } from '../metrics.ts'
import type { GatewayBus } from '../events.ts'
import type { OutboxClient } from '../outbox/client.ts'
import { DEVICE_ID_RE } from '../readings.ts'
import { SqlitePersistence } from './persistence.ts'
import { acceptWebSocketStreams } from '../net/websocket.ts'
import { coalesceWrites } from '../net/coalesce.ts'
import { guardPacketSize, PacketTooLargeError } from './packet-guard.ts'
import { classifyTopic, mayMatchTelemetry, mayPublish, maySubscribe } from './policy.ts'
import { TelemetryIntake } from './intake.ts'
import { FastAcks, ackTag } from './fast-acks.ts'
import { parseFirmwareReport } from '../ota/protocol.ts'

export interface BrokerDeps {
  config: Config['mqtt']
  persistenceFile: string
  registry: Registry
  outbox: Pick<OutboxClient, 'append' | 'appendOwned' | 'onCommitted' | 'onRefused' | 'onAppendFailed'>
  metrics: Metrics
  bus: GatewayBus
  log: Logger
}

interface Identity {
  device: string
  open: boolean
  /** The last topic the fast path took, and its device: a device publishes to one topic, checked once. */
  fastTopic?: string
  fastDevice?: string
}

/** The parts of aedes 1.x's Client the telemetry fast path uses (checked at run time: absent, there is no fast path). */
interface AedesClientInternals {
  _parser: EventEmitter
  _keepaliveInterval: number
  _keepaliveTimer: { refresh(): void } | null
  connected: boolean
  conn: { write(b: Buffer): unknown }
}
const FAST_PENDING = 256
const FAST_PENDING_BYTES = 1 << 20

export interface ListenerInfo { kind: 'tcp' | 'tls' | 'ws'; host: string; port: number; path?: string }

/** Connect return codes (MQTT 3.1.1 table 3.1). */
const IDENTIFIER_REJECTED = 2
const BAD_USERNAME_OR_PASSWORD = 4
const NOT_AUTHORIZED = 5

/** An error the gateway raised on purpose (already logged and counted): aedes closes the connection with it. */
class RefusedError extends Error {}

function authError(code: number, message: string): AuthenticateError {
  return Object.assign(new RefusedError(message), { returnCode: code }) as AuthenticateError
}

export class MqttBroker {
  private aedes: Aedes | null = null
  private persistence: SqlitePersistence | null = null
  private readonly servers: (NetServer | HttpServer)[] = []
  private closeWs: (() => Promise<void>) | null = null
  private serversClosed: Promise<void> | null = null
  private readonly identities = new WeakMap<Client, Identity>()
  /** Connected clients' subscriptions that can match a telemetry topic (clean sessions are not in the persistence). */
  private readonly liveWatchers = new Map<Client, Set<string>>()
  private readonly rejectEmptyId = new WeakSet<Client>()
  private readonly gone = new WeakSet<Client>()
  /** Connections per device: a device is offline only when its last connection ends. */
  private readonly deviceConns = new Map<string, number>()
  private readonly intake: TelemetryIntake
  private commandResult: ((device: string, name: string, payload: Buffer) => void) | null = null
  private otaUplink: ((device: string, kind: 'request' | 'status', payload: Buffer) => void) | null = null
  readonly listeners: ListenerInfo[] = []

  constructor(private readonly d: BrokerDeps) {
    this.intake = new TelemetryIntake({
      outbox: d.outbox, metrics: d.metrics, bus: d.bus, log: d.log,
      reportError: (device, e) => this.publish(`devices/${device}/errors`, JSON.stringify({ ...e, at: new Date().toISOString() }), 0, false),
    })
  }

  get connectedClients(): number { return this.aedes?.connectedClients ?? 0 }
  get connectedDevices(): string[] { return [...this.deviceConns.keys()] }
  isDeviceOnline(device: string): boolean { return this.deviceConns.has(device) }
  /** Results devices publish to `devices/<id>/cmd/<name>/result` go here (the command router). */
  onCommandResult(listener: (device: string, name: string, payload: Buffer) => void): void { this.commandResult = listener }
  /** OTA requests and status a device publishes to `devices/<id>/ota/request|status` go here (the OTA service). */
  onOtaUplink(listener: (device: string, kind: 'request' | 'status', payload: Buffer) => void): void { this.otaUplink = listener }

  async start(): Promise<void> {
    const cfg = this.d.config
    const log = this.d.log
    if (cfg.openBroker) {
      log.warn('OPEN BROKER MODE: anonymous clients, no topic ACL. Lab use only: anyone who reaches the port can publish and read everything.')
    } else if (cfg.allowAnonymous) {
      log.warn('anonymous MQTT clients are allowed (mqtt.allowAnonymous): each is confined to devices/<clientId>/')
    }
    this.persistence = new SqlitePersistence({ file: this.d.persistenceFile })
    const aedes = await Aedes.createBroker({
      persistence: this.persistence,
      connectTimeout: cfg.connectTimeoutMs,
      keepaliveLimit: cfg.keepaliveLimit,
      // Device ids are up to 64 characters; this limit only applies to MQTT 3.1 (3.1.1 has none).
      maxClientsIdLength: 64,
      heartbeatInterval: 60_000,
      preConnect: (client, packet, cb) => {
        // MQTT-3.1.3-8: a zero-length client id with clean session off must be rejected with code 2; aedes accepts it.
        if ((packet.clientId ?? '').length === 0 && packet.clean === false) this.rejectEmptyId.add(client)
        cb(null, true)
      },
      authenticate: (client, username, password, cb) => { this.authenticate(client, username, password).then((r) => cb(null, r), (e: AuthenticateError) => cb(e, false)) },
      authorizePublish: (client, packet, cb) => this.authorizePublish(client, packet, cb),
      authorizeSubscribe: (client, sub, cb) => this.authorizeSubscribe(client, sub, cb),
    })
    this.aedes = aedes
    aedes.on('clientReady', (client) => this.onClientReady(client))
    aedes.on('clientDisconnect', (client) => { this.liveWatchers.delete(client); this.onClientGone(client, 'disconnect') })
    aedes.on('subscribe', (subs, client) => {
      const watching = subs.filter((x) => mayMatchTelemetry(x.topic)).map((x) => x.topic)
      if (client && watching.length) { const set = this.liveWatchers.get(client) ?? new Set<string>(); for (const f of watching) set.add(f); this.liveWatchers.set(client, set) }
    })
    aedes.on('unsubscribe', (topics, client) => {
      const set = client && this.liveWatchers.get(client)
      if (!set) return
      for (const f of topics) set.delete(f)
      if (set.size === 0) this.liveWatchers.delete(client)
    })
    aedes.on('keepaliveTimeout', (client) => log.info({ clientId: client.id }, 'mqtt keepalive timeout'))
    aedes.on('clientError', (client, err) => this.onClientError(client, err))
    aedes.on('connectionError', (client, err) => this.onClientError(client, err))

    const handle = (stream: Duplex | import('node:net').Socket): void => {
      if (stream instanceof NetSocket) coalesceWrites(stream)
      const client = aedes.handle(stream)
      guardPacketSize(client, cfg.maxPacketSize)
      this.installFastPath(client)
    }
    if (cfg.tcp.enabled) {
      const srv = createNetServer(handle)
      await this.listen(srv, cfg.tcp.host, cfg.tcp.port, 'tcp')
    }
    if (cfg.tls.enabled) {
      const srv = createTlsServer({
        cert: readFileSync(cfg.tls.cert!), key: readFileSync(cfg.tls.key!),
        ...(cfg.tls.ca ? { ca: readFileSync(cfg.tls.ca) } : {}),
        requestCert: cfg.tls.requestCert, rejectUnauthorized: cfg.tls.requestCert,
      }, handle)
      srv.on('tlsClientError', (err) => { this.d.metrics.refusals.inc({ reason: 'tls' }); log.warn({ err: err.message }, 'mqtt tls handshake failed') })
      await this.listen(srv, cfg.tls.host, cfg.tls.port, 'tls')
    }
    if (cfg.ws.enabled) {
      const srv = createHttpServer((_req, res) => { res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket: connect with a WebSocket client\n') })
      this.closeWs = acceptWebSocketStreams(srv, { path: cfg.ws.path, maxPayload: cfg.maxPacketSize + 5, protocols: ['mqtt', 'mqttv3.1'] }, (stream) => handle(stream))
      await this.listen(srv, cfg.ws.host, cfg.ws.port, 'ws', cfg.ws.path)
    }
  }

  /** Stops accepting connections (first step of shutdown); connected clients keep working until stop(). */
  stopAccepting(): void {
    // server.close() completes only once every connection has ended, which stop() brings about.
    this.serversClosed ??= Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined)
  }

  async stop(): Promise<void> {
    this.stopAccepting()
    const closing = this.serversClosed
    await this.closeWs?.()
    const aedes = this.aedes
    if (aedes) await new Promise<void>((resolve) => aedes.close(() => resolve()))
    await closing
    if (this.persistence) await this.persistence.destroy().catch((err: Error) => this.d.log.warn({ err: err.message }, 'broker persistence close'))
    this.aedes = null
  }

  /** Server-side publish (errors, commands, state); does not go through the device ACL. */
  publish(topic: string, payload: string | Buffer, qos: 0 | 1 | 2, retain: boolean): Promise<void> {
    const aedes = this.aedes
    if (!aedes) return Promise.reject(new Error('broker not running'))
    const packet = { cmd: 'publish', topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos, retain, dup: false } as PublishPacket
    return new Promise((resolve, reject) => aedes.publish(packet, (err) => (err ? reject(err) : resolve())))
  }

  private async listen(srv: NetServer | HttpServer, host: string, port: number, kind: ListenerInfo['kind'], path?: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot listen for mqtt ${kind} on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`)))
      srv.listen(port, host, () => resolve())
    })
    srv.on('error', (err) => this.d.log.error({ err: err.message, kind }, 'mqtt listener error'))
    const addr = srv.address()
    const actual = addr && typeof addr === 'object' ? addr.port : port
    this.servers.push(srv)
    this.listeners.push({ kind, host, port: actual, ...(path ? { path } : {}) })
  }

  private refuse(reason: string, detail: string, ctx: { device?: string; clientId?: string; topic?: string }): void {
    this.d.metrics.refusals.inc({ reason })
    this.d.log.warn({ reason, ...ctx }, `refused: ${detail}`)
    this.d.bus.safeEmit('refusal', { reason, detail, ...(ctx.device ? { device: ctx.device } : {}), ...(ctx.clientId ? { clientId: ctx.clientId } : {}) })
  }

  private async authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<boolean> {
    const cfg = this.d.config
    const clientId = client.id
    if (this.rejectEmptyId.has(client)) {
      this.refuse('empty_client_id', 'zero-length client id with clean session off (MQTT-3.1.3-8)', {})
      throw authError(IDENTIFIER_REJECTED, 'identifier rejected: a persistent session needs a client id')
    }
    if (username !== undefined && username !== '') {
      if (!DEVICE_ID_RE.test(username)) {
        this.refuse('bad_credentials', `malformed device id in username "${username.slice(0, 80)}"`, { clientId })
        throw authError(BAD_USERNAME_OR_PASSWORD, 'bad user name or password')
      }
      const ok = password !== undefined && await this.d.registry.verify(username, password.toString('utf8'))
      if (!ok) {
        this.refuse('bad_credentials', `wrong or missing secret for device "${username}"`, { device: username, clientId })
        throw authError(BAD_USERNAME_OR_PASSWORD, 'bad user name or password')
      }
      this.identities.set(client, { device: username, open: cfg.openBroker })
      return true
    }
    if (cfg.openBroker || cfg.allowAnonymous) {
      this.identities.set(client, { device: clientId, open: cfg.openBroker })
      return true
    }
    this.refuse('anonymous', 'connection without credentials (anonymous access is off)', { clientId })
    throw authError(NOT_AUTHORIZED, 'not authorized: this gateway needs device credentials')
  }

  /**
   * Telemetry fast path. aedes runs every PUBLISH through its full pipeline (handler series, ack write with a deferred
   * callback, broker.publish with a subscription match and the offline queue) and reads a connection's next chunk only
   * once all of that finished for every packet of the current one. A QoS 0/1 telemetry publish that nobody
   * subscribes to needs none of it: it is checked exactly as authorizePublish would, handed to the outbox, and its
   * PUBACK is written after the commit. Anything else (other topics, QoS 2, retain, an ACL refusal, a telemetry
   * subscriber present, more than FAST_PENDING uncommitted publishes on this connection) takes aedes' path unchanged.
   */
  private installFastPath(client: Client): void {
    const c = client as unknown as Partial<AedesClientInternals>
    const parser = c._parser
    const enqueue = parser?.listeners('packet')[0] as ((this: EventEmitter, p: unknown) => void) | undefined
    if (!parser || !enqueue || typeof c._keepaliveInterval !== 'number' || !c.conn) return
    const internals = c as AedesClientInternals
    const acks = new FastAcks({
      get connected() { return internals.connected },
      write: (b) => internals.conn.write(b),
      fail: (err) => (client as unknown as EventEmitter).emit('error', err),
    })
    const broker = this
    parser.removeListener('packet', enqueue)
    parser.on('packet', function (this: EventEmitter, packet: { cmd: string }) {
      if (packet.cmd !== 'publish' || !broker.fastPublish(client, internals, acks, packet as PublishPacket)) enqueue.call(this, packet)
    })
  }

  /** True if the publish was taken (stored, acked after the commit); false: aedes handles it. */
  private fastPublish(client: Client, c: AedesClientInternals, acks: FastAcks, packet: PublishPacket): boolean {
    if (packet.qos === 2 || packet.retain || !c.connected) return false
    const id = this.identities.get(client)
    if (!id || acks.pending >= FAST_PENDING || acks.pendingBytes >= FAST_PENDING_BYTES) return false
    const topic = packet.topic
    let device = id.fastDevice
    if (topic !== id.fastTopic || device === undefined) {
      const t = classifyTopic(topic)
      if (!t || t.kind !== 'telemetry' || !DEVICE_ID_RE.test(t.device)) return false
      if (!id.open && !mayPublish(id.device, topic, t).ok) return false
      id.fastTopic = topic
      device = id.fastDevice = t.device
    }
    if (this.liveWatchers.size > 0 || this.persistence?.telemetryWatched !== false) return false
    if (c._keepaliveInterval > 0) c._keepaliveTimer?.refresh()
    const payload = packet.payload as Buffer
    const tag = ackTag(packet.messageId ?? 0, packet.qos === 1, payload.length)
    acks.take(tag)
    this.intake.handleOwned(device, payload, acks, tag)
    return true
  }

  private authorizePublish(client: Client | null, packet: PublishPacket, cb: (err?: Error | null) => void): void {
    const topic = packet.topic
    const identity = client ? this.identities.get(client) : undefined
    // client === null: a stored will of a client from before a restart; it passed the ACL when it was set.
    if (client && !identity) return cb(new RefusedError('not authenticated'))
    const t = classifyTopic(topic)
    if (identity && !identity.open) {
      const d = mayPublish(identity.device, topic, t)
      if (!d.ok) {
        this.refuse('acl_publish', d.reason, { device: identity.device, clientId: client!.id, topic })
        return cb(new RefusedError(`publish to "${topic}" refused: ${d.reason}`))
      }
    }
    if (t && client) {
      const kind = t.kind
      if (kind === 'telemetry') {
        if (!DEVICE_ID_RE.test(t.device)) {
          this.refuse('bad_device_id', `telemetry for malformed device id "${t.device.slice(0, 80)}"`, { clientId: client.id, topic })
          return cb(new RefusedError('invalid device id in topic'))
        }
        const persistence = this.persistence
        if (packet.qos === 2 && packet.dup && persistence) {
          // A QoS 2 retransmission whose PUBREC was lost is already stored (aedes keeps it until PUBREL):
          // store it once, so QoS 2 stays exactly-once into the outbox.
          persistence.incomingGetPacket(client, { ...packet, messageId: packet.messageId ?? 0 } as never).then(
            () => cb(null),
            () => this.intake.handle(t.device, packet.payload as Buffer, cb),
          )
          return
        }
        this.intake.handle(t.device, packet.payload as Buffer, cb)
        return
      }
      if (kind === 'state') this.noteState(t.device, packet.payload as Buffer)
      if (kind === 'cmd_result' && this.commandResult) {
        try { this.commandResult(t.device, t.rest.split('/')[1]!, packet.payload as Buffer) } catch (err) {
          this.d.log.error({ device: t.device, err: (err as Error).message }, 'command result listener failed')
        }
      }
      if ((kind === 'ota_request' || kind === 'ota_status') && this.otaUplink) {
        try { this.otaUplink(t.device, kind === 'ota_request' ? 'request' : 'status', packet.payload as Buffer) } catch (err) {
          this.d.log.error({ device: t.device, err: (err as Error).message }, 'ota listener failed')
        }
      }
    }
    cb(null)
  }

  private authorizeSubscribe(client: Client, sub: Subscription, cb: (err: Error | null, sub?: Subscription | null) => void): void {
    const identity = this.identities.get(client)
    if (!identity) return cb(new Error('not authenticated'))
    if (!identity.open) {
      const d = maySubscribe(identity.device, sub.topic)
      if (!d.ok) {
        this.refuse('acl_subscribe', d.reason, { device: identity.device, clientId: client.id, topic: sub.topic })
        return cb(null, null) // SUBACK 0x80 for this filter; the connection stays up
      }
    }
    cb(null, sub)
  }

  /** A retained state message may carry the firmware version (and health, for OTA): the registry keeps the version. */
  private noteState(device: string, payload: Buffer): void {
    if (payload[0] !== 0x7b) return
    // state is free-form; only the firmware and healthy fields are read
    const fw = parseFirmwareReport(payload)
    if (!fw) return
    this.d.registry.setFirmware(device, fw.version)
    this.d.bus.safeEmit('firmware', { device, version: fw.version, healthy: fw.healthy })
  }

  private onClientReady(client: Client): void {
    this.d.metrics.clientsConnected.set(this.connectedClients)
    const identity = this.identities.get(client)
    if (!identity) return
    const n = (this.deviceConns.get(identity.device) ?? 0) + 1
    this.deviceConns.set(identity.device, n)
    this.d.metrics.devicesConnected.set(this.deviceConns.size)
    if (n === 1 && DEVICE_ID_RE.test(identity.device)) {
      try { this.d.registry.setOnline(identity.device, true, 'mqtt') } catch (err) { this.d.log.warn({ err: (err as Error).message }, 'registry update failed') }
      this.d.bus.safeEmit('deviceOnline', { device: identity.device, link: 'mqtt', clientId: client.id })
    }
    this.d.log.info({ clientId: client.id, device: identity.device, clean: client.clean }, 'mqtt client connected')
  }

  private onClientGone(client: Client, reason: string): void {
    this.d.metrics.clientsConnected.set(this.connectedClients)
    const identity = this.identities.get(client)
    // The identity stays (WeakMap): aedes may still publish this client's will through authorizePublish.
    if (!identity || this.gone.has(client)) return
    this.gone.add(client)
    const n = (this.deviceConns.get(identity.device) ?? 1) - 1
    if (n > 0) { this.deviceConns.set(identity.device, n); return }
    this.deviceConns.delete(identity.device)
    this.d.metrics.devicesConnected.set(this.deviceConns.size)
    if (DEVICE_ID_RE.test(identity.device)) {
      try { this.d.registry.setOnline(identity.device, false, 'mqtt') } catch (err) { this.d.log.warn({ err: (err as Error).message }, 'registry update failed') }
      this.d.bus.safeEmit('deviceOffline', { device: identity.device, link: 'mqtt', clientId: client.id, reason })
    }
    this.d.log.info({ clientId: client.id, device: identity.device, reason }, 'mqtt client disconnected')
  }

  private onClientError(client: Client, err: Error): void {
    if (err instanceof RefusedError) {
      // already logged and counted where it was raised
    } else if (err instanceof PacketTooLargeError) {
      this.refuse('packet_too_large', err.message, { clientId: client.id })
    } else {
      const reason = /parse|invalid|malformed|header|protocol|packet|length|must/i.test(err.message) ? 'malformed_packet' : 'client_error'
      if (reason === 'malformed_packet') this.refuse(reason, err.message, { clientId: client.id })
      else this.d.log.info({ clientId: client.id, err: err.message }, 'mqtt client error: connection closed')
    }
    // aedes closes the connection; only that client is affected.
    this.onClientGone(client, `error: ${err.message}`)
  }
}
