// A TCP relay between an upstream and its real peer, so a contract can act on the link without touching the peer:
// hold the peer's answers (acks pile up unseen: the upstream's window fills), cut every connection (a link loss with
// the answers still held, so nothing in flight was acked), or refuse new connections (the peer unreachable).
import { createServer, connect, type Server, type Socket } from 'node:net'
import { freePort } from '../helpers/net.ts'

interface Pair { client: Socket; peer: Socket; held: Buffer[] }

export class TcpProxy {
  private readonly pairs = new Set<Pair>()
  private holding = false
  private refusing = false
  /** Connections accepted so far (each reconnect of the upstream is one more). */
  accepted = 0

  private constructor(readonly port: number, private readonly server: Server) {}

  static async start(targetPort: number, host = '127.0.0.1'): Promise<TcpProxy> {
    const port = await freePort()
    let proxy: TcpProxy | null = null
    const server = createServer((client) => proxy!.relay(client, targetPort, host))
    proxy = new TcpProxy(port, server)
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, host, () => resolve()) })
    return proxy
  }

  get connections(): number { return this.pairs.size }

  /** From now on the peer's bytes are kept here instead of reaching the upstream (its acks, credit, answers). */
  hold(): void { this.holding = true }

  /** Delivers what was held and relays again. */
  release(): void {
    this.holding = false
    for (const p of this.pairs) { for (const b of p.held.splice(0)) p.client.write(b) }
  }

  /** Destroys every connection; what was held is dropped (the upstream never sees those acks). */
  cut(): void {
    for (const p of [...this.pairs]) this.drop(p)
    this.holding = false
  }

  /** While on, new connections are closed at once (the peer is unreachable). */
  refuse(on: boolean): void { this.refusing = on }

  async close(): Promise<void> {
    this.cut()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private relay(client: Socket, targetPort: number, host: string): void {
    if (this.refusing) { client.destroy(); return }
    this.accepted++
    const peer = connect(targetPort, host)
    const p: Pair = { client, peer, held: [] }
    this.pairs.add(p)
    client.on('data', (d: Buffer) => peer.write(d))
    peer.on('data', (d: Buffer) => { if (this.holding) p.held.push(d); else client.write(d) })
    const end = (): void => this.drop(p)
    for (const s of [client, peer]) { s.on('error', end); s.on('close', end) }
  }

  private drop(p: Pair): void {
    if (!this.pairs.delete(p)) return
    p.held = []
    p.client.destroy()
    p.peer.destroy()
  }
}
