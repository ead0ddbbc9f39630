// scripts/install.sh into a temp root: the tree, a unit systemd accepts, idempotence, upgrade and uninstall.
// One install is shared by the tests below, which run in order (node:test runs a file's top-level tests serially).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync, chmodSync, chownSync, mkdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from './helpers/gateway.ts'
import { gatewayNodeFlags } from '../scripts/node-flags.ts'
import { tempDir, scaled } from './helpers/net.ts'
import { writePasswordHash } from '../gateway/dashboard/password.ts'

const SCRIPT = join(ROOT, 'scripts', 'install.sh')
const { dir: root, cleanup } = tempDir('edgeway-install-')
after(cleanup)

// --no-build: `npm test` built dist/ already (pretest), and rebuilding it here would rewrite files that test
// files running in parallel are loading. --reuse-node-modules keeps this fast; the fresh `npm ci` path has its
// own test at the end.
function install(args: string[], env: NodeJS.ProcessEnv = {}, target = root): { code: number | null; out: string } {
  const r = spawnSync('bash', [SCRIPT, '--root', target, '--no-build', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: scaled(240_000) })
  return { code: r.status, out: `${r.stdout}${r.stderr}` }
}

/** Paths, types, modes, sizes, mtimes and contents of every entry: any change to the tree changes the hash. */
function treeHash(dir: string): string {
  const h = createHash('sha256')
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name)
      const s = lstatSync(p)
      h.update(`${p.slice(dir.length)} ${s.mode} ${s.size} ${s.mtimeMs}\n`)
      if (s.isSymbolicLink()) h.update(readlinkSync(p))
      else if (s.isDirectory()) walk(p)
      else h.update(readFileSync(p))
    }
  }
  walk(dir)
  return h.digest('hex')
}

const at = (p: string): string => join(root, p)
const unitFile = at('etc/systemd/system/edgeway.service')

/** The native modules of the installed tree load: better-sqlite3 runs a query, the serialport binding loads. */
function loadsNatives(app: string): void {
  const r = spawnSync(process.execPath, ['-e', "const D=require('better-sqlite3'); const db=new D(':memory:'); console.log(db.prepare('select 41+1 as x').get().x)"], { cwd: app, encoding: 'utf8' })
  assert.equal(r.status, 0, `better-sqlite3 does not load in ${app}: ${r.stderr}`)
  assert.equal(r.stdout.trim(), '42')
  const s = spawnSync(process.execPath, ['-e', "const b=require('@serialport/bindings-cpp/dist/load-bindings.js'); console.log(typeof b.asyncOpen)"], { cwd: app, encoding: 'utf8' })
  assert.equal(s.status, 0, `the serialport binding does not load in ${app}: ${s.stderr}`)
  assert.equal(s.stdout.trim(), 'function')
}

function verifyUnit(): void {
  const which = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' })
  assert.equal(which.status, 0, 'systemd-analyze not found: install the "systemd" package (bash scripts/setup.sh does)')
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', unitFile], { encoding: 'utf8' })
  // verify exits 0 even for unknown keys or bad values (it only logs them), so any output about our unit fails too.
  const complaints = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('edgeway.service'))
  assert.equal(r.status, 0, `systemd-analyze verify failed:\n${r.stdout}${r.stderr}`)
  assert.deepEqual(complaints, [], 'systemd-analyze verify complained about the unit')
}

