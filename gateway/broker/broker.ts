// The embedded MQTT broker: the one file that imports aedes. Listeners (TCP, TLS, WebSocket), authentication (who
// the credentials name is login.ts), the topic ACL and the durable telemetry intake are wired here.
import { EventEmitter } from 'node:events'
import { Aedes, type Client, type PublishPacket, type Subscription, type AuthenticateError } from 'aedes'
import { createServer as createNetServer, Socket as NetSocket, type Server as NetServer } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { readFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { MqttSection } from '../config/sections.ts'
import type { Registry } from '../registry/registry.ts'
import type { Metrics } from '../metrics.ts'
import type { GatewayBus } from '../events.ts'
import type { OutboxClient } from '../outbox/client.ts'
import { DEVICE_ID_RE } from '../readings.ts'
import { packetBytes } from '../mqtt-wire.ts'
import { SqlitePersistence } from './persistence/store.ts'
import { acceptWebSocketStreams } from '../net/websocket.ts'
import { coalesceWrites } from '../net/coalesce.ts'
import { reportPresence } from '../links/presence.ts'
import { guardPackets, MalformedPacketError, PacketTooLargeError } from './packet-guard.ts'
import { RefusalLog } from '../log/refusals.ts'
import { classifyTopic, mayMatchTelemetry } from './policy.ts'
import { clientIdAllowed, clientIdNamespace, mayPublishAsPrincipal, maySubscribeAsPrincipal, ownerKey, parseOwnerKey, presenceDevice, ANONYMOUS_ROLE, type Principal } from './identity.ts'
import type { Role } from './roles.ts'
import { TelemetryIntake } from './intake.ts'
import { Logins, RefusedError, authError, IDENTIFIER_REJECTED, NOT_AUTHORIZED, type RefusalContext } from './login.ts'
import { TelemetryFastPath, type FastIdentity } from './fast-path.ts'
import {
  installDedupe,
  RC, isV5, addDisconnectReasons, disconnectWithReason, refusePacketTooLarge,
  answeredByGateway, writeAck, cancelDelayedWill, hasDelayedWill, limitOutboundPacketSize, unsafeKey, stripWillProperties, assertClientInternals,
} from './aedes-adapter.ts'
import { DeviceUplinks, type CommandDeliveredListener, type CommandResultListener, type OtaUplinkListener } from './uplinks.ts'
import { SharedSubscriptions, parseMemberTopic, isShareTopic, SHARE_PREFIX, type MemberClient, type ShareBroker, type ShareQueue } from './shared-subscriptions.ts'
import { rewriteFilters, readyForDelivery, advertiseSharedSubscriptions, writePacketNumbersUncached } from './aedes-adapter.ts'
import { tapWrites, replayingQueue, outboundPublishSize, refuseAndStopReading, type WirePublish } from './aedes-adapter.ts'
import { OutboundFlow, type DropReason } from './outbound-flow.ts'
import { InboundQuota, RECEIVE_MAXIMUM } from './inbound-quota.ts'
import { checkUserProperties } from '../user-properties.ts'

export interface BrokerDeps {
  config: MqttSection
  /** Roles of integration clients (built-ins and the config's), by name. */
  roles: ReadonlyMap<string, Role>
  persistenceFile: string
  registry: Registry
  outbox: Pick<OutboxClient, 'append' | 'appendOwned' | 'onCommitted' | 'onRefused' | 'onAppendFailed'>
  metrics: Metrics
  bus: GatewayBus
  log: Logger
}

interface Identity extends FastIdentity {
  principal: Principal
  /** ownerKey(principal): what stored wills and sessions of this connection are stamped with. */
  key: string
  /** The device whose presence this connection counts for (null: an integration client). */
  device: string | null
  /** Set when the identity was removed or its secret rotated: nothing more is done on its behalf. */
  revoked: boolean
}

/** An MQTT 5 connection's flow control: what it is sent, and what it may send (the gateway's Receive Maximum). */
interface Flow { out: OutboundFlow; inbound: InboundQuota; refused: boolean }

/** Why a message was not sent to a client, as counted in edgeway_refusals_total. */
const DROP_REASONS: Readonly<Record<DropReason, string>> = {
  too_large: 'client_max_packet_size',
  expired: 'message_expired',
  queue_full: 'client_queue_full',
}

/** What the CONNECT asked for, kept from preConnect (aedes has replaced an empty client id by then). */
interface ConnectRequest { clientId: string; will: PublishPacket | undefined; address: string; cleanStart: boolean }

/** MQTT 5 topic aliases a client may use towards the gateway (advertised in CONNACK). */
const TOPIC_ALIAS_MAXIMUM = 32
/** How often expired MQTT 5 sessions are looked for (Session Expiry Intervals are whole seconds). */
const EXPIRY_SWEEP_MS = 1000
/** MQTT 5 Session Expiry Interval meaning "never" (MQTT 5.0 section 3.1.2.11.2). */
const SESSION_NEVER_EXPIRES = 0xffffffff
/** Reason strings of the DISCONNECTs aedes sends on its own (MQTT 5). */
const DISCONNECT_REASONS: Readonly<Record<number, string>> = {
  [RC.SESSION_TAKEN_OVER]: 'session taken over: another connection logged in with this client id',
  [RC.SERVER_SHUTTING_DOWN]: 'the gateway is shutting down',
}

export interface ListenerInfo { kind: 'tcp' | 'tls' | 'ws'; host: string; port: number; path?: string }

/** Log and refusal context of a principal. */
function ctxOf(p: Principal): { device?: string; client?: string } {
  return p.kind === 'client' ? { client: p.name } : { device: p.id }
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
  /** v5 clients gone with a delayed will still pending in aedes (revocation cancels it), by client id. */
  private readonly pendingWills = new Map<string, Client>()
  private expirySweep: NodeJS.Timeout | null = null
  private readonly gone = new WeakSet<Client>()
  /** MQTT 5 connections' flow control, from their CONNECT on (see outbound-flow.ts, inbound-quota.ts). */
  private readonly flows = new WeakMap<Client, Flow>()
  private readonly requests = new WeakMap<Client, ConnectRequest>()
  private readonly addresses = new WeakMap<Client, string>()
  /** Live connections per device: a device is online while this set is not empty (see addPresence). */
  private readonly deviceConns = new Map<string, Set<Client>>()
  /** Authenticated, not yet closed connections by client id: a takeover is only allowed to the same identity. */
  private readonly claims = new Map<string, Client>()
  private readonly intake: TelemetryIntake
  /** `$share/<group>/<filter>` groups: aedes has none (see shared-subscriptions.ts). */
  private readonly shared: SharedSubscriptions
  private readonly refusalLog: RefusalLog
  /** Who a CONNECT's credentials name (login.ts). */
  private readonly logins: Logins
  /** State, command results and deliveries, OTA uplinks: what devices report besides telemetry (uplinks.ts). */
  private readonly uplinks: DeviceUplinks
  private readonly fastPath: TelemetryFastPath
  readonly listeners: ListenerInfo[] = []

  constructor(private readonly d: BrokerDeps) {
    this.refusalLog = new RefusalLog(d.log)
    this.logins = new Logins({ config: d.config, registry: d.registry, roles: d.roles, refuse: (reason, detail, ctx) => this.refuse(reason, detail, ctx) })
    this.uplinks = new DeviceUplinks({ registry: d.registry, bus: d.bus, log: d.log })
    this.shared = new SharedSubscriptions({
      deliverable: (c) => readyForDelivery(c),
      warn: (fields, msg) => d.log.warn(fields, msg),
    })
    this.intake = new TelemetryIntake({
      outbox: d.outbox, metrics: d.metrics, bus: d.bus, log: d.log, refusals: this.refusalLog,
      reportError: (device, e) => this.publish(`devices/${device}/errors`, JSON.stringify({ ...e, at: new Date().toISOString() }), 0, false),
    })
    this.fastPath = new TelemetryFastPath({
      identity: (c) => this.identities.get(c as Client),
      mayPublish: (id, topic, t) => mayPublishAsPrincipal((id as Identity).principal, topic, t, this.anonymousRole).ok,
      telemetryWatched: () => this.liveWatchers.size > 0 || this.persistence?.telemetryWatched !== false || this.shared.watchesTelemetry,
      intake: this.intake,
      other: (c, packet) => this.beforeAedes(c as Client, packet),
    })
  }

  get connectedClients(): number { return this.aedes?.connectedClients ?? 0 }
  get connectedDevices(): string[] { return [...this.deviceConns.keys()] }
  isDeviceOnline(device: string): boolean { return this.deviceConns.has(device) }
  /** Results devices publish to `devices/<id>/cmd/<name>/result` go here (the command router). */
  onCommandResult(listener: CommandResultListener): void { this.uplinks.onCommandResult(listener) }
  /** OTA requests and status a device publishes to `devices/<id>/ota/request|status` go here (the OTA service). */
  onOtaUplink(listener: OtaUplinkListener): void { this.uplinks.onOtaUplink(listener) }
  /** A device acknowledged (PUBACK/PUBREC) a publish on its own `devices/<id>/cmd/...`: the command is delivered. */
  onCommandDelivered(listener: CommandDeliveredListener): void { this.uplinks.onCommandDelivered(listener) }

  /**
   * Whether a command to an offline device would wait for it: a stored session of the device (its id or `<id>:...`)
   * subscribed at QoS 1 or 2 to the command's topic, with no live connection.
   */
  async queuesCommand(device: string, name: string): Promise<boolean> {
    const p = this.persistence
    if (!p) return false
    const subs = await p.subscriptionsByTopic(`devices/${device}/cmd/${name}`)
    return subs.some((s) => s.qos > 0 && clientIdNamespace(s.clientId) === device && !this.claims.has(s.clientId))
  }

  async start(): Promise<void> {
    const cfg = this.d.config
    const log = this.d.log
    if (cfg.openBroker) {
      log.warn('OPEN BROKER MODE: anonymous clients, no topic ACL. Lab use only: anyone who reaches the port can publish and read everything.')
    } else if (cfg.allowAnonymous) {
      log.warn('anonymous MQTT clients are allowed (mqtt.allowAnonymous): each is confined to devices/<clientId>/')
    }
    writePacketNumbersUncached()
    this.persistence = new SqlitePersistence({ file: this.d.persistenceFile })
    const aedes = await Aedes.createBroker({
      persistence: this.persistence,
      connectTimeout: cfg.connectTimeoutMs,
      keepaliveLimit: cfg.keepaliveLimit,
      // MQTT 5: advertised in CONNACK. The limit itself is packet-guard's (on the remaining length, before the body
      // is buffered); this is the same limit as a total packet size, so aedes' own check never fires first.
      maximumPacketSize: packetBytes(cfg.maxPacketSize),
      topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
      // MQTT 5: advertised in CONNACK, enforced by InboundQuota (DISCONNECT 0x93)
      receiveMaximum: RECEIVE_MAXIMUM,
      // Device ids are up to 64 characters; this limit only applies to MQTT 3.1 (3.1.1 has none).
      maxClientsIdLength: 64,
      heartbeatInterval: 60_000,
      preConnect: (client, packet, cb) => {
        // MQTT-3.1.3-8: a zero-length client id with clean session off must be rejected with code 2 (MQTT 3.1/3.1.1;
        // MQTT 5 assigns one). An id aedes cannot hold safely is rejected the same way (see unsafeKey).
        const id = packet.clientId ?? ''
        if ((id.length === 0 && packet.clean === false && (packet.protocolVersion ?? 4) < 5) || unsafeKey(id)) this.rejectEmptyId.add(client)
        this.requests.set(client, { clientId: id, will: packet.will as PublishPacket | undefined, address: this.addresses.get(client) ?? '?', cleanStart: packet.clean !== false })
        if (packet.protocolVersion === 5) this.installFlow(client, packet.properties)
        cb(null, true)
      },
      authenticate: (client, username, password, cb) => { this.authenticate(client, username, password).then((r) => cb(null, r), (e: AuthenticateError) => cb(e, false)) },
      authorizePublish: (client, packet, cb) => this.authorizePublish(client, packet, cb),
      authorizeSubscribe: (client, sub, cb) => this.authorizeSubscribe(client, sub, cb),
    })
    this.aedes = aedes
    advertiseSharedSubscriptions()
    this.shared.attach(aedes as unknown as ShareBroker, this.persistence as unknown as ShareQueue)
    await this.restoreSharedMembers()
    aedes.on('clientReady', (client) => this.onClientReady(client))
    aedes.on('clientDisconnect', (client) => { this.liveWatchers.delete(client); this.onClientGone(client, 'disconnect') })
    // aedes reports failures of its periodic will publication here; without a listener they would end the process.
    ;(aedes as unknown as EventEmitter).on('error', (err: Error) => { if (!(err instanceof RefusedError)) log.warn({ err: err.message }, 'mqtt broker error') })
    aedes.on('subscribe', (subs, client) => {
      const watching = subs.filter((x) => mayMatchTelemetry(x.topic)).map((x) => x.topic)
      if (client && watching.length) { const set = this.liveWatchers.get(client) ?? new Set<string>(); for (const f of watching) set.add(f); this.liveWatchers.set(client, set) }
    })
    aedes.on('unsubscribe', (topics, client) => {
      if (client) this.shared.unsubscribed(client as unknown as MemberClient, topics)
      const set = client && this.liveWatchers.get(client)
      if (!set) return
      for (const f of topics) set.delete(f)
      if (set.size === 0) this.liveWatchers.delete(client)
    })
    aedes.on('keepaliveTimeout', (client) => log.info({ clientId: client.id }, 'mqtt keepalive timeout'))
    // a QoS 1/2 publish the client acknowledged (aedes passes the stored packet; a PUBREL for QoS 2)
    aedes.on('ack', (packet, client) => {
      const topic = (packet as { topic?: unknown } | undefined)?.topic
      if (!this.uplinks.wantsDeliveries || typeof topic !== 'string' || !client) return
      const t = classifyTopic(topic)
      if (t?.kind !== 'cmd' || clientIdNamespace(client.id) !== t.device) return
      this.uplinks.delivered(t.device, Buffer.from((packet as { payload?: Buffer | string }).payload ?? ''))
    })
    // aedes 2 ends a v5 session after its expiry interval in memory only (its inbound QoS 2 state, its owner and the
    // persisted expiry stay): the sweep below purges it. The sweep also ends sessions restored after a restart,
    // which aedes holds no timer for.
    aedes.on('sessionExpired', (client) => this.expireSessions([client.id]))
    this.expirySweep = setInterval(() => this.expireSessions(), EXPIRY_SWEEP_MS)
    this.expirySweep.unref()
    aedes.on('clientError', (client, err) => this.onClientError(client, err))
    aedes.on('connectionError', (client, err) => this.onClientError(client, err))

    await this.sweepStoredWills()
    const handle = (stream: Duplex | import('node:net').Socket, address: string | undefined): void => {
      if (stream instanceof NetSocket) coalesceWrites(stream)
      const client = aedes.handle(stream)
      // Before the client subscribes to anything: aedes registers these functions with each subscription.
      if (!installDedupe(client)) {
        this.d.log.error('aedes client internals changed (deliver0/deliverQoS/duplicates): connection refused, see gateway/broker/aedes-adapter.ts')
        stream.destroy()
        return
      }
      this.addresses.set(client, address ?? '?')
      // The connection's end is the one event every path (DISCONNECT, error, takeover, keepalive, revocation) ends in.
      stream.once('close', () => this.onClientGone(client, 'closed'))
      assertClientInternals(client)
      addDisconnectReasons(client, DISCONNECT_REASONS)
      limitOutboundPacketSize(client, (topic, size, max) => {
        this.d.metrics.refusals.inc({ reason: 'client_max_packet_size' })
        this.refusalLog.note('client_max_packet_size', client.id ?? '-', `not sent to "${client.id}": ${size} bytes on "${topic.slice(0, 120)}" exceed its maximum packet size (${max})`, { clientId: client.id, topic })
      })
      guardPackets(client, {
        maxPacketSize: cfg.maxPacketSize,
        // MQTT 5: DISCONNECT 0x95 with the reason; before CONNECT, and for 3.1.1, the connection just closes.
        onTooLarge: (err) => {
          if (!refusePacketTooLarge(client, err.message)) return false
          this.refuse('packet_too_large', err.message, this.errorCtx(client))
          return true
        },
      })
      // (before the fast path, so that the publishes it takes never pass this one)
      rewriteFilters(client, (filter, op, noLocal) => this.shared.rewrite(filter, op, noLocal))
      this.fastPath.install(client)
    }
    if (cfg.tcp.enabled) {
      const srv = createNetServer((s) => handle(s, s.remoteAddress))
      await this.listen(srv, cfg.tcp.host, cfg.tcp.port, 'tcp')
    }
    if (cfg.tls.enabled) {
      const srv = createTlsServer({
        cert: readFileSync(cfg.tls.cert!), key: readFileSync(cfg.tls.key!),
        ...(cfg.tls.ca ? { ca: readFileSync(cfg.tls.ca) } : {}),
        requestCert: cfg.tls.requestCert, rejectUnauthorized: cfg.tls.requestCert,
      }, (s) => handle(s, s.remoteAddress))
      srv.on('tlsClientError', (err) => { this.d.metrics.refusals.inc({ reason: 'tls' }); log.warn({ err: err.message }, 'mqtt tls handshake failed') })
      await this.listen(srv, cfg.tls.host, cfg.tls.port, 'tls')
    }
    if (cfg.ws.enabled) {
      const srv = createHttpServer((_req, res) => { res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket: connect with a WebSocket client\n') })
      this.closeWs = acceptWebSocketStreams(srv, { path: cfg.ws.path, maxPayload: cfg.maxPacketSize + 5, protocols: ['mqtt', 'mqttv3.1'] }, (stream, req) => handle(stream, req.socket.remoteAddress))
      await this.listen(srv, cfg.ws.host, cfg.ws.port, 'ws', cfg.ws.path)
    }
  }

  /** Stops accepting connections (first step of shutdown); connected clients keep working until stop(). */
  stopAccepting(): void {
    // server.close() completes only once every connection has ended, which stop() brings about.
    this.serversClosed ??= Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined)
  }

  async stop(): Promise<void> {
    if (this.expirySweep) clearInterval(this.expirySweep)
    this.stopAccepting()
    const closing = this.serversClosed
    await this.closeWs?.()
    const aedes = this.aedes
    if (aedes) await new Promise<void>((resolve) => aedes.close(() => resolve()))
    await closing
    if (this.persistence) await this.persistence.destroy().catch((err: Error) => this.d.log.warn({ err: err.message }, 'broker persistence close'))
    this.refusalLog.flush()
    this.aedes = null
  }

  /** Server-side publish (errors, commands, state); does not go through the device ACL. */
  publish(topic: string, payload: string | Buffer, qos: 0 | 1 | 2, retain: boolean, properties?: { messageExpiryInterval?: number }): Promise<void> {
    const aedes = this.aedes
    if (!aedes) return Promise.reject(new Error('broker not running'))
    const packet = { cmd: 'publish', topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos, retain, dup: false, ...(properties ? { properties } : {}) } as PublishPacket
    return new Promise((resolve, reject) => aedes.publish(packet, (err) => (err ? reject(err) : resolve())))
  }

  /** In-process subscription (e.g. Home Assistant's birth message): every accepted publish matching the filter. */
  subscribe(filter: string, handler: (topic: string, payload: Buffer) => void): void {
    const aedes = this.aedes
    if (!aedes) throw new Error('broker not running')
    aedes.subscribe(filter, (packet: PublishPacket, cb: () => void) => {
      try { handler(packet.topic, packet.payload as Buffer) } catch (err) { this.d.log.error({ filter, err: (err as Error).message }, 'in-process subscriber failed') }
      cb()
    }, () => undefined)
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

  /** Counted exactly; logged through the RefusalLog (a flood from one client writes a line per window, not per packet). */
  private refuse(reason: string, detail: string, ctx: RefusalContext): void {
    this.d.metrics.refusals.inc({ reason })
    // Before login a client id is whatever the peer chose: those refusals are keyed by its address (and the name it
    // tried), after login by the client id, which is bound to the identity.
    const key = ctx.address !== undefined ? `${ctx.address} ${ctx.device ?? ctx.client ?? ''}` : ctx.clientId ?? ctx.device ?? '-'
    this.refusalLog.note(reason, key, detail, ctx)
    this.d.bus.safeEmit('refusal', { reason, detail, ...(ctx.device ? { device: ctx.device } : {}), ...(ctx.clientId ? { clientId: ctx.clientId } : {}) })
  }

  private async authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<boolean> {
    const cfg = this.d.config
    const req = this.requests.get(client) ?? { clientId: client.id, will: undefined, address: '?', cleanStart: true }
    const clientId = client.id
    const address = req.address
    if (this.rejectEmptyId.has(client)) {
      if (req.clientId !== '') {
        this.refuse('client_id', `client id "${req.clientId.slice(0, 40)}" is not accepted by this broker`, { address })
        throw authError(IDENTIFIER_REJECTED, 'identifier rejected: this client id is reserved')
      }
      this.refuse('empty_client_id', 'zero-length client id with clean session off (MQTT-3.1.3-8)', { address })
      throw authError(IDENTIFIER_REJECTED, 'identifier rejected: a persistent session needs a client id')
    }
    const principal = await this.logins.check(clientId, username, password, req.address)
    const key = ownerKey(principal)
    const allowed = clientIdAllowed(principal, req.clientId, (id) => this.reserved(id))
    if (!allowed.ok) {
      this.refuse('client_id', allowed.reason, { ...ctxOf(principal), clientId, address })
      throw authError(NOT_AUTHORIZED, 'not authorized: ' + allowed.reason)
    }
    // Taking over a live connection or a stored session is for the same identity only (MQTT-3.1.4-2 assumes one).
    const holder = this.claims.get(clientId)
    const holderKey = holder && holder !== client && !holder.closed ? this.identities.get(holder)?.key : undefined
    const storedKey = this.persistence?.sessionOwner(clientId)
    const ownNamespace = principal.kind === 'device' && clientIdNamespace(clientId) === principal.id
    const other = holderKey !== undefined && holderKey !== key ? holderKey : !ownNamespace && storedKey !== undefined && storedKey !== key ? storedKey : undefined
    if (other !== undefined) {
      this.refuse('client_id', `client id "${clientId.slice(0, 80)}" is in use by another identity`, { ...ctxOf(principal), clientId, address })
      throw authError(NOT_AUTHORIZED, 'not authorized: this client id belongs to another identity')
    }
    // A will is a publish made later on this identity's behalf: checked now, and stamped so a restart checks it again.
    const will = req.will
    if (will) {
      const d = mayPublishAsPrincipal(principal, will.topic, classifyTopic(will.topic), this.anonymousRole)
      if (!d.ok) {
        this.refuse('acl_will', `will on "${will.topic.slice(0, 120)}" refused: ${d.reason}`, { ...ctxOf(principal), clientId, address, topic: will.topic })
        throw authError(NOT_AUTHORIZED, 'not authorized: will topic not allowed')
      }
      ;(will as PublishPacket & { owner?: string }).owner = key
    }
    if (!client.clean) this.persistence?.setSessionOwner(clientId, key)
    // a session resumed (or replaced) before it expired
    this.persistence?.setSessionExpiry(clientId, null)
    // A clean start discards the old session's inbound QoS 2 state (aedes 1.2.0 did this at CONNECT; 2.0 does not).
    // (only when there is some: a write with fsync on every CONNECT would sit in every device's ack latency)
    if (req.cleanStart && this.persistence?.incomingCount(clientId)) await this.persistence.cleanIncoming(client)
    // a clean start ends the old session's shared subscriptions too (aedes drops its stored subscriptions)
    if (req.cleanStart) this.shared.forget(clientId)
    this.identities.set(client, { principal, key, device: presenceDevice(principal), revoked: false })
    this.claims.set(clientId, client)
    return true
  }

  /** A name that needs its secret: a registered device or integration client. */
  private reserved(id: string): boolean {
    return this.d.registry.isReserved(id)
  }

  private get anonymousRole(): Role | undefined { return this.d.roles.get(ANONYMOUS_ROLE) }

  /** The principal a stored will's owner key names today (null: gone, revoked or not allowed in this mode). */
  private resolveOwner(owner: unknown, clientId: string): Principal | null {
    const cfg = this.d.config
    const ref = parseOwnerKey(owner)
    if (!ref) {
      // A will stored before owners were recorded: its client id's namespace is the only owner it can have.
      const ns = clientIdNamespace(clientId)
      if (this.d.registry.get(ns)?.hasSecret) return { kind: 'device', id: ns }
      if (cfg.openBroker) return { kind: 'open', id: ns }
      return cfg.allowAnonymous && !this.reserved(ns) ? { kind: 'anonymous', id: ns } : null
    }
    switch (ref.kind) {
      case 'device': return this.d.registry.get(ref.id)?.hasSecret ? { kind: 'device', id: ref.id } : null
      case 'client': {
        const c = this.d.registry.getClient(ref.id)
        const role = c && this.d.roles.get(c.role)
        return role ? { kind: 'client', name: ref.id, role } : null
      }
      case 'anonymous': return cfg.allowAnonymous && !cfg.openBroker && !this.reserved(clientIdNamespace(ref.id)) ? { kind: 'anonymous', id: ref.id } : null
      case 'open': return cfg.openBroker ? { kind: 'open', id: ref.id } : null
    }
  }

  /** A will restored from disk is published on its owner's behalf: checked as that owner (the caller deletes a refused one). */
  private checkStoredWill(will: PublishPacket & { owner?: unknown; clientId?: string }): Principal | null {
    const clientId = will.clientId ?? ''
    const owner = this.resolveOwner(will.owner, clientId)
    const d = owner ? mayPublishAsPrincipal(owner, will.topic, classifyTopic(will.topic), this.anonymousRole) : { ok: false as const, reason: 'its owner is gone or unknown' }
    if (d.ok) return owner
    this.refuse('acl_will', `stored will of "${clientId.slice(0, 80)}" on "${will.topic.slice(0, 120)}" dropped: ${d.reason}`, { clientId, topic: will.topic })
    return null
  }

  /**
   * At start, before any listener: the shared subscriptions of stored persistent sessions, so that a group whose
   * members are all disconnected still queues for them. Each is checked as its session's owner, as at subscribe.
   */
  private async restoreSharedMembers(): Promise<void> {
    const p = this.persistence
    if (!p) return
    for (const clientId of p.storedClientIds()) {
      const subs = await p.subscriptionsByClient({ id: clientId })
      for (const sub of subs) {
        const share = parseMemberTopic(sub.topic)
        if (!share) continue
        const owner = this.resolveOwner(p.sessionOwner(clientId), clientId)
        if (!owner || !maySubscribeAsPrincipal(owner, share.filter, this.anonymousRole).ok) {
          this.d.log.info({ clientId, filter: `${SHARE_PREFIX}${share.group}/${share.filter}` }, 'stored shared subscription not restored: its owner may no longer read it')
          continue
        }
        this.shared.joinOffline(clientId, share, { qos: sub.qos, rap: sub.rap === true, si: sub.subscriptionIdentifier })
      }
    }
  }

  /** At start, before any listener: stored wills that their owner may no longer publish are dropped. */
  private async sweepStoredWills(): Promise<void> {
    const p = this.persistence
    if (!p) return
    const refused: string[] = []
    for await (const will of p.streamWill({})) {
      const w = will as PublishPacket & { owner?: unknown; clientId?: string }
      if (!this.checkStoredWill(w)) refused.push(w.clientId ?? '')
    }
    for (const id of refused) await p.delWill({ id })
  }

  /**
   * Revocation (`edgeway device remove|rotate-secret`, `client remove|rotate-secret` through the control socket):
   * the identity's live connections close now, without their wills; a removed identity's stored sessions and
   * retained messages go too.
   */
  async revoke(kind: 'device' | 'client', id: string): Promise<{ disconnected: number; purgedSessions: number }> {
    const key = kind === 'device' ? `device:${id}` : `client:${id}`
    let disconnected = 0
    for (const client of [...this.claims.values()]) {
      const identity = this.identities.get(client)
      if (!identity || identity.key !== key || client.closed) continue
      identity.revoked = true
      if (isV5(client)) disconnectWithReason(client, RC.ADMINISTRATIVE_ACTION, 'access revoked')
      else client.close()
      disconnected++
    }
    // A v5 client that is gone but whose delayed will is still pending: the will is not published.
    for (const [id, client] of [...this.pendingWills]) {
      const identity = this.identities.get(client)
      if (!identity || identity.key !== key) continue
      identity.revoked = true
      this.pendingWills.delete(id)
      if (this.aedes) cancelDelayedWill(this.aedes, id)
      await this.persistence?.delWill({ id })
    }
    const removed = kind === 'device' ? !this.d.registry.get(id)?.hasSecret : this.d.registry.getClient(id) === undefined
    let purgedSessions = 0
    const p = this.persistence
    if (removed && p) {
      const ids = new Set(p.sessionsOwnedBy(key))
      if (kind === 'device') for (const c of p.storedClientIds()) if (clientIdNamespace(c) === id) ids.add(c)
      for (const c of ids) { this.shared.forget(c); await p.purgeClient(c) }
      purgedSessions = ids.size
      if (kind === 'device') {
        const retained = await p.createRetainedStream(`devices/${id}/#`).toArray() as PublishPacket[]
        for (const r of retained) await p.storeRetained({ ...r, payload: Buffer.alloc(0) })
      }
    }
    this.d.log.info({ kind, id, disconnected, purgedSessions, removed }, 'mqtt access revoked')
    return { disconnected, purgedSessions }
  }

  /** The broker's look at a packet before aedes, beside the fast path: the client's acks free its Receive Maximum slots, and the gateway's own Receive Maximum is enforced on aedes' path. True: handled. */
  private beforeAedes(client: Client, packet: { cmd: string }): boolean {
    if (packet.cmd === 'publish') return this.overInboundQuota(client, packet as PublishPacket)
    if (packet.cmd === 'puback' || packet.cmd === 'pubrec' || packet.cmd === 'pubcomp') {
      const a = packet as { cmd: string; messageId?: number; reasonCode?: number }
      this.flows.get(client)?.out.acked(a.cmd, a.messageId ?? 0, a.reasonCode ?? 0)
    }
    return false
  }

  /**
   * MQTT 5 flow control of one connection, from its CONNECT (before the CONNACK: a stored session's queue follows it):
   * the client's Receive Maximum, Maximum Packet Size and Topic Alias Maximum on what it is sent.
   */
  private installFlow(client: Client, props: { receiveMaximum?: number; maximumPacketSize?: number; topicAliasMaximum?: number } | undefined): void {
    let send: (p: WirePublish) => boolean = () => false
    const out = new OutboundFlow({
      receiveMaximum: props?.receiveMaximum ?? 65535,
      maximumPacketSize: props?.maximumPacketSize,
      topicAliasMaximum: props?.topicAliasMaximum ?? 0,
    }, {
      send: (p) => send(p),
      size: outboundPublishSize,
      replaying: () => replayingQueue(client),
      dropped: (p, reason, detail) => this.droppedOutbound(client, p, reason, detail),
    })
    const inbound = new InboundQuota()
    send = tapWrites(client, { publish: (p) => out.publish(p), answered: (cmd, id, rc) => inbound.answered(cmd, id, rc) })
    this.flows.set(client, { out, inbound, refused: false })
  }

  /** A message not sent to a client, as if delivered: counted, logged, and gone from its stored session too. */
  private droppedOutbound(client: Client, p: WirePublish, reason: DropReason, detail: string): void {
    const why = DROP_REASONS[reason]
    this.d.metrics.refusals.inc({ reason: why })
    this.refusalLog.note(why, client.id ?? '-', `not sent to "${client.id}" on "${p.topic.slice(0, 120)}": ${detail}`, { clientId: client.id, topic: p.topic })
    // a persistent session would send it again at the next reconnect
    if (p.qos > 0 && p.messageId !== undefined && !client.clean) {
      void this.persistence?.outgoingClearMessageId(client, p as never).catch(() => undefined)
    }
  }

  /**
   * aedes' path (the fast path is not counted, see inbound-quota.ts): a QoS 1/2 publish of an MQTT 5 client beyond
   * the gateway's Receive Maximum gets DISCONNECT 0x93, and is not handled (true), nor is anything after it.
   */
  private overInboundQuota(client: Client, packet: PublishPacket): boolean {
    if (packet.qos === 0) return false
    const flow = this.flows.get(client)
    if (flow === undefined || (!flow.refused && flow.inbound.take(packet.messageId ?? 0))) return false
    if (!flow.refused) {
      flow.refused = true
      const why = `more than ${RECEIVE_MAXIMUM} QoS 1/2 publishes awaiting their acknowledgement (Receive Maximum)`
      this.refuse('receive_maximum', why, { ...this.errorCtx(client), topic: packet.topic })
      if (!refuseAndStopReading(client, RC.RECEIVE_MAXIMUM_EXCEEDED, why)) client.close()
    }
    return true
  }

  private authorizePublish(client: Client | null, packet: PublishPacket, cb: (err?: Error | null) => void): void {
    const topic = packet.topic
    // aedes 2.0.0-beta.1 publishes a will with its Will Delay Interval property, which is not a PUBLISH property
    if (packet.properties !== undefined) stripWillProperties(packet)
    // client === null: a will stored before a restart, published on its owner's behalf: checked as that owner.
    if (!client) {
      if (this.checkStoredWill(packet)) return cb(null)
      // deleted, or aedes would try it again at every will sweep
      void this.persistence?.delWill({ id: (packet as { clientId?: string }).clientId ?? '' }).catch(() => undefined)
      return cb(new RefusedError('stored will refused'))
    }
    const identity = this.identities.get(client)
    if (!identity) return cb(new RefusedError('not authenticated'))
    if (identity.revoked) return cb(new RefusedError('access revoked'))
    if (this.gone.has(client)) {
      // a will published after its connection ended (MQTT 5 will delay): its owner must still exist
      if (this.pendingWills.get(client.id) === client) this.pendingWills.delete(client.id)
      if (!this.resolveOwner(identity.key, client.id)) {
        this.refuse('acl_will', `will of "${client.id.slice(0, 80)}" on "${topic.slice(0, 120)}" dropped: its owner is gone`, { ...ctxOf(identity.principal), clientId: client.id, topic })
        return cb(new RefusedError('will owner gone'))
      }
    }
    const t = classifyTopic(topic)
    // (the lab modes let $-topics through: a shared subscription's names are never published to)
    const d = isShareTopic(topic) ? { ok: false as const, reason: 'publishing to $share/ topics is not allowed' } : mayPublishAsPrincipal(identity.principal, topic, t, this.anonymousRole)
    if (!d.ok) {
      this.refuse('acl_publish', d.reason, { ...ctxOf(identity.principal), clientId: client.id, topic })
      return cb(new RefusedError(`publish to "${topic}" refused: ${d.reason}`))
    }
    if (t) {
      const kind = t.kind
      if (kind === 'telemetry') {
        if (!DEVICE_ID_RE.test(t.device)) {
          this.refuse('bad_device_id', `telemetry for malformed device id "${t.device.slice(0, 80)}"`, { clientId: client.id, topic })
          return cb(new RefusedError('invalid device id in topic'))
        }
        // MQTT 5 user properties: the reading's metadata, checked here (a refusal is answered and not stored)
        const up = packet.properties?.userProperties
        let userProperties: string | undefined
        if (up !== undefined) {
          const checked = checkUserProperties(up)
          if (!checked.ok) {
            this.refuse('user_properties', checked.reason, { ...ctxOf(identity.principal), clientId: client.id, topic })
            this.intake.reportRefusal(t.device, topic, checked.reason)
            answeredByGateway(packet)
            if (packet.qos > 0) writeAck(client, packet.qos as 1 | 2, packet.messageId ?? 0, checked.kind === 'quota' ? RC.QUOTA_EXCEEDED : RC.IMPLEMENTATION_SPECIFIC_ERROR, `reading refused: ${checked.reason}`)
            return cb(null)
          }
          userProperties = checked.text
        }
        const persistence = this.persistence
        // MQTT 5: a payload that does not decode gets PUBACK/PUBREC 0x99 once the worker refused it (3.1.1: acked)
        const done = isV5(client) && packet.qos > 0 ? (err: Error | null, refused?: string): void => {
          if (err || refused === undefined) return cb(err)
          answeredByGateway(packet)
          writeAck(client, packet.qos as 1 | 2, packet.messageId ?? 0, RC.PAYLOAD_FORMAT_INVALID, `payload refused: ${refused}`)
          cb(null)
        } : cb
        if (packet.qos === 2 && packet.dup && persistence) {
          // A QoS 2 retransmission whose PUBREC was lost is already stored (aedes keeps it until PUBREL):
          // store it once, so QoS 2 stays exactly-once into the outbox.
          persistence.incomingGetPacket(client, { ...packet, messageId: packet.messageId ?? 0 } as never).then(
            () => cb(null),
            () => this.intake.handle(t.device, packet.payload as Buffer, done, userProperties),
          )
          return
        }
        this.intake.handle(t.device, packet.payload as Buffer, done, userProperties)
        return
      }
      // What the device itself reports besides telemetry: its state, its command results, OTA (uplinks.ts).
      const self = identity.device === t.device && identity.principal.kind !== 'client'
      this.uplinks.route(t, packet.payload as Buffer, self, identity.principal.kind === 'device')
    }
    cb(null)
  }

  private authorizeSubscribe(client: Client, sub: Subscription, cb: (err: Error | null, sub?: Subscription | null) => void): void {
    const identity = this.identities.get(client)
    if (!identity) return cb(new Error('not authenticated'))
    // A shared subscription arrives under its member name (shared-subscriptions.ts): the ACL judges its inner filter.
    // A `$share/` filter still here is malformed (3.1.1; aedes answers v5 ones itself).
    const share = parseMemberTopic(sub.topic)
    const filter = share ? share.filter : sub.topic
    const shown = share ? `${SHARE_PREFIX}${share.group}/${share.filter}` : sub.topic
    const d = identity.revoked ? { ok: false as const, reason: 'access revoked' }
      : filter.startsWith(SHARE_PREFIX) ? { ok: false as const, reason: `"${filter.slice(0, 120)}" is not a valid shared subscription: $share/<group>/<filter>` }
        : maySubscribeAsPrincipal(identity.principal, filter, this.anonymousRole)
    if (!d.ok) {
      this.refuse('acl_subscribe', d.reason, { ...ctxOf(identity.principal), clientId: client.id, topic: shown })
      return cb(null, null) // SUBACK 0x80 for this filter; the connection stays up
    }
    if (share) this.shared.join(client as unknown as MemberClient, share, { qos: sub.qos, rap: sub.rap === true, si: (sub as { subscriptionIdentifier?: number }).subscriptionIdentifier })
    cb(null, sub)
  }

  private onClientReady(client: Client): void {
    this.d.metrics.clientsConnected.set(this.connectedClients)
    const identity = this.identities.get(client)
    // A connection can end while aedes is still connecting it (its ready event comes after its close): never counted.
    if (!identity || client.closed || this.gone.has(client)) return
    // a reconnect cancels a delayed will (aedes clears its timer)
    this.pendingWills.delete(client.id)
    this.d.log.info({ clientId: client.id, ...ctxOf(identity.principal), clean: client.clean, version: client.version }, 'mqtt client connected')
    const device = identity.device
    if (!device) return
    let conns = this.deviceConns.get(device)
    if (!conns) this.deviceConns.set(device, conns = new Set())
    conns.add(client)
    this.d.metrics.devicesConnected.set(this.deviceConns.size)
    // Only a registered device's presence is written to the registry (anonymous clients never change it).
    if (conns.size === 1) reportPresence(this.d, { device, link: 'mqtt', clientId: client.id, online: true, record: identity.principal.kind === 'device' })
  }

  /** Idempotent: every way a connection ends comes here, possibly more than once. */
  private onClientGone(client: Client, reason: string): void {
    this.d.metrics.clientsConnected.set(this.connectedClients)
    if (this.gone.has(client)) return
    this.gone.add(client)
    this.shared.clientGone(client as unknown as MemberClient)
    if (this.claims.get(client.id) === client) this.claims.delete(client.id)
    // The identity stays (WeakMap): aedes may still publish this client's will through authorizePublish.
    const identity = this.identities.get(client)
    // (aedes may have cleared client.will already: the CONNECT's will says whether a delayed one can be pending)
    const will = this.requests.get(client)?.will
    if (identity && will && isV5(client) && ((will.properties as { willDelayInterval?: number } | undefined)?.willDelayInterval ?? 0) > 0) {
      this.pendingWills.set(client.id, client)
      // entries of wills that were published, cancelled or discarded (a clean DISCONNECT) are pruned now and then
      if (this.pendingWills.size > 1024 && this.aedes) for (const id of [...this.pendingWills.keys()]) if (!hasDelayedWill(this.aedes, id)) this.pendingWills.delete(id)
    }
    // A clean session's inbound QoS 2 state ends with it (aedes 1.2.0 did this; 2.0 does not: it would pile up).
    if (client.clean && client.id && this.persistence?.incomingCount(client.id)) void this.persistence.cleanIncoming(client).catch(() => undefined)
    // MQTT 5 Session Expiry: persisted, so that a restart ends the session on time too (not if taken over: the
    // new connection owns the session)
    const interval = client.sessionExpiryInterval
    if (identity && isV5(client) && !client.clean && interval > 0 && interval < SESSION_NEVER_EXPIRES && !this.claims.has(client.id)) {
      try { this.persistence?.setSessionExpiry(client.id, Date.now() + interval * 1000) } catch (err) {
        this.d.log.warn({ clientId: client.id, err: (err as Error).message }, 'session expiry not persisted')
      }
    }
    const device = identity?.device
    if (identity) this.d.log.info({ clientId: client.id, ...ctxOf(identity.principal), reason }, 'mqtt client disconnected')
    const conns = device ? this.deviceConns.get(device) : undefined
    if (!identity || !device || !conns?.delete(client)) return
    if (conns.size > 0) return
    this.deviceConns.delete(device)
    this.d.metrics.devicesConnected.set(this.deviceConns.size)
    reportPresence(this.d, { device, link: 'mqtt', clientId: client.id, online: false, reason, record: identity.principal.kind === 'device' })
  }

  /** Ends expired MQTT 5 sessions that no connection holds (all of them, or the given ids if expired). */
  private expireSessions(ids?: string[]): void {
    const p = this.persistence
    if (!p || !this.aedes) return
    const expired = p.expiredSessions(Date.now())
    for (const id of ids ? expired.filter((x) => ids.includes(x)) : expired) {
      if (this.claims.has(id)) continue
      this.d.log.info({ clientId: id }, 'mqtt session expired')
      this.shared.forget(id)
      void p.purgeClient(id, { keepWill: true }).catch((err: Error) => this.d.log.warn({ clientId: id, err: err.message }, 'expired session not purged'))
    }
  }

  /** Before its CONNECT a client has no id yet: its refusals are keyed by its address. */
  private errorCtx(client: Client): { clientId?: string; address?: string } {
    return client.id ? { clientId: client.id } : { address: this.addresses.get(client) ?? '?' }
  }

  private onClientError(client: Client, err: Error): void {
    // aedes' own check after packet-guard refused an oversized packet: already counted
    if ((err as { maximumPacketSize?: number }).maximumPacketSize !== undefined && /packet too large/.test(err.message)) return
    // MQTT 5: aedes reports refusals it answered with a reason code (PUBACK 0x87 ...) here, the connection stays up;
    // every way a connection ends still reaches onClientGone through its close event.
    if (isV5(client) && err instanceof RefusedError && !client.closed) return
    if (err instanceof RefusedError) {
      // already logged and counted where it was raised
    } else if (err instanceof PacketTooLargeError) {
      this.refuse('packet_too_large', err.message, this.errorCtx(client))
    } else if (err instanceof MalformedPacketError) {
      this.refuse('malformed_packet', err.message, this.errorCtx(client))
    } else {
      const reason = /parse|invalid|malformed|header|protocol|packet|length|must/i.test(err.message) ? 'malformed_packet' : 'client_error'
      if (reason === 'malformed_packet') this.refuse(reason, err.message, this.errorCtx(client))
      else this.d.log.info({ clientId: client.id, err: err.message }, 'mqtt client error: connection closed')
    }
    // aedes closes the connection; only that client is affected.
    this.onClientGone(client, `error: ${err.message}`)
  }
}
