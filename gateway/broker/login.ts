// Who a CONNECT's credentials name: an anonymous client (open broker, or allowAnonymous) as the device its client
// id's namespace names, a registered device, or an integration client with its role. Throws the CONNACK refusal
// (already counted and logged through the broker's refuse). Every guess is counted by the login throttles, per name
// and per address, before any hash is checked.
import type { AuthenticateError } from 'aedes'
import type { MqttSection } from '../config/sections.ts'
import type { Registry } from '../registry/registry.ts'
import { DEVICE_ID_RE } from '../readings.ts'
import { LoginThrottle, type LoginAttempt } from '../security/login-throttle.ts'
import { clientIdNamespace, type Principal } from './identity.ts'
import type { Role } from './roles.ts'

/** Connect return codes (MQTT 3.1.1 table 3.1). */
export const IDENTIFIER_REJECTED = 2
export const BAD_USERNAME_OR_PASSWORD = 4
export const NOT_AUTHORIZED = 5

/** An error the gateway raised on purpose (already logged and counted): aedes closes the connection with it. */
export class RefusedError extends Error {}

export function authError(code: number, message: string): AuthenticateError {
  return Object.assign(new RefusedError(message), { returnCode: code }) as AuthenticateError
}

/** What a refusal is about, for its log line and its key in the refusal log. */
export type RefusalContext = { device?: string; client?: string; clientId?: string; topic?: string; address?: string }

export interface LoginDeps {
  config: MqttSection
  registry: Registry
  roles: ReadonlyMap<string, Role>
  /** Counts and logs a refusal (the broker's). */
  refuse(reason: string, detail: string, ctx: RefusalContext): void
}

export class Logins {
  /** Failed logins per name, and per address (many devices may share one address: a larger budget). */
  private readonly idThrottle: LoginThrottle
  private readonly addrThrottle: LoginThrottle

  constructor(private readonly d: LoginDeps) {
    const t = d.config.loginThrottle
    this.idThrottle = new LoginThrottle({ budget: t.budget, baseLockMs: t.lockSeconds * 1000 })
    this.addrThrottle = new LoginThrottle({ budget: t.addressBudget, baseLockMs: t.lockSeconds * 1000 })
  }

  /** Who the credentials name; throws the CONNACK refusal. Every guess is counted before any hash is checked. */
  async check(clientId: string, username: string | undefined, password: Buffer | undefined, address: string): Promise<Principal> {
    const cfg = this.d.config
    if (username === undefined || username === '') {
      if (cfg.openBroker || cfg.allowAnonymous) {
        // An anonymous client never speaks as a registered identity: that name needs its secret.
        // It acts as the device its client id's namespace names (`dev` for `dev` and `dev:2`).
        const ns = clientIdNamespace(clientId)
        if (this.d.registry.isReserved(ns)) {
          this.d.refuse('anonymous', `anonymous client uses the client id of the registered identity "${ns.slice(0, 80)}"`, { clientId, address })
          throw authError(NOT_AUTHORIZED, 'not authorized: this client id belongs to a registered identity; log in with its secret')
        }
        return cfg.openBroker ? { kind: 'open', id: ns } : { kind: 'anonymous', id: ns }
      }
      this.d.refuse('anonymous', 'connection without credentials (anonymous access is off)', { clientId, address })
      throw authError(NOT_AUTHORIZED, 'not authorized: this gateway needs device credentials')
    }
    if (!DEVICE_ID_RE.test(username)) {
      this.d.refuse('bad_credentials', `malformed device id in username "${username.slice(0, 80)}"`, { clientId, address })
      throw authError(BAD_USERNAME_OR_PASSWORD, 'bad user name or password')
    }
    const attempt = this.begin(username, address)
    if (!attempt.ok) {
      this.d.refuse('login_throttled', `too many failed logins for "${username}" or from ${address}: retry in ${Math.ceil(attempt.retryAfterMs / 1000)} s`, { device: username, clientId, address })
      throw authError(NOT_AUTHORIZED, 'not authorized: too many failed logins, retry later')
    }
    const secret = password?.toString('utf8') ?? ''
    const registry = this.d.registry
    // One hash check on every path (a dummy one for an unknown name): timing tells nothing about which names exist.
    const integration = registry.get(username) === undefined ? registry.getClient(username) : undefined
    const ok = integration ? await registry.verifyClient(username, secret) : await registry.verify(username, secret)
    attempt.settle(ok)
    if (!ok) {
      // The device gets the same answer either way (nothing tells a guesser which names exist); the log says which.
      const what = integration ? `wrong or missing secret for client "${username}"`
        : registry.get(username)?.hasSecret ? `wrong or missing secret for device "${username}"` : `unknown (or removed) device or client "${username}"`
      this.d.refuse('bad_credentials', what, { device: username, clientId, address })
      throw authError(BAD_USERNAME_OR_PASSWORD, 'bad user name or password')
    }
    if (!integration) return { kind: 'device', id: username }
    const role = this.d.roles.get(integration.role)
    if (!role) {
      this.d.refuse('unknown_role', `client "${username}" has role "${integration.role}", which the config does not define`, { clientId, address })
      throw authError(NOT_AUTHORIZED, 'not authorized: unknown role')
    }
    return { kind: 'client', name: username, role }
  }

  /** Counted before any hash is checked, so parallel guesses cannot all be tried. */
  private begin(username: string, address: string): LoginAttempt {
    const byAddr = this.addrThrottle.begin([address])
    if (!byAddr.ok) return byAddr
    const byId = this.idThrottle.begin([username])
    if (!byId.ok) { byAddr.settle(false); return byId }
    return { ok: true, settle: (success) => { byAddr.settle(success); byId.settle(success) } }
  }
}