/** `systemd-analyze security --offline` of the unit file is at most 2.0 ("Overall exposure level": 0 best, 10 worst). */
function assertExposure(): void {
  const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', unitFile], { encoding: 'utf8' })
  const out = `${r.stdout}${r.stderr}`
  assert.doesNotMatch(out, /unrecognized option|unknown option/i, `this systemd-analyze cannot review unit files (security --offline needs systemd >= 250; Debian 12 has 252):\n${out}`)
  const m = /Overall exposure level for edgeway\.service: (\d+(?:\.\d+)?)/.exec(out)
  assert.ok(m, `no "Overall exposure level" line from systemd-analyze security --offline (exit ${String(r.status)}):\n${out}`)
  const exposed = out.split('\n').filter((l) => l.startsWith('✗')).join('\n')
  assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]} > 2.0; exposed:\n${exposed}`)
}

/** A copy of the installed wrapper that runs the app under the test root, with fake id (uid 0, and the edgeway user
 *  exists) and runuser (logs its arguments, then runs the command as it is) first on PATH. */
function fakeRootWrapper(dir: string): { wrapper: string; log: string; env: NodeJS.ProcessEnv } {
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  const log = join(dir, 'runuser.log')
  writeFileSync(log, '')
  writeFileSync(join(bin, 'id'), '#!/bin/sh\ncase "$1" in -u) echo 0 ;; edgeway) exit 0 ;; *) exec /usr/bin/id "$@" ;; esac\n', { mode: 0o755 })
  writeFileSync(join(bin, 'runuser'), `#!/bin/sh\necho "$*" >> '${log}'\n[ "$1 $2 $3" = "-u edgeway --" ] || exit 99\nshift 3\nexec "$@"\n`, { mode: 0o755 })
  const wrapper = join(dir, 'edgeway')
  writeFileSync(wrapper, readFileSync(at('usr/local/bin/edgeway'), 'utf8').replaceAll('/opt/edgeway/', `${at('opt/edgeway')}/`), { mode: 0o755 })
  return { wrapper, log, env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` } }
}

let firstOut = ''

test('install into a temp root produces the tree', () => {
  const r = install(['--reuse-node-modules'])
  firstOut = r.out
  assert.equal(r.code, 0, r.out)
  for (const p of ['opt/edgeway/package.json', 'opt/edgeway/package-lock.json', 'opt/edgeway/bin/edgeway.js', 'opt/edgeway/dist/app/cli.js',
    'opt/edgeway/gateway/config/edgeway.schema.json', 'etc/edgeway/edgeway.yaml', 'etc/systemd/system/edgeway.service', 'usr/local/bin/edgeway']) {
    assert.ok(existsSync(at(p)), `${p} missing`)
  }
  assert.ok(statSync(at('var/lib/edgeway')).isDirectory())
  assert.equal(statSync(at('var/lib/edgeway')).mode & 0o777, 0o750)
  assert.equal(statSync(at('etc/edgeway/edgeway.yaml')).mode & 0o777, 0o640, 'the config may hold upstream passwords')
  assert.equal(statSync(at('usr/local/bin/edgeway')).mode & 0o111, 0o111)
  // Production dependencies only, with a native module that loads.
  assert.ok(existsSync(at('opt/edgeway/node_modules/better-sqlite3')))
  assert.ok(!existsSync(at('opt/edgeway/node_modules/typescript')), 'dev dependencies must be pruned')
  loadsNatives(at('opt/edgeway'))
  // A staging root never touches the real system's users or services: it says what it skipped.
  assert.match(r.out, /skipped \(target root .*\): useradd --system .*--groups dialout edgeway/)
  assert.match(r.out, /skipped \(--no-systemctl\): systemctl enable --now edgeway\.service/)
})

test('the installed app runs and the default config is valid', () => {
  const r = spawnSync(process.execPath, [at('opt/edgeway/bin/edgeway.js'), 'config', 'check', at('etc/edgeway/edgeway.yaml')], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  const v = spawnSync(process.execPath, [at('opt/edgeway/bin/edgeway.js'), '--version'], { encoding: 'utf8' })
  assert.equal(v.stdout.trim(), (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version)
  const wrapper = readFileSync(at('usr/local/bin/edgeway'), 'utf8')
  assert.match(wrapper, /EDGEWAY_CONFIG:-\/etc\/edgeway\/edgeway\.yaml/)
  assert.match(wrapper, /runuser -u edgeway/)
  assert.ok(wrapper.includes(`${gatewayNodeFlags().join(' ')} /opt/edgeway/bin/edgeway.js`), 'the wrapper runs npm start\'s node options')
})

test('the wrapper runs dashboard set-password as root, keeping the config root:edgeway 0640; other commands as edgeway', () => {
  const { dir, cleanup: done } = tempDir('edgeway-wrapper-')
  try {
    const { wrapper, log, env } = fakeRootWrapper(dir)
    const version = spawnSync('sh', [wrapper, '--version'], { encoding: 'utf8', env })
    assert.equal(version.status, 0, version.stderr)
    assert.match(readFileSync(log, 'utf8'), new RegExp(`^-u edgeway -- \\S+ ${gatewayNodeFlags().join(' ')} ${at('opt/edgeway/bin/edgeway.js')} --version$`, 'm'), 'as root, the CLI drops to the service user')
    writeFileSync(log, '')
    // The installed config: root:edgeway 0640. The edgeway user does not exist here: some other uid and gid stand in.
    const config = join(dir, 'edgeway.yaml')
    writeFileSync(config, '# my gateway\nlog:\n  level: info\n')
    chmodSync(config, 0o640)
    const asRoot = process.getuid?.() === 0
    if (asRoot) chownSync(config, 0, 65534)
    const before = statSync(config)
    const r = spawnSync('sh', [wrapper, 'dashboard', 'set-password'], { encoding: 'utf8', env: { ...env, EDGEWAY_CONFIG: config }, input: 'correct horse battery\n' })
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`)
    assert.equal(readFileSync(log, 'utf8'), '', 'set-password writes /etc/edgeway, which only root may: it must not drop to the service user')
    assert.match(readFileSync(config, 'utf8'), /^# my gateway\n[\s\S]*passwordHash: /)
    const after = statSync(config)
    assert.deepEqual([after.uid, after.gid, after.mode & 0o7777], [before.uid, before.gid, 0o640], 'owner, group and mode kept')
    assert.deepEqual(readdirSync(dir).sort(), ['bin', 'edgeway', 'edgeway.yaml', 'runuser.log'], 'no temp file left')
  } finally { done() }
})

