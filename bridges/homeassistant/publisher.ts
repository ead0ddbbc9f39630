// Home Assistant discovery on the embedded broker: publishes what discovery.ts maps (retained configs, the gateway's
// status, each device's availability) and each device's latest metrics as state, and listens for HA's birth message.
//
// Retained publishes are written to the broker's SQLite persistence with an fsync on the broker's event loop, so
// they are kept rare: a config only when its content changed (the last published ones are remembered in
// `<dataDir>/homeassistant.json`, written off the loop with fs/promises), availability on a presence change.
// State is QoS 0 and not retained (no disk at all); HA's birth message (`<prefix>/status` `online`, rate-limited by
// BirthLimiter) republishes configs, availability and the latest state without retain: HA has just subscribed, and
// the retained copies are already in the broker. Metadata edits are noticed at the device's next reading (at most
// one registry read per device per 30 s) and at a birth; a removed device's configs are cleared (empty retained).
import { readFile, rename, writeFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { GatewayBus, GatewayEvents } from '../../gateway/events.ts'
import type { Device } from '../../gateway/registry/registry.ts'
import type { MetricValue } from '../../gateway/readings.ts'
import type { ResolvedHomeAssistant } from './config.ts'
import { BirthLimiter } from './birth.ts'
import { deviceDiscovery, gatewayDiscovery, gatewayTopics, kindOf, OFFLINE, ONLINE, type DeviceInfo, type GatewayInfo, type MetricKind } from './discovery.ts'

export interface HaBroker {
  publish(topic: string, payload: string | Buffer, qos: 0 | 1 | 2, retain: boolean): Promise<void>
  /** In-process subscription: every publish matching the filter, from any client. */
  subscribe(filter: string, handler: (topic: string, payload: Buffer) => void): void
}

export interface HaPublisherDeps {
  config: ResolvedHomeAssistant
  gateway: { id: string; version: string }
  broker: HaBroker
  bus: GatewayBus
  registry: { get(id: string): Device | undefined; list(): Device[] }
  /** Over every link (MQTT, serial, Firmata). */
  isOnline(device: string): boolean
  /** Where the published configs are remembered between runs. */
  stateFile: string
  log: Logger
}

/** The state file: what is retained on the broker on our behalf, so a restart knows what to clear or skip. */
interface Saved { version: 1; configs: Record<string, string>; devices: Record<string, { topics: string[]; kinds: Record<string, MetricKind>; link: string | null }> }

const META_RECHECK_MS = 30_000
const SAVE_DELAY_MS = 1000
/** Publishes per event-loop turn during a republish: a large fleet does not hold the broker's loop in one go. */
const REPUBLISH_SLICE = 100

export class HomeAssistantPublisher {
  private readonly g: GatewayInfo
  private readonly topics: ReturnType<typeof gatewayTopics>
  /** config topic -> the JSON retained there. */
  private readonly configs = new Map<string, string>()
  private readonly deviceTopics = new Map<string, Set<string>>()
  private readonly kinds = new Map<string, Map<string, MetricKind>>()
  private readonly links = new Map<string, string | null>()
  private readonly latest = new Map<string, Record<string, MetricValue>>()
  private readonly metaChecked = new Map<string, number>()
  /** Removed devices: the offline event of their revoked connection must not bring their availability back. */
  private readonly removed = new Set<string>()
  private readonly limiter: BirthLimiter
  private running = false
  private saveTimer: NodeJS.Timeout | null = null
  private saving: Promise<void> = Promise.resolve()
  private queue: Promise<void> = Promise.resolve()
  private readonly offs: (() => void)[] = []
  /** Publishes started by republishAll() (tests and logs). */
  republishes = 0

  constructor(private readonly d: HaPublisherDeps) {
    this.g = { discoveryPrefix: d.config.discoveryPrefix, nodeId: d.config.nodeId, gatewayId: d.gateway.id, version: d.gateway.version }
    this.topics = gatewayTopics(this.g)
    this.limiter = new BirthLimiter({ windowMs: d.config.birthCooldownMs, run: () => { void this.republishAll() } })
  }

  /** After the broker started: status online, configs and availability of every known device, then listen. */
  async start(): Promise<void> {
    await this.load()
    this.running = true
    await this.send(this.topics.status, ONLINE, 1, true)
    this.putConfig(gatewayDiscovery(this.g).topic, gatewayDiscovery(this.g).config)
    const known = new Set([...this.d.registry.list().map((x) => x.id), ...this.deviceTopics.keys()])
    for (const id of known) {
      this.refreshDevice(id)
      void this.send(this.topics.availability(id), this.d.isOnline(id) ? ONLINE : OFFLINE, 1, true)
    }
    this.d.broker.subscribe(this.topics.birth, (_t, payload) => this.onBirth(payload))
    const bus = this.d.bus
    const reading = (e: GatewayEvents['reading'][0]): void => this.onReading(e.device, e.link, e.metrics)
    const presence = (e: { device: string }): void => this.onPresence(e.device)
    const online = (e: { device: string }): void => { this.removed.delete(e.device); this.onPresence(e.device) }
    const firmware = (e: GatewayEvents['firmware'][0]): void => { this.metaChecked.set(e.device, Date.now()); this.refreshDevice(e.device) }
    bus.on('reading', reading)
    bus.on('deviceOnline', online)
    bus.on('deviceOffline', presence)
    bus.on('firmware', firmware)
    this.offs.push(() => { bus.off('reading', reading); bus.off('deviceOnline', online); bus.off('deviceOffline', presence); bus.off('firmware', firmware) })
    this.d.log.info({ prefix: this.g.discoveryPrefix, nodeId: this.g.nodeId, devices: known.size, configs: this.configs.size }, 'home assistant discovery published')
  }

  /** A clean stop: HA marks every entity unavailable (the gateway's status goes offline, retained). */
  async stop(): Promise<void> {
    if (!this.running) return
    this.running = false
    this.limiter.close()
    for (const off of this.offs.splice(0)) off()
    await this.send(this.topics.status, OFFLINE, 1, true)
    if (this.saveTimer) { clearTimeout(this.saveTimer); this.saveTimer = null }
    await this.save()
  }

  /** `device remove` (CLI or device page) after the broker's revocation: a device no longer registered leaves HA. */
  deviceRevoked(id: string): void {
    if (!this.running || this.d.registry.get(id) !== undefined) return
    const topics = this.deviceTopics.get(id) ?? new Set<string>()
    for (const t of topics) { this.configs.delete(t); void this.send(t, '', 1, true) }
    void this.send(this.topics.availability(id), '', 1, true)
    this.deviceTopics.delete(id)
    this.kinds.delete(id)
    this.links.delete(id)
    this.latest.delete(id)
    this.metaChecked.delete(id)
    this.removed.add(id)
    this.d.log.info({ device: id, configs: topics.size }, 'home assistant: removed device cleared')
    this.scheduleSave()
  }

  private onBirth(payload: Buffer): void {
    if (!this.running || payload.toString('utf8').trim() !== ONLINE) return
    const r = this.limiter.request()
    if (r !== 'now') this.d.log.debug({ outcome: r, suppressed: this.limiter.suppressed }, 'home assistant birth message within the cooldown')
  }

  private onReading(device: string, link: string, metrics: Record<string, MetricValue>): void {
    if (!this.running) return
    this.removed.delete(device)
    const isNew = !this.deviceTopics.has(device)
    this.links.set(device, link)
    let kinds = this.kinds.get(device)
    if (!kinds) this.kinds.set(device, kinds = new Map())
    let changed = false
    for (const [m, v] of Object.entries(metrics)) {
      if (v === null || typeof v === 'object') continue
      const k = kindOf(v)
      if (kinds.get(m) !== k) { kinds.set(m, k); changed = true }
    }
    const now = Date.now()
    if (changed || now - (this.metaChecked.get(device) ?? 0) >= META_RECHECK_MS) {
      this.metaChecked.set(device, now)
      this.refreshDevice(device)
    }
    if (isNew) void this.send(this.topics.availability(device), this.d.isOnline(device) ? ONLINE : OFFLINE, 1, true)
    const merged = { ...this.latest.get(device), ...metrics }
    this.latest.set(device, merged)
    void this.send(this.topics.state(device), JSON.stringify(merged), 0, false)
  }

  private onPresence(device: string): void {
    if (!this.running || this.removed.has(device)) return
    if (!this.deviceTopics.has(device)) this.refreshDevice(device)
    void this.send(this.topics.availability(device), this.d.isOnline(device) ? ONLINE : OFFLINE, 1, true)
  }

  private info(id: string): DeviceInfo {
    const r = this.d.registry.get(id)
    return r ? { id, metadata: r.metadata, firmware: r.firmwareVersion, link: r.link ?? this.links.get(id) ?? null }
      : { id, metadata: {}, firmware: null, link: this.links.get(id) ?? null }
  }

  /** Publishes the device's configs that changed and clears the ones it no longer has. */
  private refreshDevice(id: string): void {
    const wanted = deviceDiscovery(this.g, this.info(id), this.kinds.get(id) ?? new Map())
    const before = this.deviceTopics.get(id) ?? new Set<string>()
    const now = new Set<string>()
    for (const x of wanted) { now.add(x.topic); this.putConfig(x.topic, x.config) }
    for (const t of before) if (!now.has(t)) { this.configs.delete(t); void this.send(t, '', 1, true) }
    this.deviceTopics.set(id, now)
    this.scheduleSave()
  }

  private putConfig(topic: string, config: Record<string, unknown>): void {
    const json = JSON.stringify(config)
    if (this.configs.get(topic) === json) return
    this.configs.set(topic, json)
    void this.send(topic, json, 1, true)
    this.scheduleSave()
  }

  /** HA (re)started: everything it needs, not retained, in slices. */
  private async republishAll(): Promise<void> {
    if (!this.running) return
    this.republishes++
    for (const id of this.deviceTopics.keys()) this.refreshDevice(id) // picks up metadata edits first
    const msgs: [string, string][] = [[this.topics.status, ONLINE], ...this.configs]
    for (const id of this.deviceTopics.keys()) msgs.push([this.topics.availability(id), this.d.isOnline(id) ? ONLINE : OFFLINE])
    for (const [id, s] of this.latest) msgs.push([this.topics.state(id), JSON.stringify(s)])
    this.d.log.info({ messages: msgs.length, suppressedBirths: this.limiter.suppressed }, 'home assistant birth: republishing discovery, availability and state')
    for (let i = 0; i < msgs.length; i++) {
      if (!this.running) return
      if (i > 0 && i % REPUBLISH_SLICE === 0) await new Promise((r) => setImmediate(r))
      void this.send(msgs[i]![0], msgs[i]![1], 0, false)
    }
  }

  /**
   * One publish at a time, in order. aedes numbers every packet and a subscriber drops one numbered below the last
   * it got (its cluster dedupe): a retained config still being stored would lose to a state published after it.
   */
  private send(topic: string, payload: string, qos: 0 | 1, retain: boolean): Promise<void> {
    const p = this.queue.then(() => this.d.broker.publish(topic, payload, qos, retain)).catch((err: unknown) => {
      this.d.log.warn({ topic, err: (err as Error).message }, 'home assistant publish failed')
    })
    this.queue = p
    return p
  }

  private async load(): Promise<void> {
    let text: string
    try { text = await readFile(this.d.stateFile, 'utf8') } catch { return } // first run
    try {
      const s = JSON.parse(text) as Saved
      for (const [t, j] of Object.entries(s.configs ?? {})) if (typeof j === 'string') this.configs.set(t, j)
      for (const [id, x] of Object.entries(s.devices ?? {})) {
        this.deviceTopics.set(id, new Set(x.topics ?? []))
        this.kinds.set(id, new Map(Object.entries(x.kinds ?? {})))
        this.links.set(id, x.link ?? null)
      }
    } catch (err) {
      this.d.log.warn({ file: this.d.stateFile, err: (err as Error).message }, 'home assistant state file unreadable: configs are published afresh')
    }
  }

  private scheduleSave(): void {
    if (this.saveTimer || !this.running) return
    this.saveTimer = setTimeout(() => { this.saveTimer = null; void this.save() }, SAVE_DELAY_MS)
    this.saveTimer.unref()
  }

  /** One write at a time, the newest state each: temp file, then rename (a crash leaves the old or the new file). */
  private save(): Promise<void> {
    this.saving = this.saving.then(async () => {
      const s: Saved = { version: 1, configs: Object.fromEntries(this.configs), devices: {} }
      for (const [id, topics] of this.deviceTopics) {
        s.devices[id] = { topics: [...topics], kinds: Object.fromEntries(this.kinds.get(id) ?? []), link: this.links.get(id) ?? null }
      }
      const tmp = `${this.d.stateFile}.tmp`
      await writeFile(tmp, JSON.stringify(s))
      await rename(tmp, this.d.stateFile)
    }).catch((err: unknown) => { this.d.log.warn({ file: this.d.stateFile, err: (err as Error).message }, 'home assistant state file not written') })
    return this.saving
  }
}
