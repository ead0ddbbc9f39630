// Free loopback ports and temp dirs, so tests run in parallel without colliding.
import { createServer, connect } from 'node:net'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * Ports handed out by any test process on this machine, as files named after the port holding the owner's pid. Test
 * files run as parallel processes: without this, two of them can pick the same free port in the same instant, or one
 * can take a port another holds for a gateway it is about to restart.
 */
const CLAIMS = join(tmpdir(), 'edgeway-test-ports')
const mine: string[] = []
process.once('exit', () => { for (const f of mine) { try { unlinkSync(f) } catch { /* gone */ } } })

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
}

/** Claims the port for this process; false if a live process holds it (a dead owner's claim is taken over). */
function claim(port: number): boolean {
  mkdirSync(CLAIMS, { recursive: true })
  const file = join(CLAIMS, String(port))
  for (let i = 0; i < 2; i++) {
    try {
      const fd = openSync(file, 'wx')
      writeSync(fd, String(process.pid))
      closeSync(fd)
      mine.push(file)
      return true
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const owner = Number(readFileSync(file, 'utf8'))
      if (owner && alive(owner)) return false
      try { unlinkSync(file) } catch { /* someone else took it over */ }
    }
  }
  return false
}

/**
 * A port below the kernel's ephemeral range (32768+), so that outgoing client connections, which take their local
 * port from that range, can never grab a port a test means to listen on again (restarts reuse their port).
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    if (!claim(port)) continue
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer()
      srv.unref()
      srv.once('error', () => resolve(false))
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
    if (ok) return port
  }
  throw new Error('no free port found in 20000-31999')
}

export function tempDir(prefix = 'edgeway-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * The one scale factor every wait in the tests derives from: TEST_TIME_SCALE=3 npm test on a loaded machine gives
 * every timeout three times as long. (Not EDGEWAY_*: those are read as gateway config.)
 */
export const TIME_SCALE = Math.max(1, Number(process.env.TEST_TIME_SCALE ?? '1') || 1)

/** A timeout in ms, scaled by TIME_SCALE. */
export function scaled(ms: number): number { return Math.round(ms * TIME_SCALE) }

/** Sleeps for ms scaled by TIME_SCALE: a fixed pause ("nothing more arrives within ...") is a wait like any other. */
export function pause(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, scaled(ms))) }

/** Resolves once something accepts TCP connections on the port. */
export async function waitForPort(port: number, timeoutMs = 10000, host = '127.0.0.1'): Promise<void> {
  timeoutMs = scaled(timeoutMs)
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, host)
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => { s.destroy(); resolve(false) })
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing listened on ${host}:${port} within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10000, everyMs = 50): Promise<T> {
  timeoutMs = scaled(timeoutMs)
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
