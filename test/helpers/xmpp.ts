// A real XMPP user for tests (@xmpp/client against the private Prosody), recording every stanza it receives.
import { client, xml } from '@xmpp/client'
import type { Prosody } from './prosody.ts'
import { waitFor, pause } from './net.ts'

export { xml }

export interface Stanza {
  name: string
  attrs: Record<string, string | undefined>
  getChild(name: string, xmlns?: string): Stanza | undefined
  getChildren(name: string, xmlns?: string): Stanza[]
  getChildText(name: string, xmlns?: string): string | null
  toString(): string
}

export interface XmppUser {
  jid: string
  got: Stanza[]
  send(el: unknown): Promise<void>
  /** Waits for a received stanza matching `pred` (received since index `from`, default: any). */
  wait(what: string, pred: (s: Stanza) => boolean, timeoutMs?: number, from?: number): Promise<Stanza>
  presencesFrom(jid: string): Stanza[]
  chatsFrom(jid: string): Stanza[]
  /** Sends an iq (an id is added) and resolves with the reply (result or error). */
  iq(el: { attrs: Record<string, string | undefined> }, timeoutMs?: number): Promise<Stanza>
  /** Sends a chat message and resolves with the body of the next chat (or error) from that JID. */
  ask(to: string, body: string, timeoutMs?: number): Promise<string>
  stop(): Promise<void>
  online(): boolean
}

const bare = (j: string | undefined): string => (j ?? '').split('/')[0]!

export async function xmppUser(p: Prosody, user: string, password = `${user}pw`, register = true): Promise<XmppUser> {
  if (register) p.register(user, password)
  const c = client({ service: `xmpp://127.0.0.1:${p.c2sPort}`, domain: p.domain, username: user, password, resource: 'test' }) as unknown as {
    on(e: string, fn: (x: never) => void): void; start(): Promise<unknown>; stop(): Promise<unknown>; send(el: unknown): Promise<void>
    reconnect: { stop(): void }
    status: string
  }
  c.reconnect.stop()
  const got: Stanza[] = []
  let iqs = 0
  c.on('error', () => undefined)
  c.on('stanza', (s: never) => { got.push(s as Stanza) })
  await c.start()
  // Requesting the roster makes this an "interested resource" (RFC 6121): only those get subscription answers.
  await c.send(xml('iq', { type: 'get', id: 'roster-1' }, xml('query', { xmlns: 'jabber:iq:roster' })))
  await waitFor('roster', () => got.some((s) => s.name === 'iq' && s.attrs.id === 'roster-1'), 5000, 10)
  await c.send(xml('presence'))
  const u: XmppUser = {
    jid: `${user}@${p.domain}`,
    got,
    send: (el) => c.send(el),
    async wait(what, pred, timeoutMs = 10000, from = 0) {
      return waitFor(what, () => got.slice(from).find(pred), timeoutMs, 20)
    },
    presencesFrom: (jid) => got.filter((s) => s.name === 'presence' && bare(s.attrs.from) === jid),
    chatsFrom: (jid) => got.filter((s) => s.name === 'message' && bare(s.attrs.from) === jid),
    async iq(el, timeoutMs = 15000) {
      const id = `q${++iqs}`
      el.attrs.id = id
      const from = got.length
      await c.send(el)
      return u.wait(`iq reply ${id}`, (s) => s.name === 'iq' && s.attrs.id === id && (s.attrs.type === 'result' || s.attrs.type === 'error'), timeoutMs, from)
    },
    async ask(to, body, timeoutMs = 15000) {
      const from = got.length
      await c.send(xml('message', { to, type: 'chat' }, xml('body', {}, body)))
      const r = await u.wait(`reply from ${to} to "${body.slice(0, 40)}"`, (s) => s.name === 'message' && bare(s.attrs.from) === to, timeoutMs, from)
      if (r.attrs.type === 'error') return `ERROR ${r.getChild('error')?.toString() ?? ''}`
      return r.getChildText('body') ?? ''
    },
    online: () => c.status === 'online',
    async stop() { await Promise.race([c.stop().catch(() => undefined), pause(1000)]) },
  }
  return u
}

/** The last presence from `jid`: 'available' | 'unavailable' | 'away' | 'xa' | ... (show when available). */
export function presenceState(s: Stanza | undefined): string | undefined {
  if (!s) return undefined
  if (s.attrs.type) return s.attrs.type
  return s.getChildText('show') ?? 'available'
}
