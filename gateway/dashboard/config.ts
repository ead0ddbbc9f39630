// The `dashboard:` section of edgeway.yaml.
import { z } from 'zod'

export const SCRYPT_HASH_RE = /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/

export const dashboardConfig = z.object({
  /** Served on the http listener (same port as /healthz and /metrics). */
  enabled: z.boolean().default(true),
  /** Written by `edgeway dashboard set-password`. Without it the dashboard answers loopback clients only. */
  passwordHash: z.string().regex(SCRYPT_HASH_RE, 'an scrypt hash as written by `edgeway dashboard set-password`').optional(),
  /** Login lifetime. */
  sessionHours: z.number().min(0.05).max(24 * 30).default(12),
  /** Recent points kept per device metric for the charts (a newly opened page shows them). */
  historyPoints: z.number().int().min(10).max(5000).default(300),
  /**
   * Extra origins allowed to open the WebSocket and post the login (e.g. https://gw.example.com behind a reverse proxy);
   * their host names are also accepted in the Host header (DNS-rebinding protection answers only the gateway's own names).
   */
  allowedOrigins: z.array(z.string().regex(/^https?:\/\/[^/]+$/, 'an origin such as https://gw.example.com (no path)')).default([]),
  /** Failed logins per client address: `budget` attempts, then a lockout of `lockSeconds`, doubling with each further one (up to 15 min). */
  loginThrottle: z.object({
    budget: z.number().int().min(1).max(100).default(5),
    lockSeconds: z.number().min(0.1).max(900).default(30),
  }).strict().prefault({}),
}).strict()

export type DashboardConfig = z.infer<typeof dashboardConfig>
