// The one file that imports prom-client: every metric of the gateway is declared here.
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client'

export interface CameraStats { viewers: number; bitrate: number; live: boolean }

export interface SerialLineStats { device: string; frames: number; badFrames: number; resyncs: number; reopens: number }

export class Metrics {
  readonly registry = new Registry()
  readonly messagesIn = new Counter({ name: 'edgeway_messages_in_total', help: 'Readings accepted into the outbox, by device link', labelNames: ['link'] as const, registers: [this.registry] })
  readonly messagesOut = new Counter({ name: 'edgeway_messages_out_total', help: 'Readings acknowledged by an upstream', labelNames: ['upstream'] as const, registers: [this.registry] })
  readonly refusals = new Counter({ name: 'edgeway_refusals_total', help: 'Refused connections, publishes, subscriptions and payloads, by reason', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly drops = new Counter({ name: 'edgeway_outbox_drops_total', help: 'Readings dropped by retention before every upstream had them, by reason', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly outboxDepth = new Gauge({ name: 'edgeway_outbox_depth', help: 'Readings stored in the outbox', registers: [this.registry] })
  readonly outboxBytes = new Gauge({ name: 'edgeway_outbox_bytes', help: 'Bytes of readings stored in the outbox (retention measure)', registers: [this.registry] })
  readonly outboxFileBytes = new Gauge({ name: 'edgeway_outbox_file_bytes', help: 'Size of the outbox database file', registers: [this.registry] })
  readonly outboxOldest = new Gauge({ name: 'edgeway_outbox_oldest_age_seconds', help: 'Age of the oldest stored reading', registers: [this.registry] })
  readonly outboxDiskFull = new Gauge({ name: 'edgeway_outbox_disk_full', help: '1 while outbox writes fail for lack of space (acks withheld)', registers: [this.registry] })
  readonly upstreamLag = new Gauge({ name: 'edgeway_upstream_lag', help: 'Readings not yet acknowledged by this upstream', labelNames: ['upstream'] as const, registers: [this.registry] })
  readonly upstreamConnected = new Gauge({ name: 'edgeway_upstream_connected', help: '1 when the upstream link is up', labelNames: ['upstream'] as const, registers: [this.registry] })
  readonly devicesConnected = new Gauge({ name: 'edgeway_devices_connected', help: 'Devices with an open link', registers: [this.registry] })
  readonly clientsConnected = new Gauge({ name: 'edgeway_mqtt_clients_connected', help: 'MQTT connections', registers: [this.registry] })
  readonly otaJobs = new Counter({ name: 'edgeway_ota_jobs_total', help: 'OTA jobs that ended, by final state (succeeded, failed, rolled_back, cancelled)', labelNames: ['state'] as const, registers: [this.registry] })
  readonly otaBytes = new Counter({ name: 'edgeway_ota_bytes_served_total', help: 'Image bytes sent to devices in OTA chunks (resends included)', registers: [this.registry] })
  /** The commit's phases, so a stall explains itself: queue (broker -> worker), decode, write (SQLite + fsync), handback. */
  readonly commitPhaseSeconds = new Histogram({ name: 'edgeway_ingest_phase_seconds', help: 'Each commit of readings, by phase: queue (waiting for the outbox thread), decode, write (SQLite inserts and the fsynced commit), handback (back to the broker thread)', labelNames: ['phase'] as const, buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5], registers: [this.registry] })
  /** How late the broker's event loop runs a 10 ms timer: any stall on the thread that writes PUBACKs shows here. */
  readonly eventLoopDelaySeconds = new Histogram({ name: 'edgeway_event_loop_delay_seconds', help: 'Lateness of a 10 ms timer on the main (broker) event loop', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1], registers: [this.registry] })
  readonly alertsActive = new Gauge({ name: 'edgeway_alerts_active', help: 'Alerts active now, by rule (device_offline, threshold, outbox_backlog, outbox_drops, upstream_down)', labelNames: ['rule'] as const, registers: [this.registry] })
  readonly alertsRaised = new Counter({ name: 'edgeway_alerts_raised_total', help: 'Alerts raised since start, by rule', labelNames: ['rule'] as const, registers: [this.registry] })
  // history store (gateway/history/)
  readonly historyPoints = new Counter({ name: 'edgeway_history_points_total', help: 'Numeric points written to the history store', registers: [this.registry] })
  readonly historyPruned = new Counter({ name: 'edgeway_history_pruned_total', help: 'History points pruned, by tier (raw, rollup) and reason (age, bytes: the maxBytes bound)', labelNames: ['tier', 'reason'] as const, registers: [this.registry] })
  readonly historyRefused = new Counter({ name: 'edgeway_history_series_refused_total', help: 'Points not kept because their device reached history.maxMetricsPerDevice or the store history.maxSeries', registers: [this.registry] })
  readonly commitSeconds = new Histogram({ name: 'edgeway_ingest_ack_seconds', help: 'Time from a batch of readings leaving the broker thread to its durable commit (acks wait for it)', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1], registers: [this.registry] })

  /** Line statistics of the serial boards, read at scrape time (the links keep running totals). */
  private serialSource: () => SerialLineStats[] = () => []
  private cameraSource: (() => CameraStats) | null = null
  /** Command replies per upstream, read at scrape time (the upstreams keep running totals). */
  private replySource: () => { upstream: string; sent: number; failed: number }[] = () => []

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'edgeway_process_' })
    const source = (): SerialLineStats[] => this.serialSource()
    // Mirrors of counters the serial links keep themselves: reset and refilled on every scrape.
    new Counter({
      name: 'edgeway_serial_frames_total', help: 'Frames seen on each serial line, by result: ok, bad (damaged, dropped) or resync (garbage skipped)',
      labelNames: ['device', 'result'] as const, registers: [this.registry],
      collect() {
        this.reset()
        for (const s of source()) {
          this.inc({ device: s.device, result: 'ok' }, s.frames)
          this.inc({ device: s.device, result: 'bad' }, s.badFrames)
          this.inc({ device: s.device, result: 'resync' }, s.resyncs)
        }
      },
    })
    const replies = (): { upstream: string; sent: number; failed: number }[] => this.replySource()
    new Counter({
      name: 'edgeway_upstream_replies_total', help: 'Command replies sent back over an upstream, by result: sent (accepted by the broker) or failed (lost, logged)',
      labelNames: ['upstream', 'result'] as const, registers: [this.registry],
      collect() {
        this.reset()
        for (const r of replies()) {
          this.inc({ upstream: r.upstream, result: 'sent' }, r.sent)
          this.inc({ upstream: r.upstream, result: 'failed' }, r.failed)
        }
      },
    })
    new Counter({
      name: 'edgeway_serial_reopens_total', help: 'Times a serial port was reopened after it vanished or failed',
      labelNames: ['device'] as const, registers: [this.registry],
      collect() {
        this.reset()
        for (const s of source()) this.inc({ device: s.device }, s.reopens)
      },
    })
  }

  /** Camera gauges, read at scrape time; registered only when the camera is enabled. */
  setCameraSource(fn: () => CameraStats): void {
    if (this.cameraSource) { this.cameraSource = fn; return }
    this.cameraSource = fn
    const read = (): CameraStats => this.cameraSource!()
    new Gauge({ name: 'edgeway_camera_viewers', help: 'WebRTC camera viewers connected', registers: [this.registry], collect() { this.set(read().viewers) } })
    new Gauge({ name: 'edgeway_camera_bitrate_bits', help: 'Bits per second arriving from the camera source (sent to each viewer)', registers: [this.registry], collect() { this.set(read().bitrate) } })
    new Gauge({ name: 'edgeway_camera_source_up', help: '1 while the camera source sends RTP', registers: [this.registry], collect() { this.set(read().live ? 1 : 0) } })
  }

  setSerialSource(fn: () => SerialLineStats[]): void { this.serialSource = fn }

  /** Samples the event loop's lateness until the returned function is called (a 10 ms timer, unref'd). */
  watchEventLoop(): () => void {
    const everyMs = 10
    let due = performance.now() + everyMs
    let t: NodeJS.Timeout
    const tick = (): void => {
      const now = performance.now()
      this.eventLoopDelaySeconds.observe(Math.max(0, now - due) / 1000)
      due = now + everyMs
      t = setTimeout(tick, everyMs)
      t.unref()
    }
    t = setTimeout(tick, everyMs)
    t.unref()
    return () => clearTimeout(t)
  }

  setReplySource(fn: () => { upstream: string; sent: number; failed: number }[]): void { this.replySource = fn }

  async text(): Promise<string> { return this.registry.metrics() }
  get contentType(): string { return this.registry.contentType }
}
