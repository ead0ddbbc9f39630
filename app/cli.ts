// `edgeway` command line: run the gateway, check config, manage devices, inspect the outbox.
import { Command, Option } from 'commander'
import { existsSync } from 'node:fs'
import { hostname } from 'node:os'
import { loadConfig, ConfigError } from './config/load.ts'
import { jsonSchema, type Config } from './config/schema.ts'
import { stringify as toYaml } from 'yaml'
import { createLogger, formatTable, localTime, LOG_FORMATS, type LogFormat } from '../gateway/log.ts'
import { startGateway, dataFiles } from './main.ts'
import { VERSION } from './version.ts'
import { Registry, RegistryError } from '../gateway/registry/registry.ts'
import { readDeadLetters, requestDeadRetry } from '../gateway/outbox/store.ts'
import { runDoctor, formatResults } from './doctor.ts'
import { runFlash } from '../devices/flash/command.ts'
import { BOARDS } from '../devices/flash/boards.ts'
import { registerXmppCli } from '../bridges/xmpp/cli.ts'
import { readPassword, passwordProblem, hashPassword, writePasswordHash, hashSnippet } from '../gateway/dashboard/password.ts'
import { controlCall, GatewayNotRunning } from '../gateway/control/client.ts'
import { registerOtaCommands } from '../gateway/ota/cli.ts'
import { resolveRoles, maySubscribeAs, type Role } from '../gateway/broker/roles.ts'


/** --config, else $EDGEWAY_CONFIG, else ./edgeway.yaml when present, else built-in defaults. */
function configPath(opt: string | undefined): string | undefined {
  if (opt) return opt
  if (process.env.EDGEWAY_CONFIG) return process.env.EDGEWAY_CONFIG
  return existsSync('edgeway.yaml') ? 'edgeway.yaml' : undefined
}

function load(opt: string | undefined): Config {
  try {
    return loadConfig(configPath(opt))
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`edgeway: ${err.message}\n`)
      process.exit(2)
    }
    throw err
  }
}

function withRegistry<T>(opts: { config?: string }, fn: (r: Registry, c: Config) => Promise<T> | T): Promise<void> {
  const config = load(opts.config)
  const registry = new Registry(dataFiles(config).registry)
  return (async () => {
    registry.open()
    try { await fn(registry, config) } catch (err) {
      if (err instanceof RegistryError) { process.stderr.write(`edgeway: ${err.message}\n`); process.exitCode = 1; return }
      throw err
    } finally { registry.close() }
  })()
}

/**
 * The host to put in a connection example for a listener bound to `bind`: the bind address itself (127.0.0.1 when
 * bound to it: nothing else reaches it), the machine's hostname for a wildcard bind, which is not something to
 * connect to.
 */
function connectHost(bind: string): string {
  return bind === '0.0.0.0' || bind === '::' || bind === '' ? hostname() : bind
}

const SECRET_WORDS = new Set(['password', 'passwords', 'secret', 'secrets', 'key', 'keys', 'token', 'tokens', 'credential', 'credentials'])
const REDACTED = '<redacted>'

/** True for a config key that names a secret: password, passwordHash, secret, key, apiKey, token, credential, ... */
function isSecretKey(k: string): boolean {
  return k.split(/[_\-.]|(?<=[a-z0-9])(?=[A-Z])/).some((w) => SECRET_WORDS.has(w.toLowerCase()))
}

/** A copy of the config for display: every secret (at any depth, and a password inside a URL) is `<redacted>`. */
function redactConfig(v: unknown, key = ''): unknown {
  if (key && isSecretKey(key) && v !== undefined && v !== null) return REDACTED
  if (Array.isArray(v)) return v.map((x) => redactConfig(x))
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactConfig(x, k)]))
  if (typeof v === 'string') return v.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*:)[^/@]*@/i, `$1${REDACTED}@`)
  return v
}

function printCredentials(id: string, secret: string, config: Config): void {
  const port = config.mqtt.tcp.port
  process.stdout.write([
    `device: ${id}`,
    `secret: ${secret}`,
    '(the secret is shown only now; `edgeway device rotate-secret` makes a new one)',
    '',
    'try it:',
    `  mosquitto_pub -h ${connectHost(config.mqtt.tcp.host)} -p ${port} -u ${id} -P '${secret}' -q 1 -t devices/${id}/telemetry -m '{"temperature":21.5}'`,
    '',
  ].join('\n'))
}

