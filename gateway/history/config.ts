// The `history:` section of edgeway.yaml: how long and how much numeric history the gateway keeps for its charts.
import { z } from 'zod'

export const historyConfig = z.object({
  /** Keep every numeric metric of every stored reading in history.db (beside the outbox) for charts and CSV export. */
  enabled: z.boolean().default(true),
  /** Raw points (every reading) are kept this many hours. */
  rawHours: z.number().min(1).max(24 * 90).default(48),
  /** 1-minute min/avg/max rollups are kept this many days. */
  rollupDays: z.number().min(1).max(3650).default(90),
  /** Bytes of history.db in use; beyond it the oldest points go first (raw tier, then rollups), counted in metrics. */
  maxBytes: z.number().int().min(1024 * 1024).default(64 * 1024 * 1024),
  /** Series kept per device: a device inventing metric names cannot grow the store without bound (refusals counted). */
  maxMetricsPerDevice: z.number().int().min(1).max(1024).default(64),
  /**
   * A device reporting faster than this (by its readings' times) is sampled for history: at most one reading per
   * interval is kept (the outbox and the upstreams still get every reading). 0: keep every reading.
   */
  minIntervalMs: z.number().int().min(0).max(3_600_000).default(1000),
  /** Series kept over all devices. */
  maxSeries: z.number().int().min(1).max(1_000_000).default(20000),
}).strict().refine((h) => h.rawHours <= h.rollupDays * 24, { message: 'rawHours must not exceed rollupDays * 24', path: ['rawHours'] })

export type HistoryConfig = z.infer<typeof historyConfig>
