/**
 * Disk probe: append a 4 KiB block to a file and fdatasync it, N times, each timed with
 * process.hrtime.bigint. That is the floor under one durable commit on that disk (a SQLite
 * WAL commit with synchronous=FULL is at least one such write + sync), so the gateway's
 * latency targets are stated as "bare broker + this + slack".
 *
 * The calls are synchronous (the syscalls themselves are timed, no thread-pool hop); the
 * loop yields to the event loop every 100 samples so SIGINT cleanup still runs.
 */
import { closeSync, fdatasyncSync, openSync, statfsSync, writeSync } from 'node:fs';
import path from 'node:path';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { LatencyHistogram } from './histogram.ts';

export interface FsyncProbeResult {
  dir: string;
  /** Filesystem type from statfs(2) (ext4, xfs, tmpfs, ...; hex magic when unknown). */
  fsType: string;
  samples: number;
  blockBytes: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
  totalMs: number;
}

const FS_TYPES: Record<number, string> = {
  0xef53: 'ext2/3/4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x2fc12fc1: 'zfs',
  0xf2f52010: 'f2fs',
  0x6969: 'nfs',
  0x65735546: 'fuse',
};

export function fsTypeOf(dir: string): string {
  try {
    const t = statfsSync(dir).type;
    return FS_TYPES[t] ?? `0x${t.toString(16)}`;
  } catch {
    return 'unknown';
  }
}

/** Append `blockBytes` + fdatasync, `samples` times, to a new file in `dir` (which must exist). */
export async function probeFsync(dir: string, opts: { samples: number; blockBytes?: number }): Promise<FsyncProbeResult> {
  const blockBytes = opts.blockBytes ?? 4096;
  const block = Buffer.alloc(blockBytes, 0x5a);
  const hist = new LatencyHistogram();
  const fd = openSync(path.join(dir, 'fsync-probe.dat'), 'a');
  const t0 = process.hrtime.bigint();
  try {
    for (let i = 0; i < opts.samples; i++) {
      const s = process.hrtime.bigint();
      writeSync(fd, block);
      fdatasyncSync(fd);
      hist.record(Number(process.hrtime.bigint() - s) / 1000);
      if (i % 100 === 99) await yieldLoop();
    }
  } finally {
    closeSync(fd);
  }
  const ms = (p: number): number => hist.percentile(p) / 1000;
  return {
    dir,
    fsType: fsTypeOf(dir),
    samples: hist.total,
    blockBytes,
    p50Ms: ms(50),
    p99Ms: ms(99),
    p999Ms: ms(99.9),
    maxMs: hist.max / 1000,
    meanMs: hist.mean() / 1000,
    totalMs: Number(process.hrtime.bigint() - t0) / 1e6,
  };
}
