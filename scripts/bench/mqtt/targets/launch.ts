/** Shared spawn + "accepting TCP" wait used by the target modules. */
import { startChild, makeTempDir, removeTempDir, type ManagedChild } from '../../lib/children.ts';
import { waitForTcp } from '../../lib/net-util.ts';
import type { RunningTarget, TargetContext } from './types.ts';
import path from 'node:path';

export interface LaunchSpec {
  command: string;
  args: string[];
  cwd: string;
  port: number;
  tmpDir: string;
  env?: NodeJS.ProcessEnv;
  /** Extra readiness wait after TCP accept (e.g. HTTP health); returns ms since spawn. */
  ready?: (child: ManagedChild) => Promise<number>;
}

export function exitReason(child: ManagedChild): string | undefined {
  const ex = child.exited();
  if (ex === undefined) return undefined;
  const tail = child.logTail(1500);
  return `exited during start-up (code ${ex.code}, signal ${ex.signal})${tail ? `; log tail:\n${tail}` : ''}`;
}

export async function launch(ctx: TargetContext, spec: LaunchSpec): Promise<RunningTarget> {
  const child = startChild(spec.command, spec.args, {
    cwd: spec.cwd,
    env: spec.env,
    logFile: path.join(spec.tmpDir, 'target.log'),
  });
  const cleanup = async (): Promise<void> => {
    await child.stop();
    removeTempDir(spec.tmpDir);
  };
  try {
    await waitForTcp(ctx.host, spec.port, {
      timeoutMs: ctx.startTimeoutMs,
      intervalMs: 5,
      abort: () => exitReason(child),
    });
    const spawnToAcceptMs = performance.now() - child.spawnedAt;
    const spawnToReadyMs = spec.ready ? await spec.ready(child) : undefined;
    const running: RunningTarget = {
      pid: child.pid,
      host: ctx.host,
      port: spec.port,
      spawnToAcceptMs,
      child,
      stop: cleanup,
    };
    if (spawnToReadyMs !== undefined) running.spawnToReadyMs = spawnToReadyMs;
    return running;
  } catch (e) {
    const tail = child.logTail(1500);
    await cleanup();
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(tail && !msg.includes('log tail') ? `${msg}; log tail:\n${tail}` : msg);
  }
}

export { makeTempDir };
