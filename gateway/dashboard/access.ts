// Who may use the dashboard: sessions after a password login, cookies, loopback-only mode, Origin checks, login
// throttling. Pure (no I/O): clock and randomness are injected or from node:crypto.
import { randomBytes, createHash } from 'node:crypto'

export const SESSION_COOKIE = 'edgeway_session'

export interface Session { token: string; user: string; expires: number }

/** In memory: a gateway restart logs everyone out, which is acceptable for an admin page. */
export class Sessions {
  private readonly byToken = new Map<string, Session>()

  constructor(private readonly ttlMs: number, private readonly now: () => number = Date.now, private readonly max = 1000) {}

  create(user: string): Session {
    this.sweep()
    // Oldest session goes first when someone logs in a thousand times.
    if (this.byToken.size >= this.max) this.byToken.delete(this.byToken.keys().next().value as string)
    const s = { token: randomBytes(32).toString('base64url'), user, expires: this.now() + this.ttlMs }
    this.byToken.set(this.key(s.token), s)
    return s
  }

  get(token: string | undefined): Session | undefined {
    if (!token) return undefined
    const k = this.key(token)
    const s = this.byToken.get(k)
    if (!s) return undefined
    if (s.expires <= this.now()) { this.byToken.delete(k); return undefined }
    return s
  }

  revoke(token: string): void { this.byToken.delete(this.key(token)) }

  get size(): number { return this.byToken.size }

  private sweep(): void {
    const t = this.now()
    for (const [k, s] of this.byToken) if (s.expires <= t) this.byToken.delete(k)
  }

  /** Stored hashed, so a heap dump does not hand out live cookies. */
  private key(token: string): string { return createHash('sha256').update(token).digest('base64url') }
}

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  if (!header) return out
  for (const part of header.split(';')) {
    const i = part.indexOf('=')
    if (i <= 0) continue
    const name = part.slice(0, i).trim()
    const value = part.slice(i + 1).trim()
    if (!(name in out)) {
      try { out[name] = decodeURIComponent(value) } catch { out[name] = value }
    }
  }
  return out
}

/** HttpOnly: scripts never see it; SameSite=Strict: no other site can make the browser send it. */
export function sessionCookie(token: string, maxAgeSeconds: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(maxAgeSeconds)}${secure ? '; Secure' : ''}`
}

export function clearedCookie(): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false
  const a = address.startsWith('::ffff:') ? address.slice(7) : address
  return a === '::1' || /^127\.\d+\.\d+\.\d+$/.test(a)
}

/**
 * Browsers always send Origin on WebSocket upgrades and cross-site POSTs; it must be this very host (or a configured
 * origin, e.g. behind a reverse proxy). A missing Origin is not a browser, so it cannot be a cross-site request.
 */
export function originAllowed(origin: string | undefined, host: string | undefined, extra: readonly string[] = []): boolean {
  if (origin === undefined) return true
  if (extra.includes(origin)) return true
  if (!host) return false
  return origin === `http://${host}` || origin === `https://${host}`
}

export type Access =
  | { ok: true; user: string; session: Session | null }
  | { ok: false; status: 401 | 403; reason: string }

/** The one access decision for every dashboard request and upgrade. */
export function decideAccess(a: { passwordSet: boolean; remoteAddress: string | undefined; session: Session | undefined }): Access {
  if (!a.passwordSet) {
    return isLoopback(a.remoteAddress)
      ? { ok: true, user: 'local', session: null }
      : { ok: false, status: 403, reason: 'the dashboard has no password and answers loopback clients only: set one with `edgeway dashboard set-password`' }
  }
  return a.session ? { ok: true, user: a.session.user, session: a.session } : { ok: false, status: 401, reason: 'login required' }
}

/** Failed logins per client address: after `limit` failures in `windowMs`, further attempts are refused until it passes. */
export class LoginThrottle {
  private readonly failures = new Map<string, number[]>()
  constructor(private readonly limit = 5, private readonly windowMs = 60_000, private readonly now: () => number = Date.now) {}

  blocked(address: string): boolean {
    const t = this.now()
    const list = (this.failures.get(address) ?? []).filter((x) => t - x < this.windowMs)
    if (list.length === 0) this.failures.delete(address)
    else this.failures.set(address, list)
    return list.length >= this.limit
  }

  fail(address: string): void {
    if (this.failures.size > 10_000) this.failures.clear()
    this.failures.set(address, [...(this.failures.get(address) ?? []), this.now()])
  }

  succeed(address: string): void { this.failures.delete(address) }
}
