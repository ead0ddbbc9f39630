// A private Mosquitto broker on a free loopback port, stopped by its pid.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, tempDir, waitForPort } from './net.ts'

export const MOSQUITTO = '/usr/sbin/mosquitto'

export function requireBinary(path: string, pkg: string): void {
  if (!existsSync(path)) {
    throw new Error(`${path} not found: install it with 'apt-get install -y ${pkg}' (or run 'bash scripts/setup.sh')`)
  }
}

export interface Mosquitto { port: number; proc: ChildProcess; stop(signal?: NodeJS.Signals): Promise<void>; start(): Promise<void> }

/** Starts mosquitto; `start()` after `stop()` brings it back on the same port (for outage tests). */
export async function startMosquitto(port?: number, opts: { persistence?: boolean } = {}): Promise<Mosquitto> {
  requireBinary(MOSQUITTO, 'mosquitto')
  const p = port ?? await freePort()
  const { dir, cleanup } = tempDir('edgeway-mosq-')
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(conf, [
    `listener ${p} 127.0.0.1`,
    'allow_anonymous true',
    ...(opts.persistence ? ['persistence true', `persistence_location ${dir}/`, 'autosave_interval 1'] : ['persistence false']),
    'max_inflight_messages 0',
    'max_queued_messages 0',
    // As root, mosquitto drops to the "mosquitto" user, which cannot write its persistence file into our temp dir.
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    'log_dest stderr',
    'log_type error',
  ].join('\n') + '\n')
  const m: Mosquitto = {
    port: p,
    proc: undefined as unknown as ChildProcess,
    async start() {
      m.proc = spawn(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
      await waitForPort(p)
    },
    /** SIGTERM lets a persistent Mosquitto save its sessions; SIGKILL for a hard crash. */
    async stop(signal: NodeJS.Signals = 'SIGKILL') {
      const proc = m.proc
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const done = new Promise((r) => proc.once('exit', r))
      proc.kill(signal)
      await done
    },
  }
  await m.start()
  process.once('exit', () => { try { m.proc.kill('SIGKILL') } catch { /* already gone */ } cleanup() })
  return m
}

export function mosquittoClientsAvailable(): void {
  requireBinary('/usr/bin/mosquitto_pub', 'mosquitto-clients')
  const r = spawnSync('/usr/bin/mosquitto_pub', ['--help'])
  if (r.error) throw r.error
}
