// `edgeway doctor`: checks for what commonly goes wrong on an edge box (old Node, bad config, data dir not
// writable or full, ports taken, serial ports missing or not permitted, clock), each with a fix. Every check returns a result and
// never throws, so one broken thing cannot hide the others.
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { spawnSync } from 'node:child_process'
import { dirname, join, resolve } from 'node:path'
import { loadConfig, ConfigError } from './config/load.ts'
import type { Config } from './config/schema.ts'
import { openDatabase } from '../gateway/store/sqlite.ts'
import { checkCamera } from '../gateway/camera/doctor.ts'

export type CheckLevel = 'ok' | 'warn' | 'fail'

export interface CheckResult {
  name: string
  /** false only for 'fail': warnings do not fail the doctor. */
  ok: boolean
  level: CheckLevel
  detail: string
  /** What to do about it (absent when there is nothing to do). */
  fix?: string
}

export interface DoctorOptions {
  /** Resolved config file (as `run` would use it), or undefined for built-in defaults. */
  configFile: string | undefined
  env?: NodeJS.ProcessEnv
  nodeVersion?: string
  now?: Date
  /** Where serial devices live (tests point it elsewhere). */
  devDir?: string
  /** Below this much free space in the data dir's file system: a warning. */
  minFreeBytes?: number
  /** `timedatectl show -p NTPSynchronized --value`: 'yes' / 'no', null when timedatectl is absent, 'unknown' when it fails. */
  ntpSynchronized?: () => string | null
}

const MB = 1024 * 1024

function result(name: string, level: CheckLevel, detail: string, fix?: string): CheckResult {
  return { name, ok: level !== 'fail', level, detail, ...(fix !== undefined ? { fix } : {}) }
}

export function checkNodeVersion(version: string): CheckResult {
  const major = Number(version.split('.')[0])
  if (major >= 20) return result('node', 'ok', `Node.js ${version}`)
  return result('node', 'fail', `Node.js ${version} is too old: edgeway needs >= 20`,
    'install Node.js 20 or newer: Raspberry Pi OS / Debian 13 `sudo apt-get install nodejs`; Debian 12 via NodeSource (https://github.com/nodesource/distributions)')
}

export function checkConfig(file: string | undefined, env: NodeJS.ProcessEnv): { result: CheckResult; config?: Config } {
  try {
    const config = loadConfig(file, env)
    return { result: result('config', 'ok', file ? `${file} is valid` : 'no config file: built-in defaults'), config }
  } catch (err) {
    if (!(err instanceof ConfigError)) return { result: result('config', 'fail', `cannot load configuration: ${(err as Error).message}`) }
    // The installed config is root:edgeway 0640 (it may hold upstream passwords): unreadable for other users.
    const unreadable = err.problems.some((p) => p.startsWith('cannot read file'))
    const fix = unreadable ? `check that ${file ?? 'the file'} exists; the installed /etc/edgeway/edgeway.yaml is readable by root and the edgeway group only: run \`sudo edgeway doctor\``
      : file ? `correct the keys named above in ${file}, then \`edgeway config check ${file}\`` : 'correct the EDGEWAY_* variables named above'
    return { result: result('config', 'fail', `${err.source}:\n${err.problems.map((p) => `  - ${p}`).join('\n')}`, fix) }
  }
}

/** better-sqlite3 is a native module: after a Node.js upgrade it must be rebuilt for the new ABI. */
export function checkSqlite(): CheckResult {
  try {
    openDatabase(':memory:').close()
    return result('sqlite', 'ok', 'better-sqlite3 loads')
  } catch (err) {
    return result('sqlite', 'fail', `better-sqlite3 does not load: ${(err as Error).message.split('\n')[0]}`,
      'rebuild it for this Node.js: `sudo scripts/install.sh --upgrade` from the checkout, or `npm rebuild better-sqlite3` in the app directory (needs python3 make g++)')
  }
}

function nearestExisting(dir: string): string {
  let d = dir
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d)
  return d
}

