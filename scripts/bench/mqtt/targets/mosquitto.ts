import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort } from '../../lib/net-util.ts';
import { launch, makeTempDir } from './launch.ts';
import type { MqttTarget, RunningTarget, TargetContext } from './types.ts';

const MOSQUITTO = process.env.BENCH_MOSQUITTO ?? '/usr/sbin/mosquitto';

/** Mosquitto with the minimal config from the design notes (plus set_tcp_nodelay when BENCH_MOSQUITTO_NODELAY=1). */
export const mosquittoTarget: MqttTarget = {
  id: 'mosquitto',
  label: 'Mosquitto',
  unavailable: () => (existsSync(MOSQUITTO) ? undefined : `${MOSQUITTO} not found (set BENCH_MOSQUITTO)`),
  async start(ctx: TargetContext): Promise<RunningTarget> {
    const port = await freePort(ctx.host);
    const tmpDir = makeTempDir('bench-mosquitto');
    const conf = path.join(tmpDir, 'mosquitto.conf');
    writeFileSync(
      conf,
      [
        `listener ${port} ${ctx.host}`,
        'allow_anonymous true',
        'persistence false',
        'max_inflight_messages 0',
        'max_queued_messages 0',
        // opt-in: mosquitto leaves Nagle on by default, which adds ~1.7 ms to p50 ack
        // latency at moderate rates here but raises saturated throughput
        ...(process.env.BENCH_MOSQUITTO_NODELAY === '1' ? ['set_tcp_nodelay true'] : []),
        '',
      ].join('\n'),
    );
    return launch(ctx, { command: MOSQUITTO, args: ['-c', conf], cwd: tmpDir, port, tmpDir });
  },
};
