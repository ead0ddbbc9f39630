// The slice of xmpp.js the bridge uses (the packages ship no types). Only bridges/xmpp/connection.ts imports them.
declare module '@xmpp/component' {
  import type { EventEmitter } from 'node:events'
  export interface Element {
    name: string
    attrs: Record<string, string | undefined>
    children: (Element | string)[]
    toString(): string
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