/** A subscription the client's role allows, for the example: telemetry when it may, else its first allowed filter. */
function exampleFilter(role: Role, name: string): string | null {
  if (maySubscribeAs(role, name, 'devices/+/telemetry').ok) return 'devices/+/telemetry'
  const r = role.rules.find((x) => x.effect === 'allow' && x.action !== 'publish' && maySubscribeAs(role, name, x.topic.replaceAll('%u', name)).ok)
  return r ? r.topic.replaceAll('%u', name) : null
}

function printClientCredentials(name: string, role: Role, secret: string, config: Config): void {
  const host = connectHost(config.mqtt.tcp.host)
  const filter = exampleFilter(role, name)
  process.stdout.write([
    `client: ${name}`,
    `role: ${role.name}`,
    `secret: ${secret}`,
    `(the secret is shown only now; \`edgeway client rotate-secret ${name}\` makes a new one)`,
    ...(filter ? ['', 'try it:', `  mosquitto_sub -h ${host} -p ${config.mqtt.tcp.port} -u ${name} -P '${secret}' -t '${filter}' -v`] : []),
    '',
  ].join('\n'))
}

const REVOKE_TIMEOUT_MS = 5000

/**
 * After a remove or rotate-secret in the registry: asks the running gateway to drop the live connections of that
 * identity at once. The registry change is already done, so nothing here changes the exit code: a gateway that is
 * not running has nothing to drop, any other failure is a warning.
 */
async function revokeLive(config: Config, kind: 'device' | 'client', id: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_r, reject) => {
    // controlCall itself has no deadline: a hung gateway must not hang the CLI
    timer = setTimeout(() => reject(new Error(`no answer within ${REVOKE_TIMEOUT_MS / 1000} s`)), REVOKE_TIMEOUT_MS)
  })
  try {
    const res = await Promise.race([controlCall(config.gateway.dataDir, 'access.revoke', { kind, id }), timeout])
    const n = res && typeof res === 'object' && 'disconnected' in res && typeof res.disconnected === 'number' ? res.disconnected : 0
    if (n > 0) process.stdout.write(`disconnected ${n} live connection${n === 1 ? '' : 's'}\n`)
  } catch (err) {
    if (err instanceof GatewayNotRunning) return
    process.stderr.write(`edgeway: warning: could not ask the running gateway to disconnect ${kind} "${id}" (${(err as Error).message}); its live connections stay up until they reconnect or the gateway restarts\n`)
  } finally {
    clearTimeout(timer)
  }
}

const program = new Command('edgeway').version(VERSION).description('IoT edge gateway: MQTT broker, durable outbox, upstream bridges')
// The program's own options (--version) only before a subcommand: `ota push --version X` is the image's version.
program.enablePositionalOptions()
const configOpt = (): Option => new Option('-c, --config <file>', 'config file (default: $EDGEWAY_CONFIG or ./edgeway.yaml)')

program.command('run').description('run the gateway').addOption(configOpt())
  .addOption(new Option('--log-format <format>', 'log lines: pretty for people, JSON lines for machines; auto: pretty on a terminal, else JSON').choices(LOG_FORMATS).default('auto'))
  .action(async (opts: { config?: string; logFormat: LogFormat }) => {
  const config = load(opts.config)
  const log = createLogger(config.log.level, { format: opts.logFormat })
  let gw
  try {
    gw = await startGateway(config, log)
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'edgeway failed to start')
    process.exit(1)
  }
  const l = gw.broker.listeners
  {
    process.stderr.write(`\nedgeway ${VERSION} (gateway "${config.gateway.id}") is running\n` +
      l.map((x) => `  mqtt ${x.kind.padEnd(3)} ${x.host}:${x.port}${x.path ?? ''}\n`).join('') +
      (gw.http ? `  http     ${config.http.host}:${gw.http.port}  /healthz /metrics${gw.dashboard ? ' / (dashboard)' : ''}\n` : '') +
      `  data     ${dataFiles(config).outbox.replace(/\/outbox\.db$/, '')}\n` +
      (config.mqtt.openBroker || gw.registry.list().length > 0 ? '' : '\nadd a first device:  npx edgeway device add sensor-1   (prints its secret)\n') + '\n')
  }
  let signals = 0
  const onSignal = (sig: NodeJS.Signals): void => {
    if (++signals > 1) { log.warn({ sig }, 'second signal: exiting now'); process.exit(1) }
    log.info({ sig }, 'signal received')
    const force = setTimeout(() => { log.error('shutdown took longer than 5 s: exiting'); process.exit(1) }, 5000)
    force.unref()
    gw.stop().then(() => process.exit(0), (err: Error) => { log.error({ err: err.message }, 'shutdown failed'); process.exit(1) })
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
})

