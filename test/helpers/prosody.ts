// A private Prosody (XMPP server) on free loopback ports in a temp dir, stopped by its pid.
// Recipe from ../shared/peers.md: config file with daemonize = false, `prosody --config <file> -F`, users via prosodyctl.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, tempDir, waitForPort } from './net.ts'
import { requireBinary } from './mosquitto.ts'

export const PROSODY = '/usr/bin/prosody'
const PROSODYCTL = '/usr/bin/prosodyctl'

export interface ProsodyOptions {
  /** Component domain for the gateway (XEP-0114); its secret is `secret`. */
  componentDomain?: string
  secret?: string
  /** Adds `Component "pubsub.localhost" "pubsub"` (the gateway's component may create nodes). */
  pubsub?: boolean
  /**
   * Where the pubsub service keeps items: "sql" (SQLite, survives a restart; needs lua-dbi-sqlite3), "internal"
   * (files: each publish rereads the node, so it slows down as nodes grow) or "memory" (lost on restart).
   */
  pubsubStorage?: 'sql' | 'internal' | 'memory'
  /** XEP-0198 stream management (mod_smacks) for c2s; default on. */
  streamManagement?: boolean
  /** TLS for c2s with this certificate: STARTTLS required on the c2s port, plus a direct-TLS port (XEP-0368). */
  tls?: { cert: string; key: string }
}

export interface Prosody {
  domain: string
  c2sPort: number
  /** With `tls`: the c2s port speaking TLS from the first byte. */
  directTlsPort: number | null
  componentPort: number
  componentDomain: string
  secret: string
  pubsubJid: string | null
  dir: string
  proc: ChildProcess
  output(): string
  start(): Promise<void>
  stop(signal?: NodeJS.Signals): Promise<void>
  register(user: string, password: string): void
  cleanup(): Promise<void>
}

export async function startProsody(opts: ProsodyOptions = {}): Promise<Prosody> {
  requireBinary(PROSODY, 'prosody')
  if (opts.pubsubStorage === 'sql') requireBinary('/usr/share/lua/5.4/DBI.lua', 'lua-dbi-sqlite3')
  const { dir, cleanup } = tempDir('edgeway-prosody-')
  const [c2sPort, componentPort] = [await freePort(), await freePort()]
  const directTlsPort = opts.tls ? await freePort() : null
  const domain = 'localhost'
  const componentDomain = opts.componentDomain ?? 'devices.localhost'
  const secret = opts.secret ?? 'component-secret'
  const pubsubJid = opts.pubsub ? 'pubsub.localhost' : null
  mkdirSync(join(dir, 'data'), { recursive: true })
  const configFile = join(dir, 'prosody.cfg.lua')
  writeFileSync(configFile, [
    'run_as_root = true',
    'daemonize = false',
    `pidfile = "${dir}/prosody.pid"`,
    `data_path = "${dir}/data"`,
    'interfaces = { "127.0.0.1" }',
    'local_interfaces = { "127.0.0.1" }',
    `c2s_ports = { ${c2sPort} }`,
    `component_ports = { ${componentPort} }`,
    'component_interface = "127.0.0.1"',
    `modules_enabled = { "roster", "saslauth", "disco", "blocklist", "ping", "presence", "message", "iq"${opts.streamManagement === false ? '' : ', "smacks"'}${opts.tls ? ', "tls"' : ''} }`,
    ...(opts.tls ? [
      'modules_disabled = { "s2s", "offline" }',
      `ssl = { certificate = "${opts.tls.cert}"; key = "${opts.tls.key}"; }`,
      'c2s_require_encryption = true',
      `c2s_direct_tls_ports = { ${directTlsPort} }`,
    ] : [
      'modules_disabled = { "s2s", "tls", "offline" }',
      'c2s_require_encryption = false',
    ]),
    'allow_unencrypted_plain_auth = true',
    'authentication = "internal_plain"',
    'storage = "internal"',
    'log = { { levels = { min = "info" }, to = "console" } }',
    '',
    `VirtualHost "${domain}"`,
    '',
    `Component "${componentDomain}"`,
    `  component_secret = "${secret}"`,
    ...(pubsubJid ? [
      '',
      `Component "${pubsubJid}" "pubsub"`,
      // The gateway's component publishes and creates nodes: admins of the pubsub service may.
      `  admins = { "${componentDomain}" }`,
      '  pubsub_max_items = 100000',
      ...(opts.pubsubStorage === 'memory' ? ['  storage = "memory"'] : []),
      ...(opts.pubsubStorage === 'sql' ? ['  storage = "sql"', `  sql = { driver = "SQLite3", database = "${dir}/pubsub.sqlite" }`] : []),
    ] : []),
  ].join('\n') + '\n')
  let out = ''
  const p: Prosody = {
    domain, c2sPort, directTlsPort, componentPort, componentDomain, secret, pubsubJid, dir,
    proc: undefined as unknown as ChildProcess,
    output: () => out,
    async start() {
      out = ''
      const proc = spawn(PROSODY, ['--config', configFile, '-F'], { stdio: ['ignore', 'pipe', 'pipe'] })
      p.proc = proc
      proc.stdout!.on('data', (d: Buffer) => { out += d.toString() })
      proc.stderr!.on('data', (d: Buffer) => { out += d.toString() })
      const exited = new Promise<never>((_r, reject) => proc.once('exit', (c) => reject(new Error(`prosody exited with ${c}: ${out}`))))
      await Promise.race([Promise.all([waitForPort(c2sPort), waitForPort(componentPort), ...(directTlsPort ? [waitForPort(directTlsPort)] : [])]), exited])
      exited.catch(() => undefined)
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const proc = p.proc
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
      const done = new Promise((r) => proc.once('exit', r))
      proc.kill(signal)
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
      await done
      clearTimeout(t)
    },
    register(user, password) {
      const r = spawnSync(PROSODYCTL, ['--config', configFile, 'register', user, domain, password], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`prosodyctl register ${user} failed (${r.status}): ${r.stderr}${r.stdout}`)
    },
    async cleanup() {
      await p.stop('SIGKILL')
      cleanup()
    },
  }
  await p.start()
  process.once('exit', () => { try { p.proc.kill('SIGKILL') } catch { /* gone */ } })
  return p
}
