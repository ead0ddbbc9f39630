/**
 * Child process bookkeeping: every process the bench starts is registered here
 * and killed by pid on normal completion, on error and on SIGINT/SIGTERM.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();

export interface ManagedChild {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** performance.now() just before spawn() was called. */
  readonly spawnedAt: number;
  readonly logFile: string | undefined;
  /** Set once the process has exited. */
  exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Last bytes of the log file (for error messages). */
  logTail(bytes?: number): string;
  /** SIGTERM, wait up to graceMs, then SIGKILL. */
  stop(graceMs?: number): Promise<void>;
}

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

/**
 * Spawn a child whose stdout/stderr go to logFile (no pipes, so a chatty child
 * can never block on a full pipe). Extra spawn options (e.g. an IPC channel
 * in stdio) may be given.
 */
export function startChild(
  command: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; logFile?: string; ipc?: boolean } = {},
): ManagedChild {
  let fd: number | 'ignore' = 'ignore';
  if (opts.logFile !== undefined) fd = openSync(opts.logFile, 'a');
  const stdio: SpawnOptions['stdio'] = opts.ipc ? ['ignore', fd, fd, 'ipc'] : ['ignore', fd, fd];
  const spawnedAt = performance.now();
  const proc = spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio });
  if (typeof fd === 'number') closeSync(fd);
  if (proc.pid === undefined) {
    throw new Error(`failed to spawn ${command}`);
  }
  const pid = proc.pid;
  live.add(proc);
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(proc);
      resolve();
    });
  });
  proc.on('error', () => undefined);

  return {
    proc,
    pid,
    spawnedAt,
    logFile: opts.logFile,
    exited: () => exitInfo,
    logTail(bytes = 2000): string {
      if (opts.logFile === undefined) return '';
      try {
        const text = readFileSync(opts.logFile, 'utf8');
        return text.slice(-bytes).trim();
      } catch {
        return '';
      }
    },
    async stop(graceMs = 3000): Promise<void> {
      if (exitInfo !== undefined) return;
      killPid(pid, 'SIGTERM');
      const timedOut = await Promise.race([
        exitPromise.then(() => false),
        sleep(graceMs).then(() => true),
      ]);
      if (timedOut) {
        killPid(pid, 'SIGKILL');
        await Promise.race([exitPromise, sleep(2000)]);
      }
    },
  };
}

/** Synchronous last-resort cleanup: SIGKILL every live child by pid, remove temp dirs. */
export function killAllNow(): void {
  for (const p of live) if (p.pid !== undefined) killPid(p.pid, 'SIGKILL');
  live.clear();
  for (const d of tempDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      /* ignore */
    }
  }
  tempDirs.clear();
}

let installed = false;
export function installSignalCleanup(): void {
  if (installed) return;
  installed = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, killing ${live.size} child process(es)\n`);
      killAllNow();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
  process.once('exit', () => killAllNow());
}