const config = program.command('config').description('check or describe the configuration')
config.command('check').argument('<file>').description('validate a config file; exit 0 when valid').action((file: string) => {
  try {
    loadConfig(file)
    process.stdout.write(`${file}: ok\n`)
  } catch (err) {
    if (err instanceof ConfigError) { process.stderr.write(`edgeway: ${err.message}\n`); process.exit(2) }
    throw err
  }
})
config.command('schema').description('print the JSON schema of edgeway.yaml (for editor completion)').action(() => {
  process.stdout.write(JSON.stringify(jsonSchema(), null, 2) + '\n')
})
config.command('show').addOption(configOpt()).option('--json', 'JSON output')
  .description('print the effective configuration (defaults, file and EDGEWAY_* applied) as YAML, secrets <redacted>')
  .action((opts: { config?: string; json?: boolean }) => {
    const shown = redactConfig(load(opts.config))
    process.stdout.write(opts.json ? JSON.stringify(shown, null, 2) + '\n' : toYaml(shown))
  })

program.command('doctor').addOption(configOpt()).option('--json', 'JSON output')
  .description('check what commonly goes wrong (Node.js, config, data dir and disk, ports, serial permissions, clock) and print fixes; exit 1 on a problem')
  .action(async (opts: { config?: string; json?: boolean }) => {
    const results = await runDoctor({ configFile: configPath(opts.config) })
    process.stdout.write(opts.json ? JSON.stringify(results, null, 2) + '\n' : formatResults(results))
    process.exitCode = results.every((r) => r.ok) ? 0 : 1
  })

program.command('status').addOption(configOpt())
  .description("ask the running gateway for its health (the same JSON as /healthz), through its control socket")
  .action(async (opts: { config?: string }) => {
    const config = load(opts.config)
    try {
      const h = await controlCall(config.gateway.dataDir, 'status') as { status?: string }
      process.stdout.write(JSON.stringify(h, null, 2) + '\n')
      process.exitCode = h.status === 'ok' ? 0 : 1
    } catch (err) {
      process.stderr.write(`edgeway: ${(err as Error).message}\n`)
      process.exitCode = err instanceof GatewayNotRunning ? 3 : 1
    }
  })

program.command('flash').argument('<firmware.hex>').addOption(configOpt())
  .requiredOption('-p, --port <path>', 'serial port of the board (prefer /dev/serial/by-id/...)')
  .requiredOption('-b, --board <name>', `board type (${Object.keys(BOARDS).join(', ')})`)
  .option('--baud <n>', "bootloader baud rate (default: the board's)", (v) => Number(v))
  .description('flash firmware through the board\'s serial bootloader (STK500v1), verify by read-back; a running gateway pauses its link on that port meanwhile')
  .action(async (file: string, opts: { config?: string; port: string; board: string; baud?: number }) => {
    const config = load(opts.config)
    process.exitCode = await runFlash({ port: opts.port, board: opts.board, baud: opts.baud, file, dataDir: config.gateway.dataDir })
  })

const device = program.command('device').description('manage devices in the registry')
device.command('add').argument('<id>').addOption(configOpt())
  .option('-m, --meta <key=value...>', 'metadata (repeatable)')
  .description('register a device and print its secret (shown once)')
  .action((id: string, opts: { config?: string; meta?: string[] }) => withRegistry(opts, async (r, c) => {
    const metadata: Record<string, string> = {}
    for (const kv of opts.meta ?? []) {
      const i = kv.indexOf('=')
      if (i <= 0) throw new RegistryError(`--meta expects key=value, got "${kv}"`)
      metadata[kv.slice(0, i)] = kv.slice(i + 1)
    }
    printCredentials(id, await r.add(id, metadata), c)
  }))
device.command('list').addOption(configOpt()).option('--json', 'JSON output').description('list devices').action((opts: { config?: string; json?: boolean }) => withRegistry(opts, (r) => {
  const list = r.list()
  if (opts.json) { process.stdout.write(JSON.stringify(list, null, 2) + '\n'); return }
  if (list.length === 0) { process.stdout.write('no devices; add one with `edgeway device add <id>`\n'); return }
  process.stdout.write(formatTable(['ID', 'ONLINE', 'LINK', 'LAST SEEN', 'FIRMWARE'],
    list.map((d) => [d.id, d.online ? 'yes' : 'no', d.link ?? '-', localTime(d.lastSeen), d.firmwareVersion ?? '-'])))
}))
device.command('show').argument('<id>').addOption(configOpt()).description('show one device').action((id: string, opts: { config?: string }) => withRegistry(opts, (r) => {
  const d = r.get(id)
  if (!d) throw new RegistryError(`no device "${id}"`)
  process.stdout.write(JSON.stringify(d, null, 2) + '\n')
}))
device.command('remove').argument('<id>').addOption(configOpt()).description('remove a device (it can no longer connect; a running gateway drops its connections)').action((id: string, opts: { config?: string }) => withRegistry(opts, async (r, c) => {
  if (!r.remove(id)) throw new RegistryError(`no device "${id}"`)
  process.stdout.write(`removed ${id}\n`)
  await revokeLive(c, 'device', id)
}))
device.command('rotate-secret').argument('<id>').addOption(configOpt()).description('issue a new secret; the old one stops working (a running gateway drops its connections)').action((id: string, opts: { config?: string }) => withRegistry(opts, async (r, c) => {
  printCredentials(id, await r.rotateSecret(id), c)
  await revokeLive(c, 'device', id)
}))

