import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { freePort } from '../../lib/net-util.ts';
import { launch, makeTempDir } from './launch.ts';
import type { MqttTarget, RunningTarget, TargetContext } from './types.ts';

const script = (ctx: TargetContext): string => path.join(ctx.repoRoot, 'scripts/bench/bare-aedes.ts');
const missing = (ctx: TargetContext): string | undefined =>
  existsSync(script(ctx)) ? undefined : `${script(ctx)} missing`;

/** One bare-aedes.ts process on a free port; `args` choose how node runs it. */
function bareAedes(id: string, label: string, args: (ctx: TargetContext, port: number) => string[], extra: Partial<MqttTarget> = {}): MqttTarget {
  return {
    id,
    label,
    unavailable: missing,
    ...extra,
    async start(ctx: TargetContext): Promise<RunningTarget> {
      const port = await freePort(ctx.host);
      return launch(ctx, {
        command: process.execPath,
        args: args(ctx, port),
        cwd: ctx.repoRoot,
        env: { ...process.env, BARE_AEDES_PORT: String(port), BARE_AEDES_HOST: ctx.host },
        port,
        tmpDir: makeTempDir(`bench-${id}`),
      });
    },
  };
}

/**
 * Bare aedes, in memory, run through the tsx loader (the throughput and latency reference). The gateway itself runs
 * compiled JS, so this row's RSS includes the loader's hooks thread; the plain-node row below shows aedes without it.
 */
export const aedesTarget = bareAedes('aedes', 'bare aedes', (ctx, port) => ['--import', 'tsx', script(ctx), String(port), ctx.host]);

/** The same bare-aedes.ts source under plain node, no tsx loader (start-up and memory only). */
export const aedesPlainNodeTarget = bareAedes('aedes-node', 'bare aedes, plain node',
  (ctx) => ['--input-type=module', '-e', readFileSync(script(ctx), 'utf8')], { startupOnly: true });
