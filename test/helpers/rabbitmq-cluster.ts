// A private 3-node RabbitMQ cluster (AMQP 1.0 plugin) on this machine: distinct node names and ports, one Erlang
// cookie (a shared HOME), one epmd on a free port, joined with `rabbitmqctl stop_app; join_cluster; start_app`.
// Nodes are stopped by pid and started again on the same ports and data dirs (they rejoin on boot); cleanup stops
// them all and kills the epmd. Heavy (three Erlang VMs on two cores): start it once per test file.
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { freePort, tempDir, scaled } from './net.ts'
import { requireBinary } from './mosquitto.ts'
import { RABBITMQ_SERVER, killEpmd } from './rabbitmq.ts'

const RABBITMQCTL = '/usr/lib/rabbitmq/bin/rabbitmqctl'

export interface ClusterNode {
  /** 1-based, as in the node name. */
  index: number
  nodeName: string
  /** AMQP port (0-9-1 and 1.0 on one listener). */
  port: number
  running(): boolean
  start(): Promise<void>
  /** SIGTERM by pid (a clean node shutdown), waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>
  ctl(args: string[]): Promise<{ code: number | null; out: string }>
  output(): string
}

export interface RabbitCluster {
  nodes: ClusterNode[]
  node(port: number): ClusterNode | undefined
  /** rabbitmqctl against a running node. */
  ctl(args: string[]): Promise<{ code: number | null; out: string }>
  cleanup(): Promise<void>
}

export async function startRabbitCluster(size = 3): Promise<RabbitCluster> {
  requireBinary(RABBITMQ_SERVER, 'rabbitmq-server')
  const { dir, cleanup } = tempDir('edgeway-rmqc-')
  const home = join(dir, 'home')
  mkdirSync(home)
  // One cookie for every node and for rabbitmqctl: the file in the shared HOME, owner-only as Erlang demands.
  writeFileSync(join(home, '.erlang.cookie'), randomBytes(20).toString('hex').toUpperCase())
  chmodSync(join(home, '.erlang.cookie'), 0o400)
  const epmdPort = await freePort()
  const base = await freePort()
  const nodes: ClusterNode[] = []
  const procs: (ChildProcess | null)[] = []
  for (let i = 1; i <= size; i++) {
    const [port, distPort] = [await freePort(), await freePort()]
    const nodeDir = join(dir, `n${i}`)
    mkdirSync(nodeDir)
    const nodeName = `edgeway${base}n${i}@localhost`
    writeFileSync(join(nodeDir, 'enabled_plugins'), '[rabbitmq_amqp1_0].\n')
    writeFileSync(join(nodeDir, 'rabbitmq.conf'), ['loopback_users = none', 'disk_free_limit.absolute = 1MB'].join('\n') + '\n')
    writeFileSync(join(nodeDir, 'rabbitmq-env.conf'), '')
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: home,
      RABBITMQ_NODENAME: nodeName,
      RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
      RABBITMQ_NODE_PORT: String(port),
      RABBITMQ_DIST_PORT: String(distPort),
      RABBITMQ_MNESIA_BASE: join(nodeDir, 'mnesia'),
      RABBITMQ_LOG_BASE: join(nodeDir, 'log'),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(nodeDir, 'enabled_plugins'),
      RABBITMQ_CONFIG_FILE: join(nodeDir, 'rabbitmq.conf'),
      RABBITMQ_CONF_ENV_FILE: join(nodeDir, 'rabbitmq-env.conf'),
      RABBITMQ_PID_FILE: join(nodeDir, 'rabbitmq.pid'),
      RABBITMQ_LOGS: '-',
      // One epmd for the cluster: the nodes find each other's distribution ports through it.
      ERL_EPMD_ADDRESS: '127.0.0.1',
      ERL_EPMD_PORT: String(epmdPort),
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    }
    let out = ''
    const n: ClusterNode = {
      index: i, nodeName, port,
      running: () => { const p = procs[i - 1]; return !!p && p.exitCode === null && p.signalCode === null },
      output: () => out,
      async start() {
        out = ''
        const p = spawn(RABBITMQ_SERVER, [], { env, cwd: nodeDir, stdio: ['ignore', 'pipe', 'pipe'] })
        procs[i - 1] = p
        await new Promise<void>((resolve, reject) => {
          const ms = scaled(90000)
          const timer = setTimeout(() => reject(new Error(`${nodeName} did not start within ${ms} ms:\n${out.slice(-3000)}`)), ms)
          const onData = (d: Buffer): void => {
            out += d.toString()
            if (out.includes('Server startup complete')) { clearTimeout(timer); resolve() }
          }
          p.stdout!.on('data', onData)
          p.stderr!.on('data', onData)
          p.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${nodeName} exited with ${code} during startup:\n${out.slice(-3000)}`)) })
        })
        p.removeAllListeners('exit')
      },
      async stop(signal: NodeJS.Signals = 'SIGTERM') {
        const p = procs[i - 1]
        if (!p || p.exitCode !== null || p.signalCode !== null) return
        const done = new Promise((res) => p.once('exit', res))
        p.kill(signal)
        await done
      },
      async ctl(args) {
        const p = spawn(RABBITMQCTL, ['-n', nodeName, ...args], { env, cwd: nodeDir, stdio: ['ignore', 'pipe', 'pipe'] })
        let o = ''
        p.stdout!.on('data', (d: Buffer) => { o += d.toString() })
        p.stderr!.on('data', (d: Buffer) => { o += d.toString() })
        const code = await new Promise<number | null>((res) => p.on('exit', res))
        return { code, out: o }
      },
    }
    nodes.push(n)
    procs.push(null)
  }
  const c: RabbitCluster = {
    nodes,
    node: (port) => nodes.find((n) => n.port === port),
    async ctl(args) {
      const n = nodes.find((x) => x.running())
      if (!n) throw new Error('no cluster node is running')
      return n.ctl(args)
    },
    async cleanup() {
      await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)))
      killEpmd(epmdPort)
      cleanup()
    },
  }
  process.once('exit', () => { for (const p of procs) { try { p?.kill('SIGKILL') } catch { /* gone */ } } killEpmd(epmdPort) })
  try {
    // Booting three VMs at once on two cores is slower than one after another plus the joins.
    await nodes[0]!.start()
    for (const n of nodes.slice(1)) {
      await n.start()
      for (const args of [['stop_app'], ['join_cluster', nodes[0]!.nodeName], ['start_app']]) {
        const r = await n.ctl(args)
        if (r.code !== 0) throw new Error(`rabbitmqctl ${args.join(' ')} on ${n.nodeName} failed (${r.code}): ${r.out}`)
      }
    }
    const status = await nodes[0]!.ctl(['cluster_status', '--formatter', 'json'])
    const running = (JSON.parse(status.out.slice(status.out.indexOf('{'))) as { running_nodes: string[] }).running_nodes
    if (running.length !== size) throw new Error(`cluster has ${running.length} running nodes, not ${size}: ${status.out}`)
  } catch (err) {
    await c.cleanup()
    throw err
  }
  return c
}