const client = program.command('client').description('manage integration clients (Home Assistant, Node-RED, Telegraf, scripts): MQTT users bound by a role')
client.command('add').argument('<name>').addOption(configOpt())
  .requiredOption('-r, --role <role>', 'a built-in role (observer, operator) or one defined under roles: in the config')
  .description('register an integration client and print its secret (shown once)')
  .action((name: string, opts: { config?: string; role: string }) => withRegistry(opts, async (r, c) => {
    const roles = resolveRoles(c.roles)
    const role = roles.get(opts.role)
    if (!role) throw new RegistryError(`unknown role "${opts.role}"; known roles: ${[...roles.keys()].sort().join(', ')}`)
    printClientCredentials(name, role, await r.addClient(name, role.name), c)
  }))
client.command('list').addOption(configOpt()).option('--json', 'JSON output').description('list integration clients').action((opts: { config?: string; json?: boolean }) => withRegistry(opts, (r) => {
  const list = r.listClients()
  if (opts.json) { process.stdout.write(JSON.stringify(list, null, 2) + '\n'); return }
  if (list.length === 0) process.stdout.write('no integration clients; add one with `edgeway client add <name> --role observer`\n')
  else process.stdout.write(formatTable(['NAME', 'ROLE', 'CREATED'], list.map((x) => [x.name, x.role, localTime(x.createdAt)])))
}))
client.command('show').argument('<name>').addOption(configOpt()).description('show one integration client').action((name: string, opts: { config?: string }) => withRegistry(opts, (r) => {
  const x = r.getClient(name)
  if (!x) throw new RegistryError(`no client "${name}"`)
  process.stdout.write(JSON.stringify(x, null, 2) + '\n')
}))
client.command('remove').argument('<name>').addOption(configOpt()).description('remove an integration client (it can no longer connect; a running gateway drops its connections)').action((name: string, opts: { config?: string }) => withRegistry(opts, async (r, c) => {
  if (!r.removeClient(name)) throw new RegistryError(`no client "${name}"`)
  process.stdout.write(`removed ${name}\n`)
  await revokeLive(c, 'client', name)
}))
client.command('rotate-secret').argument('<name>').addOption(configOpt()).description('issue a new secret; the old one stops working (a running gateway drops its connections)').action((name: string, opts: { config?: string }) => withRegistry(opts, async (r, c) => {
  const x = r.getClient(name)
  if (!x) throw new RegistryError(`no client "${name}"`)
  const secret = await r.rotateClientSecret(name)
  const role = resolveRoles(c.roles).get(x.role)
  if (role) printClientCredentials(name, role, secret, c)
  else process.stdout.write(`client: ${name}\nrole: ${x.role} (no such role in this config)\nsecret: ${secret}\n`)
  await revokeLive(c, 'client', name)
}))

