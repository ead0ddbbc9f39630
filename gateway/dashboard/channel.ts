// The seam for optional dashboard features that talk over the dashboard's authenticated WebSocket (the camera's
// signalling is the first). A channel owns every message whose `type` starts with `<prefix>.`, in both directions.

export type ChannelMessage = { type: string } & Record<string, unknown>

/** One browser connection, as a channel sees it. */
export interface ChannelSession {
  /** Sends to this browser (never coalesced or dropped while the socket is open). */
  send(msg: object): void
  /** Who logged in ("admin", or "local" on a loopback-only dashboard without a password). */
  user: string
}

export interface ChannelConnection {
  /** An authenticated message of this channel from the browser. */
  receive(msg: ChannelMessage): void
  /** The browser went away (or the dashboard is stopping). */
  close(): void
}

export interface DashboardChannel {
  /** "camera": gets "camera.*" messages; the page's hello lists it under `features`. */
  readonly prefix: string
  open(session: ChannelSession): ChannelConnection
}
