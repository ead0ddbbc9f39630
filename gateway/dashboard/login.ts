// The password login both operator pages share (the gateway's dashboard and `edgeway fleet`): the throttle counted
// before the hash is checked, the lockout answer, the session cookie; and the machine's names for the Host check.
// One copy, so that a fix to the login reaches both.
import { hostname, networkInterfaces } from 'node:os'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { sessionCookie, type Sessions } from './access.ts'
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