test('the config writer keeps owner, group and mode (as root: a file of nobody:nogroup), also through a symlink', (t) => {
  const { dir, cleanup: done } = tempDir('edgeway-writer-')
  try {
    const asRoot = process.getuid?.() === 0
    if (!asRoot) t.diagnostic('not root: owner and group are the test user\'s, only the mode is really checked')
    const hash = 'scrypt$16384$8$1$' + 'a'.repeat(22) + '$' + 'b'.repeat(43)
    const file = join(dir, 'edgeway.yaml')
    writeFileSync(file, 'gateway:\n  id: gw-1 # stable\n')
    chmodSync(file, 0o640)
    if (asRoot) chownSync(file, 65534, 65534)
    const before = statSync(file)
    writePasswordHash(file, hash)
    const after = statSync(file)
    assert.notEqual(after.ino, before.ino, 'replaced by a rename (atomic), not rewritten in place')
    assert.deepEqual([after.uid, after.gid, after.mode & 0o7777], [before.uid, before.gid, 0o640])
    if (asRoot) assert.deepEqual([after.uid, after.gid], [65534, 65534])
    assert.match(readFileSync(file, 'utf8'), /id: gw-1 # stable/)
    // /etc/edgeway/edgeway.yaml as a symlink (e.g. to a config kept elsewhere): the target is written, the link stays.
    const real = join(dir, 'real')
    mkdirSync(real)
    const target = join(real, 'edgeway.yaml')
    writeFileSync(target, 'log:\n  level: info\n')
    chmodSync(target, 0o600)
    if (asRoot) chownSync(target, 65534, 0)
    const link = join(dir, 'link.yaml')
    symlinkSync(target, link)
    writePasswordHash(link, hash)
    assert.ok(lstatSync(link).isSymbolicLink())
    assert.match(readFileSync(target, 'utf8'), /passwordHash/)
    const t2 = statSync(target)
    assert.deepEqual([t2.mode & 0o7777, t2.uid, t2.gid], [0o600, asRoot ? 65534 : t2.uid, asRoot ? 0 : t2.gid])
    assert.deepEqual(readdirSync(real), ['edgeway.yaml'], 'no temp file left')
  } finally { done() }
})

test('the unit is hardened and systemd-analyze verify accepts it', () => {
  const unit = readFileSync(unitFile, 'utf8')
  for (const line of ['Type=simple', 'Restart=on-failure', 'User=edgeway', 'ProtectSystem=strict', 'ProtectHome=yes',
    'PrivateTmp=yes', 'NoNewPrivileges=yes', 'ReadWritePaths=/var/lib/edgeway', 'Environment=EDGEWAY_CONFIG=/etc/edgeway/edgeway.yaml',
    'Environment=EDGEWAY_GATEWAY__DATA_DIR=/var/lib/edgeway', 'StandardOutput=journal', 'CapabilityBoundingSet=', 'WantedBy=multi-user.target']) {
    assert.ok(unit.split('\n').includes(line), `unit lacks "${line}"`)
  }
  // dialout for serial boards; video (the optional camera) where this system has that group, as Debian does
  assert.match(unit, /^SupplementaryGroups=dialout( video)?$/m)
  // npm start's node options (test/node-flags.test.ts checks they are there and do something)
  assert.ok(unit.split('\n').some((l) => new RegExp(`^ExecStart=/\\S+ ${gatewayNodeFlags().join(' ')} /opt/edgeway/bin/edgeway\\.js run$`).test(l)), 'ExecStart runs npm start\'s node options')
  assert.doesNotMatch(unit, /AmbientCapabilities/, 'no capability unless a port below 1024 is configured')
  for (const line of ['PrivateMounts=yes', 'ProtectProc=invisible', 'ProcSubset=pid', 'RemoveIPC=yes', 'DevicePolicy=closed',
    'DeviceAllow=char-ttyUSB rw', 'DeviceAllow=char-ttyACM rw', 'DeviceAllow=char-ttyS rw', 'SystemCallArchitectures=native',
    'SystemCallFilter=~@privileged @resources', 'SystemCallErrorNumber=EPERM', 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK', 'UMask=0027']) {
    assert.ok(unit.split('\n').includes(line), `unit lacks "${line}"`)
  }
  assert.match(unit, /^SystemCallFilter=@system-service( |$)/m)
  // V8's JIT writes code it then runs; PrivateDevices would hide the serial adapters.
  assert.doesNotMatch(unit, /^(MemoryDenyWriteExecute|PrivateDevices)=/m)
  assert.doesNotMatch(unit, /video4linux/, 'no video devices while the camera is off')
  verifyUnit()
  assertExposure()
})

test('running it twice changes nothing', () => {
  const before = treeHash(root)
  const r = install(['--reuse-node-modules'])
  assert.equal(r.code, 0, r.out)
  assert.match(r.out, /is up to date/)
  assert.equal(treeHash(root), before, `second run changed the tree:\n${r.out}`)
  assert.ok(firstOut.includes('wrote default configuration'))
})

test('upgrade: refused without --upgrade, keeps config and data, grants CAP_NET_BIND_SERVICE for a port < 1024', () => {
  // A different build is installed (as after `git pull`): the stamp no longer matches.
  writeFileSync(at('opt/edgeway/.edgeway-install'), 'an older build\n')
  const refused = install(['--reuse-node-modules'])
  assert.equal(refused.code, 1)
  assert.match(refused.out, /run with --upgrade/)
  const config = 'log:\n  level: warn\nhttp:\n  port: 80\ncamera:\n  enabled: true\n'
  writeFileSync(at('etc/edgeway/edgeway.yaml'), config)
  writeFileSync(at('var/lib/edgeway/outbox.db'), 'data')
  // A modprobe on PATH (this container may have none): the unit loads the serial (and video) drivers before it starts.
  const { dir: fake, cleanup: done } = tempDir('edgeway-modprobe-')
  after(done)
  writeFileSync(join(fake, 'modprobe'), '#!/bin/sh\nexit 0\n', { mode: 0o755 })
  const r = install(['--upgrade', '--reuse-node-modules'], { PATH: `${fake}:${process.env.PATH ?? ''}` })
  assert.equal(r.code, 0, r.out)
  assert.match(r.out, /installed edgeway/)
  assert.equal(readFileSync(at('etc/edgeway/edgeway.yaml'), 'utf8'), config, 'upgrade must not touch the config')
  assert.equal(readFileSync(at('var/lib/edgeway/outbox.db'), 'utf8'), 'data')
  assert.ok(!existsSync(at('opt/edgeway.old')) && !existsSync(at('opt/edgeway.new')))
  loadsNatives(at('opt/edgeway'))
  const unit = readFileSync(unitFile, 'utf8')
  assert.match(unit, /^AmbientCapabilities=CAP_NET_BIND_SERVICE$/m)
  assert.match(unit, /^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$/m)
  // camera.enabled: V4L2 and libcamera devices; the drivers whose device classes the unit names are loaded first.
  for (const line of ['DeviceAllow=char-video4linux rw', 'DeviceAllow=char-media rw', 'DeviceAllow=char-ttyUSB rw', 'DevicePolicy=closed',
    `ExecStartPre=-+${join(fake, 'modprobe')} -qa usbserial cdc_acm videodev`]) {
    assert.ok(unit.split('\n').includes(line), `unit lacks "${line}"`)
  }
  verifyUnit()
  assertExposure()
})

test('uninstall removes what it installed and keeps config and data; --purge removes those too', () => {
  const r = install(['--uninstall'])
  assert.equal(r.code, 0, r.out)
  for (const p of ['opt/edgeway', 'etc/systemd/system/edgeway.service', 'usr/local/bin/edgeway']) assert.ok(!existsSync(at(p)), `${p} still there`)
  assert.ok(existsSync(at('etc/edgeway/edgeway.yaml')))
  assert.equal(readFileSync(at('var/lib/edgeway/outbox.db'), 'utf8'), 'data')
  const p = install(['--uninstall', '--purge'])
  assert.equal(p.code, 0, p.out)
  assert.ok(!existsSync(at('etc/edgeway')) && !existsSync(at('var/lib/edgeway')))
  assert.match(p.out, /skipped \(target root .*\): userdel edgeway/)
})

test('a Node.js older than 20 is refused with a way to get a newer one', () => {
  const { dir, cleanup: done } = tempDir('edgeway-oldnode-')
  try {
    const fake = join(dir, 'node')
    writeFileSync(fake, '#!/bin/sh\necho 18.19.0\n')
    chmodSync(fake, 0o755)
    const r = install([], { EDGEWAY_NODE: fake }, join(dir, 'root'))
    assert.equal(r.code, 1)
    assert.match(r.out, /Node\.js 18\.19\.0 .* too old: edgeway needs Node\.js >= 20/)
    assert.match(r.out, /nodesource/i)
  } finally { done() }
})

// The path a fresh machine takes: `npm ci --omit=dev` from the lock without running "prepare" (it needs the dev
// dependencies), then better-sqlite3's own install script. Slow (~50 s when better-sqlite3 compiles), so last.
test('fresh production install (npm ci --omit=dev, native rebuild) gives loadable native modules', () => {
  const { dir, cleanup: done } = tempDir('edgeway-fresh-')
  try {
    const r = install([], {}, dir)
    assert.equal(r.code, 0, r.out)
    assert.match(r.out, /npm ci --omit=dev/)
    assert.ok(!existsSync(join(dir, 'opt/edgeway/node_modules/typescript')))
    loadsNatives(join(dir, 'opt/edgeway'))
  } finally { done() }
})
