// The slice of xmpp.js the bridge uses (the packages ship no types). Only bridges/xmpp/connection.ts imports them.
declare module '@xmpp/component' {
  import type { EventEmitter } from 'node:events'
  export interface Element {
    name: string
    attrs: Record<string, string | undefined>
    children: (Element | string)[]
    toString(): string
    is(name: string, xmlns?: string): boolean
    getChild(name: string, xmlns?: string): Element | undefined
  }
  export type XmlFactory = (name: string, attrs?: Record<string, string | undefined> | null, ...children: (Element | string)[]) => Element
  export interface Entity extends EventEmitter {
    status: string
    socket: { destroy?(): void } | null
    start(): Promise<unknown>
    stop(): Promise<unknown>
    send(el: Element): Promise<void>
    reconnect: { stop(): void }
    middleware: { use(fn: (ctx: { stanza: Element; name: string; type: string | undefined }, next: () => Promise<unknown>) => unknown): void }
    iqCaller: { request(el: Element, timeoutMs?: number): Promise<Element> }
    /** Socket + stream open without a fresh login (what @xmpp/reconnect does): keeps the SM state for a resume. */
    connect(service: string): Promise<unknown>
    open(opts: { domain: string; lang?: string }): Promise<unknown>
    options: { service: string; domain: string; lang?: string }
    /** @xmpp/stream-management (client only): XEP-0198 state kept on the entity across reconnects. */
    streamManagement?: StreamManagement
  }
  export interface StreamManagement extends EventEmitter {
    enabled: boolean
    /** Resumable session id ("" when none). */
    id: string
    inbound: number
    outbound: number
    /** Sent, not yet acknowledged by the server: resent after a resume, emitted as "fail" when the session is lost. */
    outbound_q: { stanza: Element; stamp: string }[]
  }
  export function component(opts: { service: string; domain: string; password: string }): Entity
  const _default: { component: typeof component; xml: XmlFactory }
  export default _default
}

declare module '@xmpp/client' {
  import type { Entity, XmlFactory } from '@xmpp/component'
  export function client(opts: { service: string; domain: string; username: string; password: string; resource?: string }): Entity
  export const xml: XmlFactory
}
