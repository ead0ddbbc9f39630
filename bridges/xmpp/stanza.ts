// Pure stanza building and parsing on plain trees (no @xmpp import here: connection.ts converts to and from its
// elements). Unit-tested with strings through `serialize`.

export interface XmlNode {
  name: string
  attrs: Record<string, string | undefined>
  children: (XmlNode | string)[]
}

export const NS = {
  stanzas: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  discoInfo: 'http://jabber.org/protocol/disco#info',
  discoItems: 'http://jabber.org/protocol/disco#items',
  ping: 'urn:xmpp:ping',
  version: 'jabber:iq:version',
  pubsub: 'http://jabber.org/protocol/pubsub',
  pubsubErrors: 'http://jabber.org/protocol/pubsub#errors',
  dataForms: 'jabber:x:data',
  json: 'urn:xmpp:json:0',
  blocking: 'urn:xmpp:blocking',
  rosterx: 'http://jabber.org/protocol/rosterx',
  commands: 'http://jabber.org/protocol/commands',
} as const

export function el(name: string, attrs: Record<string, string | undefined> = {}, ...children: (XmlNode | string | null | undefined | false)[]): XmlNode {
  return { name, attrs, children: children.filter((c): c is XmlNode | string => c !== null && c !== undefined && c !== false) }
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;')
}

/** XML 1.0 forbids most control characters even escaped: drop them from outgoing text. */
function clean(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
}

export function serialize(n: XmlNode | string): string {
  if (typeof n === 'string') return escape(clean(n))
  const attrs = Object.entries(n.attrs).filter(([, v]) => v !== undefined).map(([k, v]) => ` ${k}="${escape(clean(v!))}"`).join('')
  if (n.children.length === 0) return `<${n.name}${attrs}/>`
  return `<${n.name}${attrs}>${n.children.map(serialize).join('')}</${n.name}>`
}

export function child(n: XmlNode, name: string, xmlns?: string): XmlNode | undefined {
  return n.children.find((c): c is XmlNode => typeof c !== 'string' && c.name === name && (xmlns === undefined || c.attrs.xmlns === xmlns))
}

export function text(n: XmlNode | undefined): string {
  if (!n) return ''
  return n.children.map((c) => (typeof c === 'string' ? c : text(c))).join('')
}

// ---- JIDs -------------------------------------------------------------------------------------------------------

export interface Jid { local: string | null; domain: string; resource: string | null }

/** Splits a JID; local and domain are lowercased (the server's nodeprep/nameprep does that for ASCII). */
export function parseJid(s: string | undefined): Jid | null {
  if (!s || s.length > 3071) return null
  const slash = s.indexOf('/')
  const bare = slash >= 0 ? s.slice(0, slash) : s
  const resource = slash >= 0 ? s.slice(slash + 1) : null
  const at = bare.indexOf('@')
  const local = at >= 0 ? bare.slice(0, at).toLowerCase() : null
  const domain = (at >= 0 ? bare.slice(at + 1) : bare).toLowerCase()
  if (!domain || local === '' || resource === '' || domain.includes('@')) return null
  return { local, domain, resource }
}

export function bareJid(j: Jid): string { return j.local ? `${j.local}@${j.domain}` : j.domain }

// ---- Incoming stanzas -----------------------------------------------------------------------------------------------

export type PresenceType = 'available' | 'unavailable' | 'subscribe' | 'subscribed' | 'unsubscribe' | 'unsubscribed' | 'probe' | 'error'

export type Incoming =
  | { kind: 'presence'; type: PresenceType; from: Jid; to: Jid; id: string | undefined }
  | { kind: 'message'; type: string; from: Jid; to: Jid; id: string | undefined; body: string | null; thread: string | null }
  | { kind: 'iq'; type: 'get' | 'set'; from: Jid; to: Jid; id: string; payload: XmlNode | undefined }
  | { kind: 'iq-reply'; type: 'result' | 'error'; id: string }
  | { kind: 'invalid'; reason: string; stanza: XmlNode }

const PRESENCE_TYPES = new Set(['unavailable', 'subscribe', 'subscribed', 'unsubscribe', 'unsubscribed', 'probe', 'error'])