export function checkDataDir(dataDir: string, minFreeBytes = 100 * MB): CheckResult[] {
  const dir = resolve(dataDir)
  const out: CheckResult[] = []
  const fixOwner = `make it writable for the user that runs edgeway: \`sudo mkdir -p ${dir} && sudo chown edgeway:edgeway ${dir}\` (or set gateway.dataDir)`
  if (existsSync(dir)) {
    try {
      if (!statSync(dir).isDirectory()) throw new Error('not a directory')
      // A real write, not access(2): it also catches read-only mounts and a full disk.
      const probe = mkdtempSync(join(dir, '.doctor-'))
      writeFileSync(join(probe, 'probe'), 'x')
      rmSync(probe, { recursive: true })
      out.push(result('data dir', 'ok', `${dir} is writable`))
    } catch (err) {
      out.push(result('data dir', 'fail', `${dir} is not writable: ${(err as Error).message}`, fixOwner))
    }
  } else {
    const parent = nearestExisting(dir)
    let ok = false
    try { ok = statSync(parent).isDirectory(); accessSync(parent, constants.W_OK) } catch { ok = false }
    out.push(ok
      ? result('data dir', 'ok', `${dir} does not exist yet; it is created at start (in ${parent}, writable)`)
      : result('data dir', 'fail', `${dir} does not exist and cannot be created (${parent} is not a writable directory)`, fixOwner))
  }
  try {
    const s = statfsSync(nearestExisting(dir))
    const free = s.bavail * s.bsize
    const text = `${Math.round(free / MB)} MB free in ${nearestExisting(dir)}`
    out.push(free < minFreeBytes
      ? result('disk space', 'warn', `${text} (below ${Math.round(minFreeBytes / MB)} MB): the outbox stops accepting readings when the disk is full`,
        'free space (`sudo journalctl --vacuum-size=50M`, remove old files) or lower outbox.maxBytes')
      : result('disk space', 'ok', text))
  } catch (err) {
    out.push(result('disk space', 'warn', `cannot read free space: ${(err as Error).message}`))
  }
  return out
}

/** pid and command line of the process listening on a TCP port, from /proc (Linux; only processes we may inspect). */
export function portOwner(port: number): { pid: number; cmdline: string[] } | null {
  const inodes = new Set<string>()
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string
    try { text = readFileSync(f, 'utf8') } catch { continue }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      const local = cols[1]
      if (!local || cols[3] !== '0A') continue // 0A: LISTEN
      if (parseInt(local.split(':')[1] ?? '', 16) === port && cols[9]) inodes.add(cols[9])
    }
  }
  if (inodes.size === 0) return null
  let pids: string[]
  try { pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p)) } catch { return null }
  for (const pid of pids) {
    let fds: string[]
    try { fds = readdirSync(`/proc/${pid}/fd`) } catch { continue }
    for (const fd of fds) {
      let link: string
      try { link = readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { continue }
      const m = /^socket:\[(\d+)\]$/.exec(link)
      if (m && inodes.has(m[1]!)) {
        let cmdline: string[] = []
        try { cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean) } catch { /* gone meanwhile */ }
        return { pid: Number(pid), cmdline }
      }
    }
  }
  return null
}

function isEdgeway(cmdline: string[]): boolean {
  return cmdline.some((a) => /(^|\/)edgeway(\.js)?$/.test(a)) && cmdline.includes('run')
}

function tryBind(host: string, port: number): Promise<NodeJS.ErrnoException | null> {
  return new Promise((done) => {
    const srv = createServer()
    srv.once('error', (err: NodeJS.ErrnoException) => done(err))
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => done(null)))
  })
}

