// A private RabbitMQ node (AMQP 1.0 plugin) on free loopback ports in a temp dir, stopped by its pid (and its epmd).
// Recipe from ../shared/peers.md: startup takes ~6 s, so each test file shares one node and restarts it for outages.
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync, readFileSync, existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, tempDir } from './net.ts'
import { requireBinary } from './mosquitto.ts'

export const RABBITMQ_SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server'
const RABBITMQCTL = '/usr/lib/rabbitmq/bin/rabbitmqctl'

export interface RabbitMq {
  port: number
  nodeName: string
  proc: ChildProcess
  /** Output of the current run (for failure messages). */
  output(): string
  /** Starts (again) on the same ports and data dir; resolves on "Server startup complete". */
  start(): Promise<void>
  /** SIGTERM by pid (or SIGKILL) and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>
  /** rabbitmqctl against this node. */
  ctl(args: string[]): Promise<{ code: number | null; out: string }>
  /** Stops the node and its epmd, removes the temp dir. */
  cleanup(): Promise<void>
}

export interface RabbitOptions {
  /** Extra lines for rabbitmq.conf (new-style sysctl format). */
  conf?: string[]
  /** Plugins to enable besides rabbitmq_amqp1_0 (those shipped with the Debian package). */
  plugins?: string[]
}

export async function startRabbitMq(opts: RabbitOptions = {}): Promise<RabbitMq> {
  requireBinary(RABBITMQ_SERVER, 'rabbitmq-server')
  const { dir, cleanup } = tempDir('edgeway-rmq-')
  const [port, distPort, epmdPort] = [await freePort(), await freePort(), await freePort()]
  const nodeName = `edgeway${port}@localhost`
  writeFileSync(join(dir, 'enabled_plugins'), `[${['rabbitmq_amqp1_0', ...(opts.plugins ?? [])].join(',')}].\n`)
  writeFileSync(join(dir, 'rabbitmq.conf'), [
    'loopback_users = none',
    // Tests fill disks and memory on purpose elsewhere; do not let a busy CI box block publishers here.
    'disk_free_limit.absolute = 1MB',
    ...(opts.conf ?? []),
  ].join('\n') + '\n')
  writeFileSync(join(dir, 'rabbitmq-env.conf'), '')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    RABBITMQ_NODENAME: nodeName,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_PID_FILE: join(dir, 'rabbitmq.pid'),
    RABBITMQ_LOGS: '-',
    ERL_EPMD_ADDRESS: '127.0.0.1',
    ERL_EPMD_PORT: String(epmdPort),
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
  }
  let out = ''
  const r: RabbitMq = {
    port, nodeName,
    proc: undefined as unknown as ChildProcess,
    output: () => out,
    async start() {
      out = ''
      const p = spawn(RABBITMQ_SERVER, [], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
      r.proc = p
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`RabbitMQ did not start within 60 s:\n${out.slice(-3000)}`)), 60000)
        const onData = (d: Buffer): void => {
          out += d.toString()
          // The port opens before the AMQP 1.0 plugin is up: only this line means ready.
          if (out.includes('Server startup complete')) { clearTimeout(timer); resolve() }
        }
        p.stdout!.on('data', onData)
        p.stderr!.on('data', onData)
        p.once('exit', (code) => { clearTimeout(timer); reject(new Error(`RabbitMQ exited with ${code} during startup:\n${out.slice(-3000)}`)) })
      })
      p.removeAllListeners('exit')
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const p = r.proc
      if (!p || p.exitCode !== null || p.signalCode !== null) return
      const done = new Promise((res) => p.once('exit', res))
      p.kill(signal)
      await done
    },
    async ctl(args) {
      const p = spawn(RABBITMQCTL, ['-n', nodeName, ...args], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
      let o = ''
      p.stdout!.on('data', (d: Buffer) => { o += d.toString() })
      p.stderr!.on('data', (d: Buffer) => { o += d.toString() })
      const code = await new Promise<number | null>((res) => p.on('exit', res))
      return { code, out: o }
    },
    async cleanup() {
      await r.stop()
      killEpmd(epmdPort)
      cleanup()
    },
  }
  process.once('exit', () => { try { r.proc?.kill('SIGKILL') } catch { /* gone */ } killEpmd(epmdPort) })
  await r.start()
  return r
}

/** epmd daemonises on its own port: find it by its command line in /proc and stop it by pid. */
export function killEpmd(epmdPort: number): void {
  for (const pid of pidsOf('epmd')) {
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8')
      if (env.split('\0').includes(`ERL_EPMD_PORT=${epmdPort}`)) process.kill(pid, 'SIGTERM')
    } catch { /* gone or not ours */ }
  }
}

function pidsOf(comm: string): number[] {
  const pids: number[] = []
  if (!existsSync('/proc')) return pids
  for (const name of readdirSafe('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try { if (readFileSync(`/proc/${name}/comm`, 'utf8').trim() === comm) pids.push(Number(name)) } catch { /* gone */ }
  }
  return pids
}

function readdirSafe(p: string): string[] {
  try { return readdirSync(p) } catch { return [] }
}