/** Classifies a stanza from the server; anything that does not make sense comes back as `invalid` with a reason. */
export function parseIncoming(s: XmlNode): Incoming {
  const type = s.attrs.type
  if (s.name === 'iq' && (type === 'result' || type === 'error')) {
    return s.attrs.id ? { kind: 'iq-reply', type, id: s.attrs.id } : { kind: 'invalid', reason: 'iq reply without an id', stanza: s }
  }
  const from = parseJid(s.attrs.from)
  const to = parseJid(s.attrs.to)
  if (!from) return { kind: 'invalid', reason: `missing or malformed "from" (${String(s.attrs.from).slice(0, 100)})`, stanza: s }
  if (!to) return { kind: 'invalid', reason: `missing or malformed "to" (${String(s.attrs.to).slice(0, 100)})`, stanza: s }
  switch (s.name) {
    case 'presence': {
      if (type !== undefined && !PRESENCE_TYPES.has(type)) return { kind: 'invalid', reason: `unknown presence type "${type.slice(0, 40)}"`, stanza: s }
      return { kind: 'presence', type: (type ?? 'available') as PresenceType, from, to, id: s.attrs.id }
    }
    case 'message': {
      const body = child(s, 'body')
      const thread = child(s, 'thread')
      return { kind: 'message', type: type ?? 'normal', from, to, id: s.attrs.id, body: body ? text(body) : null, thread: thread ? text(thread) : null }
    }
    case 'iq': {
      if (type !== 'get' && type !== 'set') return { kind: 'invalid', reason: `unknown iq type "${String(type).slice(0, 40)}"`, stanza: s }
      if (!s.attrs.id) return { kind: 'invalid', reason: 'iq without an id', stanza: s }
      const payload = s.children.find((c): c is XmlNode => typeof c !== 'string')
      return { kind: 'iq', type, from, to, id: s.attrs.id, payload }
    }
    default:
      return { kind: 'invalid', reason: `unknown stanza <${s.name.slice(0, 40)}>`, stanza: s }
  }
}

// ---- Outgoing stanzas ---------------------------------------------------------------------------------------------

export type Show = 'away' | 'xa' | 'dnd' | 'chat'

export function presence(from: string | undefined, to: string, opts: { type?: Exclude<PresenceType, 'available' | 'error'>; show?: Show; status?: string } = {}): XmlNode {
  return el('presence', { from, to, type: opts.type },
    opts.show && el('show', {}, opts.show),
    opts.status && el('status', {}, opts.status))
}

export function chat(from: string | undefined, to: string, body: string, thread?: string | null, extra?: XmlNode): XmlNode {
  return el('message', { from, to, type: 'chat' }, el('body', {}, body), thread ? el('thread', {}, thread) : null, extra)
}

/** XEP-0144 roster item exchange: suggests contacts to add (clients that support it offer to add them). */
export function rosterSuggestion(items: { jid: string; name: string; group: string }[]): XmlNode {
  return el('x', { xmlns: NS.rosterx }, ...items.map((i) => el('item', { action: 'add', jid: i.jid, name: i.name }, el('group', {}, i.group))))
}

export type ErrorType = 'cancel' | 'modify' | 'auth' | 'wait'

/** An error reply to a stanza (same name and id, from/to swapped). */
export function errorReply(name: 'iq' | 'message' | 'presence', id: string | undefined, from: string | undefined, to: string, type: ErrorType, condition: string, message?: string): XmlNode {
  return el(name, { from, to, type: 'error', id },
    el('error', { type },
      el(condition, { xmlns: NS.stanzas }),
      message ? el('text', { xmlns: NS.stanzas }, message) : null))
}

export function iqResult(id: string, from: string, to: string, payload?: XmlNode): XmlNode {
  return el('iq', { type: 'result', id, from, to }, payload)
}

export function discoInfo(identity: { category: string; type: string; name: string }, features: string[]): XmlNode {
  return el('query', { xmlns: NS.discoInfo },
    el('identity', identity),
    ...features.map((f) => el('feature', { var: f })))
}

// ---- PubSub (XEP-0060) --------------------------------------------------------------------------------------------

export function pubsubPublish(service: string, node: string, itemId: string, json: string): XmlNode {
  return el('iq', { type: 'set', to: service },
    el('pubsub', { xmlns: NS.pubsub },
      el('publish', { node },
        el('item', { id: itemId }, el('json', { xmlns: NS.json }, json)))))
}

