// The password login both operator pages share (the gateway's dashboard and `edgeway fleet`): the throttle counted
// before the hash is checked, the lockout answer, the session cookie; and the machine's names for the Host check.
// One copy, so that a fix to the login reaches both.
import { hostname, networkInterfaces } from 'node:os'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { sessionCookie, parseCookies, clearedCookie, SESSION_COOKIE, type Access, type Sessions } from './access.ts'
import type { LoginThrottle } from '../security/login-throttle.ts'
import { verifySecret } from '../registry/secrets.ts'

export interface PasswordLogin {
  throttle: LoginThrottle
  sessions: Sessions
  passwordHash: string
  sessionHours: number
  log: Logger
  /** For log lines: "dashboard", "fleet". */
  what: string
}

/** What /login and /logout need of the page that serves them (the gateway's dashboard, the fleet's). */
export interface LoginRoutes {
  access(req: IncomingMessage): Access
  originOk(req: IncomingMessage): boolean
  readonly passwordSet: boolean
  /** The login form (login.html of the dashboard's public dir: the fleet uses the same form and look). */
  loginPage: string
  /** The 403 text when no password is set: how to set one. */
  noPassword: string
  /** Set when a password is: the POST's checks and session. */
  login(): PasswordLogin
  sessions: Sessions
  /** Closes the live sockets of a session that logged out. */
  closeSession(token: string): void
  sendFile(res: ServerResponse, file: string): Promise<void>
}

/** Refused access: a page without a session goes to the login form, anything else gets the status and reason. */
export function denyAccess(res: ServerResponse, a: Access & { ok: false }, html: boolean): void {
  if (a.status === 401 && html) { res.writeHead(303, { location: '/login', 'cache-control': 'no-store' }).end(); return }
  res.writeHead(a.status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end(a.reason + '\n')
}

/** GET /login: the form (or, with no password set, straight to the page for loopback); POST /login: log in. */
export async function loginRoute(req: IncomingMessage, res: ServerResponse, r: LoginRoutes): Promise<void> {
  if (req.method === 'GET') {
    // No password (loopback only): nothing to log in to.
    if (!r.passwordSet) { const a = r.access(req); if (!a.ok) { denyAccess(res, a, false); return } res.writeHead(303, { location: '/' }).end(); return }
    await r.sendFile(res, r.loginPage)
    return
  }
  if (req.method !== 'POST') { res.writeHead(405, { allow: 'GET, POST' }).end(); return }
  if (!r.originOk(req)) { req.resume(); res.writeHead(403, { 'content-type': 'text/plain' }).end('cross-origin login refused\n'); return }
  if (!r.passwordSet) { req.resume(); denyAccess(res, { ok: false, status: 403, reason: r.noPassword }, false); return }
  await passwordLogin(req, res, r.login())
}

/** POST /logout: the session ends and its live sockets close. */
export function logoutRoute(req: IncomingMessage, res: ServerResponse, r: LoginRoutes): void {
  if (req.method !== 'POST') { res.writeHead(405, { allow: 'POST' }).end(); return }
  if (!r.originOk(req)) { req.resume(); res.writeHead(403, { 'content-type': 'text/plain' }).end('cross-origin logout refused\n'); return }
  const token = parseCookies(req.headers.cookie)[SESSION_COOKIE]
  if (token) {
    r.sessions.revoke(token)
    r.closeSession(token)
  }
  res.writeHead(303, { location: r.passwordSet ? '/login' : '/', 'set-cookie': clearedCookie(), 'cache-control': 'no-store' }).end()
}

/** POST /login once method, Origin and "a password is set" were checked by the caller. */
export async function passwordLogin(req: IncomingMessage, res: ServerResponse, d: PasswordLogin): Promise<void> {
  const addr = req.socket.remoteAddress ?? '?'
  // Counted before the body is read and the hash checked: parallel attempts cannot all get past the throttle.
  const attempt = d.throttle.begin([`addr:${addr}`])
  if (!attempt.ok) {
    const seconds = Math.max(1, Math.ceil(attempt.retryAfterMs / 1000))
    if (attempt.newLockout) d.log.warn({ from: addr, retryAfterSeconds: seconds }, `${d.what} login refused: too many failed attempts`)
    const headers = { 'retry-after': String(seconds), 'cache-control': 'no-store' }
    const page = /\btext\/html\b/.test(req.headers.accept ?? '') ? lockoutPage(seconds, new Date(Date.now() + seconds * 1000)) : null
    if (page) res.writeHead(429, { ...headers, ...page.headers }).end(page.body)
    else res.writeHead(429, { ...headers, 'content-type': 'text/plain; charset=utf-8' }).end(`too many failed logins; try again in ${seconds} s\n`)
    req.resume()
    return
  }
  const body = await readBody(req, 4096)
  const password = body === null ? null : new URLSearchParams(body).get('password')
  const ok = password !== null && password.length > 0 && await verifySecret(password, d.passwordHash)
  attempt.settle(ok)
  if (!ok) {
    d.log.warn({ from: addr }, `${d.what} login failed: wrong password`)
    res.writeHead(303, { location: '/login?failed=1', 'cache-control': 'no-store' }).end()
    return
  }
  const s = d.sessions.create('admin')
  d.log.info({ from: addr }, `${d.what} login`)
  const secure = req.headers['x-forwarded-proto'] === 'https' || 'encrypted' in req.socket
  res.writeHead(303, { location: '/', 'set-cookie': sessionCookie(s.token, d.sessionHours * 3600, secure), 'cache-control': 'no-store' }).end()
}

/** The browser's answer to a locked-out login: when to try again, and the way back to the form. */
function lockoutPage(seconds: number, at: Date): { headers: Record<string, string>; body: string } {
  const when = at.toISOString().slice(11, 19) + ' UTC'
  return {
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
      'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY',
    },
    body: `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>edgeway: too many failed logins</title>
<link rel="stylesheet" href="/ui/style.css"><link rel="icon" href="/ui/favicon.svg" type="image/svg+xml"></head>
<body class="login"><main class="panel form login-box">
<h1>edgeway</h1>
<p class="error">Too many failed logins from this address.</p>
<p>Try again in ${seconds} second${seconds === 1 ? '' : 's'} (after ${when}).</p>
<p><a href="/login">Back to the login</a></p>
</main></body>
</html>
`,
  }
}

/** This machine's names and interface addresses, for the Host check. */
export function machineNames(): { hostnames: string[]; addresses: string[] } {
  const addresses: string[] = []
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) addresses.push(a.address)
  let name = ''
  try { name = hostname() } catch { /* no name: addresses and loopback still work */ }
  return { hostnames: name ? [name] : [], addresses }
}

/** The request body as text, or null beyond `max` bytes. */
export async function readBody(req: IncomingMessage, max: number): Promise<string | null> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const chunk of req) {
    n += (chunk as Buffer).length
    if (n > max) return null
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}
