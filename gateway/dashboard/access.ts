// Who may use the dashboard: sessions after a password login, cookies, loopback-only mode, Host and Origin checks
// (DNS rebinding, cross-site requests). Login throttling is gateway/security/login-throttle.ts. Pure (no I/O): clock
// and randomness are injected or from node:crypto; the machine's names come in from the server.
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
 * The names the dashboard answers to (DNS-rebinding guard): a page on evil.example whose name was re-pointed at
 * 127.0.0.1 reaches the gateway with "Host: evil.example", so only the gateway's own names are served: loopback
 * names and addresses, the machine's host names and interface addresses (listed once by the server at start), and
 * the hosts of dashboard.allowedOrigins.
 */
export interface HostPolicy {
  /** Canonical host names (lowercase, IPv6 in brackets, no port) besides the loopback ones. */
  readonly hosts: ReadonlySet<string>
  /** dashboard.allowedOrigins, matched exactly. */
  readonly origins: readonly string[]
}

export function hostPolicy(machine: { hostnames: readonly string[]; addresses: readonly string[] }, allowedOrigins: readonly string[]): HostPolicy {
  const hosts = new Set<string>()
  const add = (h: string | null): void => { if (h) hosts.add(h) }
  for (const name of machine.hostnames) {
    const n = canonicalHostname(name)
    if (!n) continue
    const short = n.split('.')[0]!
    add(n); add(short); add(canonicalHostname(short + '.local'))
  }
  // Interface addresses: IPv6 ones bracketed, zone ids ("%eth0") dropped since URLs cannot carry them.
  for (const a of machine.addresses) add(canonicalHostname(a.includes(':') ? `[${a.split('%')[0]}]` : a))
  for (const o of allowedOrigins) { try { add(canonicalHostname(new URL(o).hostname)) } catch { /* config validation rejects these */ } }
  return { hosts, origins: [...allowedOrigins] }
}

// host or [ipv6], then an optional port: nothing that a URL parser could read as userinfo, path or zone.
const HOST_RE = /^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i

/** A Host header (or host name) in canonical form (lowercase, IPv4 dotted, IPv6 compressed in brackets), or null. */
function parseHost(header: string, scheme = 'http:'): URL | null {
  if (!HOST_RE.test(header)) return null
  try { return new URL(`${scheme}//${header}`) } catch { return null }
}

function canonicalHostname(name: string): string | null {
  const u = parseHost(name)
  return u ? u.hostname.replace(/\.$/, '') : null
}

function isLoopbackName(h: string): boolean {
  return h === 'localhost' || h.endsWith('.localhost') || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h)
}

/** Is this host name (canonical form) one of the gateway's own? */
export function ownHostname(hostname: string, policy: HostPolicy): boolean {
  return isLoopbackName(hostname) || policy.hosts.has(hostname)
}

export type HostCheck = { ok: true; hostname: string } | { ok: false; status: 400 | 403; reason: string }

/** The first check on every dashboard request and upgrade: is it addressed to this gateway by one of its names? */
export function checkHost(host: string | undefined, policy: HostPolicy): HostCheck {
  if (!host) return { ok: false, status: 400, reason: 'a Host header is required' }
  const u = parseHost(host)
  if (!u) return { ok: false, status: 400, reason: 'malformed Host header' }
  const hostname = u.hostname.replace(/\.$/, '')
  if (ownHostname(hostname, policy)) return { ok: true, hostname }
  return {
    ok: false, status: 403,
    reason: `refused: "${hostname}" is not a name of this gateway. The dashboard answers only to localhost, this machine's ` +
      'host names and addresses, and the hosts in dashboard.allowedOrigins (this guards against DNS rebinding); ' +
      'to reach it under another name, add that origin (e.g. https://gw.example.com) to dashboard.allowedOrigins',
  }
}

/**
 * Browsers always send Origin on WebSocket upgrades and cross-site POSTs. It must be a configured origin exactly, or
 * an http(s) origin on one of the gateway's own names, and the very host and port the request went to: a page on
 * another port of this machine is another site. A missing Origin is not a browser, so it cannot be a cross-site request.
 */
export function originAllowed(origin: string | undefined, host: string | undefined, policy: HostPolicy): boolean {
  if (origin === undefined) return true
  if (policy.origins.includes(origin)) return true
  let u: URL
  try { u = new URL(origin) } catch { return false }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.origin !== origin) return false
  if (!ownHostname(u.hostname.replace(/\.$/, ''), policy)) return false
  // The Host header, read with the origin's scheme so default ports compare equal ("gw" and "https://gw:443").
  const target = host === undefined ? null : parseHost(host, u.protocol)
  return target !== null && target.host === u.host
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