/** Node creation; with `maxItems`, the node keeps that many items (persisted) instead of the server default. */
export function pubsubCreate(service: string, node: string, maxItems?: number): XmlNode {
  const configure = maxItems === undefined ? null : el('configure', {},
    el('x', { xmlns: NS.dataForms, type: 'submit' },
      el('field', { var: 'FORM_TYPE', type: 'hidden' }, el('value', {}, 'http://jabber.org/protocol/pubsub#node_config')),
      el('field', { var: 'pubsub#persist_items' }, el('value', {}, '1')),
      el('field', { var: 'pubsub#max_items' }, el('value', {}, String(maxItems)))))
  return el('iq', { type: 'set', to: service }, el('pubsub', { xmlns: NS.pubsub }, el('create', { node }), configure))
}

export function discoInfoQuery(to: string): XmlNode {
  return el('iq', { type: 'get', to }, el('query', { xmlns: NS.discoInfo }))
}

/** Feature vars of a disco#info result payload. */
export function discoFeatures(query: XmlNode | undefined): string[] {
  if (!query) return []
  return query.children.filter((c): c is XmlNode => typeof c !== 'string' && c.name === 'feature').map((f) => f.attrs.var ?? '')
}

/** The error condition of an error stanza (`<error type=..><condition/>..</error>`). */
export function stanzaError(s: XmlNode): { type: string; condition: string; text: string } | null {
  const e = child(s, 'error')
  if (!e) return null
  const cond = e.children.find((c): c is XmlNode => typeof c !== 'string' && c.attrs.xmlns === NS.stanzas && c.name !== 'text')
  return { type: e.attrs.type ?? 'cancel', condition: cond?.name ?? 'undefined-condition', text: text(child(e, 'text', NS.stanzas)) }
}

/** What to do with a reading whose publish failed: never publishable as it is, or try again later. */
export function publishErrorOutcome(condition: string, type: string): 'rejected' | 'released' {
  const permanent = ['bad-request', 'not-acceptable', 'payload-too-big', 'invalid-payload', 'policy-violation', 'jid-malformed']
  return permanent.includes(condition) || type === 'modify' ? 'rejected' : 'released'
}

/** JIDs of a XEP-0191 `<blocklist/>`, `<block/>` or `<unblock/>` element (bare, lowercased). */
export function blockItems(n: XmlNode | undefined): string[] {
  if (!n) return []
  return n.children.filter((c): c is XmlNode => typeof c !== 'string' && c.name === 'item')
    .map((i) => parseJid(i.attrs.jid)).filter((j): j is Jid => j !== null).map(bareJid)
}

// ---- Ad-hoc commands (XEP-0050) -----------------------------------------------------------------------------------

/** disco#items for the commands node: one item per command a client can run on `jid`. */
export function adhocList(jid: string, commands: { node: string; name: string }[]): XmlNode {
  return el('query', { xmlns: NS.discoItems, node: NS.commands }, ...commands.map((c) => el('item', { jid, node: c.node, name: c.name })))
}

/** A finished command: a note (info or error) and nothing more to do. */
export function adhocCompleted(node: string, sessionid: string, note: string, type: 'info' | 'error' = 'info'): XmlNode {
  return el('command', { xmlns: NS.commands, node, sessionid, status: 'completed' }, el('note', { type }, note))
}

/** A command that needs input: a data form with text fields, completed by the next request. */
export function adhocForm(node: string, sessionid: string, title: string, fields: { var: string; label: string; required?: boolean }[]): XmlNode {
  return el('command', { xmlns: NS.commands, node, sessionid, status: 'executing' },
    el('actions', { execute: 'complete' }, el('complete', {})),
    el('x', { xmlns: NS.dataForms, type: 'form' }, el('title', {}, title),
      ...fields.map((f) => el('field', { var: f.var, label: f.label, type: 'text-single' }, f.required ? el('required', {}) : null))))
}

/** Values of a submitted data form inside a command (`<x type="submit">`). */
export function formValues(command: XmlNode): Record<string, string> {
  const x = child(command, 'x', NS.dataForms)
  const out: Record<string, string> = {}
  for (const f of x?.children ?? []) {
    if (typeof f === 'string' || f.name !== 'field' || !f.attrs.var) continue
    out[f.attrs.var] = text(child(f, 'value'))
  }
  return out
}