export async function checkPorts(config: Config, configFile: string | undefined): Promise<CheckResult[]> {
  const where = configFile ?? 'the config file'
  const listeners = [
    { key: 'mqtt.tcp', l: config.mqtt.tcp },
    { key: 'mqtt.tls', l: config.mqtt.tls },
    { key: 'mqtt.ws', l: config.mqtt.ws },
    { key: 'http', l: config.http },
  ].filter((x) => x.l.enabled && x.l.port !== 0)
  const out: CheckResult[] = []
  const seen = new Map<number, string>()
  for (const { key, l } of listeners) {
    const name = `port ${key}`
    const other = seen.get(l.port)
    if (other) {
      out.push(result(name, 'fail', `${key} and ${other} both use port ${l.port}`, `give ${key}.port in ${where} a port of its own`))
      continue
    }
    seen.set(l.port, key)
    const err = await tryBind(l.host, l.port)
    if (!err) { out.push(result(name, 'ok', `${l.host}:${l.port} is free`)); continue }
    if (err.code === 'EADDRINUSE') {
      const owner = portOwner(l.port)
      if (owner && isEdgeway(owner.cmdline)) {
        out.push(result(name, 'ok', `${l.host}:${l.port} is in use by edgeway itself (pid ${owner.pid}): the gateway is running`))
        continue
      }
      const who = owner ? `pid ${owner.pid} (${owner.cmdline.join(' ').slice(0, 120)})` : 'another process (run as root to see which)'
      out.push(result(name, 'fail', `${l.host}:${l.port} is in use by ${who}`,
        `stop that program (find it with \`sudo ss -ltnp 'sport = :${l.port}'\`) or set ${key}.port in ${where} to a free port`))
    } else if (err.code === 'EACCES' && l.port < 1024) {
      out.push(result(name, 'fail', `port ${l.port} is below 1024 and this user may not bind it`,
        'the installed service gets CAP_NET_BIND_SERVICE when the config asks for such a port: re-run `sudo scripts/install.sh --upgrade`; or use a port >= 1024'))
    } else if (err.code === 'EADDRNOTAVAIL') {
      out.push(result(name, 'fail', `${l.host} is not an address of this machine`, `set ${key}.host in ${where} to 0.0.0.0 or one of this machine's addresses`))
    } else {
      out.push(result(name, 'fail', `cannot listen on ${l.host}:${l.port}: ${err.message}`, `check ${key} in ${where}`))
    }
  }
  return out
}

function groupName(gid: number): string {
  try {
    const line = readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.split(':')[2] === String(gid))
    if (line) return line.split(':')[0]!
  } catch { /* no /etc/group */ }
  return String(gid)
}

/** USB serial adapters present in devDir plus the ports the config names (serial.ports[].path). */
export function checkSerial(devDir = '/dev', configured: string[] = []): CheckResult {
  let present: string[]
  try { present = readdirSync(devDir).filter((n) => /^tty(USB|ACM)\d+$/.test(n)).sort().map((n) => join(devDir, n)) } catch { present = [] }
  const missing = configured.map((p, i) => ({ p, i })).filter(({ p }) => !existsSync(p))
  const paths = [...new Set([...configured.filter((p) => existsSync(p)), ...present])]
  if (missing.length) {
    return result('serial', 'fail', `configured serial port${missing.length > 1 ? 's' : ''} not present: ${missing.map(({ p, i }) => `${p} (serial.ports.${i}.path)`).join(', ')}`,
      'plug the board in and check the path (`ls -l /dev/serial/by-id/`; by-id names survive replugging, ttyUSB numbers do not)')
  }
  if (paths.length === 0) return result('serial', 'ok', `no serial ports configured and no USB serial adapters (${devDir}/ttyUSB*, ttyACM*) present`)
  const denied: string[] = []
  for (const p of paths) {
    try { accessSync(p, constants.R_OK | constants.W_OK) } catch {
      let group = '?'
      try { group = groupName(statSync(p).gid) } catch { /* unplugged meanwhile */ }
      denied.push(`${p} (group ${group})`)
    }
  }
  if (denied.length === 0) return result('serial', 'ok', `${paths.join(', ')} readable and writable`)
  return result('serial', 'fail', `this user cannot open ${denied.join(', ')}`,
    'the installed service is in the dialout group already (run `sudo edgeway doctor` to check as it); for your own user: `sudo usermod -aG dialout $USER`, then log in again')
}

export function defaultNtpSynchronized(): string | null {
  const r = spawnSync('timedatectl', ['show', '-p', 'NTPSynchronized', '--value'], { encoding: 'utf8', timeout: 3000 })
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return null
  if (r.status !== 0) return 'unknown'
  return r.stdout.trim() || 'unknown'
}

