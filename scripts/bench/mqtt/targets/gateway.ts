import path from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import { freePort, waitForHttp200 } from '../../lib/net-util.ts';
import { exitReason, launch, makeTempDir } from './launch.ts';
import { gatewayNodeFlags } from '../../../node-flags.ts';
import type { MqttTarget, RunningTarget, TargetContext } from './types.ts';

const cli = (ctx: TargetContext): string => path.join(ctx.repoRoot, 'dist/app/cli.js');

/**
 * The edgeway gateway in lab mode (openBroker: anonymous, no ACL), as installed: the compiled build with npm start's
 * node options (scripts/node-flags.ts),
 *   node <options> dist/app/cli.js run --config <tmp>/edgeway.yaml
 * (npm run bench builds first). Ready = TCP accept on the MQTT port and GET /healthz 200.
 */
export const gatewayTarget: MqttTarget = {
  id: 'gateway',
  label: 'edgeway gateway',
  unavailable: (ctx) => (existsSync(cli(ctx)) ? undefined : `${path.relative(ctx.repoRoot, cli(ctx))} does not exist: run npm run build`),
  async start(ctx: TargetContext): Promise<RunningTarget> {
    const mqttPort = await freePort(ctx.host);
    let httpPort = await freePort(ctx.host);
    while (httpPort === mqttPort) httpPort = await freePort(ctx.host);
    const tmpDir = makeTempDir('bench-gateway');
    const config = path.join(tmpDir, 'edgeway.yaml');
    writeFileSync(
      config,
      [
        `gateway: { id: bench, dataDir: ${JSON.stringify(path.join(tmpDir, 'data'))} }`,
        'log: { level: warn }',
        'mqtt:',
        `  tcp: { port: ${mqttPort}, host: ${ctx.host} }`,
        '  ws: { enabled: false }',
        '  openBroker: true',
        `http: { port: ${httpPort}, host: ${ctx.host} }`,
        '',
      ].join('\n'),
    );
    return launch(ctx, {
      command: process.execPath,
      args: [...gatewayNodeFlags(), ...(ctx.nodeArgs ?? []), cli(ctx), 'run', '--config', config],
      cwd: ctx.repoRoot,
      port: mqttPort,
      tmpDir,
      ready: async (child) => {
        await waitForHttp200(`http://${ctx.host}:${httpPort}/healthz`, {
          timeoutMs: ctx.startTimeoutMs,
          intervalMs: 10,
          abort: () => exitReason(child),
        });
        return performance.now() - child.spawnedAt;
      },
    });
  },
};