// ---- edgeway fleet (fleet/): the operator's dashboard of many gateways, from their status messages
program.command('fleet').description('run the fleet dashboard (operator\'s server): every gateway\'s state from the broker, commands to any device').addOption(configOpt())
  .addOption(new Option('--log-format <format>', 'log lines: pretty for people, JSON lines for machines; auto: pretty on a terminal, else JSON').choices(LOG_FORMATS).default('auto'))
  .action(async (opts: { config?: string; logFormat: LogFormat }) => {
    const config = load(opts.config)
    if (!config.fleet) { process.stderr.write('edgeway: the config has no fleet: section (see "Fleet" in the README)\n'); process.exit(2) }
    const log = createLogger(config.log.level, { format: opts.logFormat })
    const { startFleet } = await import('../fleet/main.ts')
    let fleet: Awaited<ReturnType<typeof startFleet>>
    try { fleet = await startFleet(config.fleet, log) } catch (err) {
      log.fatal({ err: (err as Error).message }, 'edgeway fleet failed to start')
      process.exit(1)
    }
    process.stderr.write(`\nedgeway fleet ${VERSION} is running\n  http     ${config.fleet.http.host}:${fleet.http.port}  / (fleet dashboard)\n  broker   ${config.fleet.statusAddress}\n\n`)
    let signals = 0
    const onSignal = (sig: NodeJS.Signals): void => {
      if (++signals > 1) process.exit(1)
      log.info({ sig }, 'signal received')
      setTimeout(() => process.exit(1), 5000).unref()
      fleet.stop().then(() => process.exit(0), (err: Error) => { log.error({ err: err.message }, 'fleet shutdown failed'); process.exit(1) })
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
// ---- end edgeway fleet

const dashboard = program.command('dashboard').description('the web dashboard on the http port')
dashboard.command('set-password').addOption(configOpt()).option('--print', 'print the YAML to paste instead of writing the config file')
  .description('set the admin password (asked twice on a terminal, else the first line of stdin); only its scrypt hash is stored, in the config file')
  .action(async (opts: { config?: string; print?: boolean }) => {
    const file = configPath(opts.config)
    const pw = await readPassword()
    const problem = passwordProblem(pw)
    if (problem) { process.stderr.write(`edgeway: ${problem}\n`); process.exitCode = 2; return }
    const hash = await hashPassword(pw)
    if (opts.print || !file) {
      if (!file) process.stderr.write('no config file (--config, $EDGEWAY_CONFIG or ./edgeway.yaml): add this to it:\n')
      process.stdout.write(hashSnippet(hash))
      return
    }
    writePasswordHash(file, hash)
    load(file)
    process.stdout.write(`dashboard password set in ${file}; restart the gateway to apply it\n`)
  })

const outbox = program.command('outbox').description('inspect the outbox')
const dead = outbox.command('dead').description('readings an upstream refused for good (dead-letter table)')
dead.command('list').addOption(configOpt()).option('-u, --upstream <name>', 'only this upstream').option('--json', 'JSON output (with payloads)')
  .option('-n, --limit <n>', 'at most this many rows', '1000')
  .description('list dead-lettered readings with the reason (read-only: safe while the gateway runs)')
  .action((opts: { config?: string; upstream?: string; json?: boolean; limit: string }) => {
    const file = dataFiles(load(opts.config)).outbox
    if (!existsSync(file)) { process.stderr.write(`edgeway: no outbox at ${file}\n`); process.exitCode = 1; return }
    const rows = readDeadLetters(file, opts.upstream, Number(opts.limit))
    if (opts.json) {
      process.stdout.write(JSON.stringify(rows.map((r) => ({ ...r, payload: typeof r.payload === 'string' ? r.payload : Buffer.from(r.payload).toString('base64') })), null, 2) + '\n')
      return
    }
    if (rows.length === 0) { process.stdout.write('no dead-lettered readings\n'); return }
    for (const r of rows) {
      process.stdout.write(`${new Date(r.at).toISOString()}  ${r.upstream}  row ${r.rowId}  ${r.msgId}  ${r.reason}\n`)
    }
    process.stdout.write(`${rows.length} dead-lettered reading${rows.length === 1 ? '' : 's'}\n`)
  })
dead.command('retry').addOption(configOpt()).option('-u, --upstream <name>', 'only this upstream').option('--id <rowId...>', 'only these row ids')
  .description('send dead-lettered readings again (same message id, new row id; every upstream gets them again). '
    + 'Safe while the gateway runs: it picks them up within a second; otherwise at the next start')
  .action((opts: { config?: string; upstream?: string; id?: string[] }) => {
    const file = dataFiles(load(opts.config)).outbox
    if (!existsSync(file)) { process.stderr.write(`edgeway: no outbox at ${file}\n`); process.exitCode = 1; return }
    const ids = (opts.id ?? []).map((x) => {
      const n = Number(x)
      if (!Number.isSafeInteger(n) || n <= 0) { process.stderr.write(`edgeway: --id expects row ids, got "${x}"\n`); process.exit(2) }
      return n
    })
    const n = requestDeadRetry(file, { ...(opts.upstream !== undefined ? { upstream: opts.upstream } : {}), ...(ids.length ? { ids } : {}) })
    process.stdout.write(n === 0 ? 'nothing to retry\n' : `${n} dead-lettered reading${n === 1 ? '' : 's'} queued for retry\n`)
  })

registerXmppCli(program, load, configOpt)
registerOtaCommands(program, { dataDir: (opts) => load(opts.config).gateway.dataDir, configOpt })

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`edgeway: ${err.message}\n`)
  process.exit(1)
})