export function checkClock(now: Date, ntp: string | null): CheckResult {
  // Boards without a real-time clock (a Raspberry Pi) start in the past until NTP answers; timestamps and TLS break.
  if (now.getUTCFullYear() < 2024) {
    return result('clock', 'fail', `system time is ${now.toISOString()}, before 2024: readings get wrong timestamps and TLS certificates look invalid`,
      'enable time synchronization (`sudo timedatectl set-ntp true`) and check network access to an NTP server; a Pi has no battery-backed clock')
  }
  const at = `system time ${now.toISOString()}`
  if (ntp === 'yes') return result('clock', 'ok', `${at}, NTP synchronized`)
  if (ntp === 'no') return result('clock', 'warn', `${at}, but NTP is not synchronized`, '`sudo timedatectl set-ntp true`; check that an NTP server is reachable (`timedatectl timesync-status`)')
  if (ntp === null) return result('clock', 'ok', `${at} (timedatectl not available: NTP state unknown)`)
  return result('clock', 'ok', `${at} (timedatectl did not answer: NTP state unknown)`)
}

/** Without a password the dashboard answers loopback only: say so when the HTTP port listens beyond loopback. */
export function checkDashboard(config: Config): CheckResult {
  const name = 'dashboard login'
  if (!config.http.enabled || !config.dashboard.enabled) return result(name, 'ok', 'dashboard disabled')
  if (config.dashboard.passwordHash) return result(name, 'ok', 'an admin password is set')
  const loopback = /^(127\.|::1$|localhost$)/.test(config.http.host)
  return loopback
    ? result(name, 'ok', `no password: reachable from this machine only (http ${config.http.host})`)
    : result(name, 'warn', `no admin password: the dashboard on ${config.http.host}:${config.http.port} refuses every client but this machine`,
      'run `edgeway dashboard set-password` to log in from the LAN')
}

export async function runDoctor(opts: DoctorOptions): Promise<CheckResult[]> {
  const env = opts.env ?? process.env
  const results: CheckResult[] = [checkNodeVersion(opts.nodeVersion ?? process.versions.node)]
  const { result: configResult, config } = checkConfig(opts.configFile, env)
  results.push(configResult, checkSqlite())
  if (config) {
    results.push(...checkDataDir(config.gateway.dataDir, opts.minFreeBytes), ...await checkPorts(config, opts.configFile), checkDashboard(config), checkCamera(config.camera, env.PATH))
    // amqp upstreams: publish permissions and the quorum queue (bridges/amqp/doctor.ts; rhea loads only if configured)
    results.push(...await (await import('../bridges/amqp/doctor.ts')).checkAmqp(config))
  } else {
    results.push(result('data dir, ports', 'warn', 'not checked: the configuration is invalid', 'fix the configuration first'))
  }
  results.push(checkSerial(opts.devDir, config?.serial.ports.filter((p) => !p.usb).map((p) => p.path)), checkClock(opts.now ?? new Date(), (opts.ntpSynchronized ?? defaultNtpSynchronized)()))
  return results
}

export function formatResults(results: CheckResult[]): string {
  const tag = { ok: ' ok ', warn: 'WARN', fail: 'FAIL' } as const
  const lines: string[] = []
  for (const r of results) {
    const [first, ...rest] = r.detail.split('\n')
    lines.push(`[${tag[r.level]}] ${r.name}: ${first}`, ...rest.map((l) => `       ${l}`))
    if (r.fix && r.level !== 'ok') lines.push(`       fix: ${r.fix}`)
  }
  const fails = results.filter((r) => r.level === 'fail').length
  const warns = results.filter((r) => r.level === 'warn').length
  lines.push('', fails ? `${fails} problem${fails === 1 ? '' : 's'}${warns ? `, ${warns} warning${warns === 1 ? '' : 's'}` : ''}` : warns ? `no problems, ${warns} warning${warns === 1 ? '' : 's'}` : 'no problems found')
  return lines.join('\n') + '\n'
}
