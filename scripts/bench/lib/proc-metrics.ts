/** Process metrics from /proc (Linux only). */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let clkTck: number | undefined;
function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/**
 * utime+stime of the whole thread group in clock ticks. /proc/<pid>/stat of the
 * thread-group leader already sums all its threads (not its child processes).
 */
export function readCpuTicks(pid: number, tid?: number): number | undefined {
  try {
    const file = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`;
    const stat = readFileSync(file, 'utf8');
    // comm (field 2) may contain spaces and parens: split after the last ')'
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime = field 14, stime = field 15
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : undefined;
  } catch {
    return undefined;
  }
}

/** A numeric field of /proc/<pid>/status (the number after `name:`), undefined when the process is gone. */
function readStatusField(pid: number, name: string): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status);
    return m?.[1] !== undefined ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** VmRSS in bytes, undefined when the process is gone. */
export function readRssBytes(pid: number): number | undefined {
  const kb = readStatusField(pid, 'VmRSS');
  return kb === undefined ? undefined : kb * 1024;
}

/** RssAnon in bytes (heaps and other private memory, without the mapped executable and libraries). */
export function readRssAnonBytes(pid: number): number | undefined {
  const kb = readStatusField(pid, 'RssAnon');
  return kb === undefined ? undefined : kb * 1024;
}

export function readThreadCount(pid: number): number | undefined {
  return readStatusField(pid, 'Threads');
}

export interface CpuWindow {
  /** CPU% over the window, 100 = one full core. */
  stop(): number | undefined;
}

/**
 * Start a CPU accounting window for pid (all threads), or for one thread when
 * tid is given (tid === pid: the main thread); stop() returns CPU% of one core.
 */
export function startCpuWindow(pid: number, tid?: number): CpuWindow {
  const t0 = performance.now();
  const c0 = readCpuTicks(pid, tid);
  return {
    stop(): number | undefined {
      const c1 = readCpuTicks(pid, tid);
      const dt = (performance.now() - t0) / 1000;
      if (c0 === undefined || c1 === undefined || dt <= 0) return undefined;
      return ((c1 - c0) / clockTicks() / dt) * 100;
    },
  };
}

export interface RssSampler {
  /** Peak VmRSS in bytes seen since start (undefined if never readable). */
  stop(): number | undefined;
}

/** Sample VmRSS every intervalMs and keep the peak. */
export function startRssSampler(pid: number, intervalMs = 100): RssSampler {
  let peak: number | undefined;
  const sample = (): void => {
    const r = readRssBytes(pid);
    if (r !== undefined && (peak === undefined || r > peak)) peak = r;
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  timer.unref();
  return {
    stop(): number | undefined {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

export const MiB = 1024 * 1024;
