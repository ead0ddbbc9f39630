// The control socket's wire format: newline-delimited JSON, one request per line, answered by any number of
// progress lines and then exactly one result or error line with the same id.

export interface ControlRequest { id: number; method: string; params?: unknown }

export type ControlResponse =
  | { id: number; progress: unknown }
  | { id: number; result: unknown }
  | { id: number; error: string }

export const SOCKET_NAME = 'control.sock'

/** Splits a byte stream into lines; a line over `max` bytes is an error (a peer cannot make us buffer forever). */
export class LineSplitter {
  private buf = ''
  constructor(private readonly max = 16 * 1024 * 1024) {}

  push(chunk: string): string[] {
    this.buf += chunk
    const lines = this.buf.split('\n')
    this.buf = lines.pop() ?? ''
    if (this.buf.length > this.max) throw new Error(`control message over ${this.max} bytes`)
    return lines.filter((l) => l.trim() !== '')
  }
}
