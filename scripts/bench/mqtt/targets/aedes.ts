import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { freePort } from '../../lib/net-util.ts';
import { launch, makeTempDir } from './launch.ts';
import type { MqttTarget, RunningTarget, TargetContext } from './types.ts';

const script = (ctx: TargetContext): string => path.join(ctx.repoRoot, 'scripts/bench/bare-aedes.ts');
const missing = (ctx: TargetContext): string | undefined =>
  existsSync(script(ctx)) ? undefined : `${script(ctx)} missing`;

/** Bare aedes, in memory, run through tsx exactly like the gateway is (same loader overhead). */
export const aedesTarget: MqttTarget = {
  id: 'aedes',
  label: 'bare aedes',
  unavailable: missing,
  async start(ctx: TargetContext): Promise<RunningTarget> {
    const port = await freePort(ctx.host);
    const tmpDir = makeTempDir('bench-aedes');
    return launch(ctx, {
      command: process.execPath,
      args: ['--import', 'tsx', script(ctx), String(port), ctx.host],
      cwd: ctx.repoRoot,
      port,
      tmpDir,
    });
  },
};

/**
 * The same bare-aedes.ts source under plain node, no tsx loader (start-up and
 * memory only): separates the loader's cost (its hooks thread is a second V8
 * isolate) from aedes' own.
 */
export const aedesPlainNodeTarget: MqttTarget = {
  id: 'aedes-node',
  label: 'bare aedes, plain node',
  startupOnly: true,
  unavailable: missing,
  async start(ctx: TargetContext): Promise<RunningTarget> {
    const port = await freePort(ctx.host);
    const tmpDir = makeTempDir('bench-aedes-node');
    return launch(ctx, {
      command: process.execPath,
      args: ['--input-type=module', '-e', readFileSync(script(ctx), 'utf8')],
      cwd: ctx.repoRoot,
      env: { ...process.env, BARE_AEDES_PORT: String(port), BARE_AEDES_HOST: ctx.host },
      port,
      tmpDir,
    });
  },
};
