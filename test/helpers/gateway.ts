// Runs the real gateway as a child process (bin/edgeway.js run) with a config in a temp dir.
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync, mkdirSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { freePort, tempDir, scaled, pause } from './net.ts'
import { gatewayNodeFlags } from '../../scripts/node-flags.ts'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const EDGEWAY_BIN = join(ROOT, 'bin', 'edgeway.js')

/** npm start's node options (as installed), then GATEWAY_NODE_ARGS, e.g. '--cpu-prof --cpu-prof-dir=/tmp/p' to profile. */
const NODE_ARGS = [...gatewayNodeFlags(), ...(process.env.GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean)]

export interface LogLine { level: number; msg: string; [k: string]: unknown }

export interface GatewayProc {
  dir: string
  dataDir: string
  configFile: string
  mqttPort: number
  wsPort: number
  httpPort: number
  proc: ChildProcess
  logs: LogLine[]
  /** Starts (again) on the same ports and data dir; resolves on the "edgeway ready" log line. */
  start(): Promise<void>
  /** SIGTERM, resolves with the exit code. */
  stop(): Promise<number | null>
  /** SIGKILL: no chance to flush anything. */
  kill(): Promise<void>
  cleanup(): Promise<void>
  waitLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  http(path: string): Promise<{ status: number; body: string }>
  health(): Promise<{ status: string; reasons: string[]; mqtt: { clients: number; devices: number }; outbox: { depth: number; diskFull: boolean }; upstreams: { name: string; connected: boolean; lag: number | null; ackedThrough: number | null }[] }>
  metric(name: string, labels?: Record<string, string>): Promise<number>
  cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>
}

export type ConfigOverrides = Record<string, unknown>

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...a }
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k]
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
      ? merge(cur as Record<string, unknown>, v as Record<string, unknown>) : v
  }
  return out
}

export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, cwd = ROOT): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [EDGEWAY_BIN, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>((resolve) => p.on('exit', (c) => resolve(c)))
  return { code, stdout, stderr }
}

export async function startGatewayProc(overrides: ConfigOverrides = {}, opts: { dataDir?: string; start?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<GatewayProc> {
  const { dir, cleanup } = tempDir('edgeway-gw-')
  const [mqttPort, wsPort, httpPort] = [await freePort(), await freePort(), await freePort()]
  const dataDir = opts.dataDir ?? join(dir, 'data')
  mkdirSync(dataDir, { recursive: true })
  const configFile = join(dir, 'edgeway.yaml')
  const config = merge({
    gateway: { id: 'test-gw', dataDir },
    log: { level: 'info' },
    mqtt: { tcp: { host: '127.0.0.1', port: mqttPort }, ws: { host: '127.0.0.1', port: wsPort } },
    http: { host: '127.0.0.1', port: httpPort },
  }, overrides)
  writeFileSync(configFile, stringify(config))
  const g: GatewayProc = {
    dir, dataDir, configFile, mqttPort, wsPort, httpPort,
    proc: undefined as unknown as ChildProcess,
    logs: [],
    async start() {
      g.logs.length = 0
      const p = spawn(process.execPath, [...NODE_ARGS, EDGEWAY_BIN, 'run', '--config', configFile], { cwd: dir, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
      g.proc = p
      let buf = ''
      p.stdout!.on('data', (d: Buffer) => {
        buf += d.toString()
        let i
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i)
          buf = buf.slice(i + 1)
          try { g.logs.push(JSON.parse(line) as LogLine) } catch { g.logs.push({ level: 30, msg: line }) }
        }
      })
      let err = ''
      p.stderr!.on('data', (d: Buffer) => { err += d.toString() })
      const exited = new Promise<never>((_r, reject) => p.once('exit', (code) => reject(new Error(`gateway exited with ${code} before ready: ${err}\n${g.logs.map((l) => (l.err ? `${l.msg}: ${String(l.err)}` : l.msg)).join('\n')}`))))
      const ready = g.waitLog((l) => l.msg === 'edgeway ready' || p.exitCode !== null || p.signalCode !== null, 20000)
      await Promise.race([ready, exited])
      exited.catch(() => undefined)
    },
    async stop() {
      const p = g.proc
      if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null
      const done = new Promise<number | null>((resolve) => p.once('exit', (c) => resolve(c)))
      p.kill('SIGTERM')
      return await done
    },
    async kill() {
      const p = g.proc
      if (!p || p.exitCode !== null || p.signalCode !== null) return
      const done = new Promise((resolve) => p.once('exit', resolve))
      p.kill('SIGKILL')
      await done
    },
    async cleanup() {
      // A profiled gateway (GATEWAY_NODE_ARGS) writes its profile only on a clean exit.
      if (NODE_ARGS.length > 0) await Promise.race([g.stop(), pause(5000)])
      await g.kill()
      cleanup()
    },
    async waitLog(pred, timeoutMs = 10000) {
      timeoutMs = scaled(timeoutMs)
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const hit = g.logs.find(pred)
        if (hit) return hit
        if (Date.now() > deadline) throw new Error(`log line not seen within ${timeoutMs} ms; last lines:\n${g.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`)
        await pause(25)
      }
    },
    async http(path) {
      const r = await fetch(`http://127.0.0.1:${httpPort}${path}`)
      return { status: r.status, body: await r.text() }
    },
    async health() {
      return JSON.parse((await g.http('/healthz')).body) as Awaited<ReturnType<GatewayProc['health']>>
    },
    async metric(name, labels = {}) {
      const text = (await g.http('/metrics')).body
      let sum = 0
      for (const line of text.split('\n')) {
        if (!line.startsWith(name)) continue
        const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line)
        if (!m || m[1] !== name) continue
        const ls = m[2] ?? ''
        if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) sum += Number(m[3])
      }
      return sum
    },
    cli(args) { return runCli([...args, '--config', configFile], {}, dir) },
  }
  process.once('exit', () => { try { g.proc?.kill('SIGKILL') } catch { /* gone */ } })
  if (opts.start !== false) await g.start()
  return g
}

export async function addDevice(g: GatewayProc, id: string): Promise<string> {
  return cliSecret(g, ['device', 'add', id])
}

/** Runs a CLI command that issues a secret (`device add`, `client add`, `... rotate-secret`) and answers the secret. */
export async function cliSecret(g: GatewayProc, args: string[]): Promise<string> {
  const r = await g.cli(args)
  const m = /^secret: (\S+)$/m.exec(r.stdout)
  if (r.code !== 0 || !m) throw new Error(`${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`)
  return m[1]!
}
