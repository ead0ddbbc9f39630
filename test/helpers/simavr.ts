// The sensor-node firmware in a simulated ATmega328P (devices/sim/simboard over libsimavr), its UART on a pty.
// Builds firmware and harness with make into a temp dir (parallel test files do not race on one build tree).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { homedir } from 'node:os'
import { ROOT } from './gateway.ts'
import { tempDir } from './net.ts'

const INSTALL_HINT = "install the AVR toolchain and simavr with 'apt-get install -y gcc-avr avr-libc simavr libsimavr-dev libelf-dev pkg-config make' (or run 'bash scripts/setup.sh')"

export interface SimBuild { dir: string; hex: string; simboard: string; cleanup: () => void }

function make(dir: string, vars: string[]): void {
  const r = spawnSync('make', ['-s', '-C', dir, ...vars], { encoding: 'utf8' })
  if (r.error) throw new Error(`cannot run make (${r.error.message}): ${INSTALL_HINT}`)
  if (r.status !== 0) throw new Error(`make -C ${dir} failed (${r.status}):\n${r.stderr}${r.stdout}\n${INSTALL_HINT}`)
}

/** Builds sensor-node.hex (firmware `version`, report interval `intervalMs`) and the simboard harness. */
export function buildSimBoard(opts: { version?: string; intervalMs?: number; window?: number } = {}): SimBuild {
  for (const tool of ['avr-gcc', 'pkg-config']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} not found: ${INSTALL_HINT}`)
  }
  if (!existsSync('/usr/include/simavr/sim_avr.h')) throw new Error(`libsimavr headers not found: ${INSTALL_HINT}`)
  const { dir, cleanup } = tempDir('edgeway-sim-')
  make(join(ROOT, 'devices', 'firmware'), [`BUILD=${dir}`, `VERSION=${opts.version ?? '1.0.0'}`, `INTERVAL_MS=${opts.intervalMs ?? 1000}`, `WINDOW=${opts.window ?? 4}`])
  make(join(ROOT, 'devices', 'sim'), [`BUILD=${dir}`])
  return { dir, hex: join(dir, 'sensor-node.hex'), simboard: join(dir, 'simboard'), cleanup }
}

/** Debian's arduino-core-avr: the old Arduino bootloader (STK500v1, 57600 baud) that fits the 2 KiB boot section. */
export const ATMEGABOOT = '/usr/share/arduino/hardware/arduino/avr/bootloaders/atmega/ATmegaBOOT_168_atmega328.hex'

export function requireBootloader(): string {
  if (!existsSync(ATMEGABOOT)) throw new Error(`${ATMEGABOOT} not found: install the Arduino cores with 'apt-get install -y arduino-core-avr' (or run 'bash scripts/setup.sh')`)
  return ATMEGABOOT
}

export interface SimBoard {
  /** The pty symlink the gateway opens. */
  path: string
  proc: ChildProcess
  pid: number
  stderr: () => string
  /** 64 random bytes on the line after the next frame delimiter the firmware sends. */
  injectGarbage(): void
  /** SIGUSR2: the reset button (into the bootloader when there is one). */
  reset(): void
  /** With `pins`: drives an input pin, e.g. setPin('PD2', 1) (Arduino pin 2). */
  setPin(pin: string, level: 0 | 1): void
  /** SIGTERM: the harness removes the pty link and exits (the board is "unplugged"). */
  stop(): Promise<void>
}

/**
 * bootloader: the board runs it at every reset and starts as after an external reset; opening the port resets it
 * (the Arduino auto-reset). pins: output pin changes are reported on stderr ("simboard: pin PB5=1").
 */
export async function startSimBoard(build: SimBuild, path: string, opts: { hex?: string; adc0mV?: number; adc1mV?: number; bootloader?: string; pins?: boolean } = {}): Promise<SimBoard> {
  const args = ['-a', `${opts.adc0mV ?? 2500},${opts.adc1mV ?? 0}`, ...(opts.bootloader ? ['-b', opts.bootloader] : []), ...(opts.pins ? ['-p'] : []), opts.hex ?? build.hex, path]
  const proc = spawn(build.simboard, args, { stdio: [opts.pins ? 'pipe' : 'ignore', 'pipe', 'pipe'] })
  let err = ''
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString() })
  process.once('exit', () => { try { proc.kill('SIGKILL') } catch { /* gone */ } })
  await new Promise<void>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`simboard did not start within 5 s: ${err}`)), 5000)
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) { clearTimeout(timer); out.trim() === path ? resolve() : reject(new Error(`simboard printed ${out.trim()}, expected ${path}`)) }
    })
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`simboard exited with ${code}: ${err}`)) })
  })
  const board: SimBoard = {
    path, proc, pid: proc.pid!,
    stderr: () => err,
    injectGarbage() { process.kill(proc.pid!, 'SIGUSR1') },
    reset() { process.kill(proc.pid!, 'SIGUSR2') },
    setPin(pin, level) {
      if (!proc.stdin) throw new Error('start the board with { pins: true } to drive pins')
      proc.stdin.write(`${pin}=${level}\n`)
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const done = new Promise((r) => proc.once('exit', r))
      process.kill(proc.pid!, 'SIGTERM')
      await done
    },
  }
  return board
}

/** The real StandardFirmata build for the Uno from the npm package avrgirl-arduino, fetched by scripts/setup.sh. */
export function standardFirmataHex(): string {
  const cache = process.env.FIRMATA_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'edgeway')
  const hex = join(cache, 'avrgirl-arduino-5.0.1', 'StandardFirmata.cpp.hex')
  if (!existsSync(hex)) throw new Error(`${hex} not found: run 'bash scripts/setup.sh' (it takes StandardFirmata.cpp.hex from the npm package avrgirl-arduino with 'npm pack', outside git)`)
  return hex
}
