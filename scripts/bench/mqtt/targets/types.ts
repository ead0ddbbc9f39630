/** Contract every MQTT bench target (one module per target) implements. */
import type { ManagedChild } from '../../lib/children.ts';

export interface TargetContext {
  repoRoot: string;
  host: string;
  startTimeoutMs: number;
  /** Extra node options for a Node.js target (e.g. --cpu-prof, which NODE_OPTIONS does not allow). */
  nodeArgs?: string[];
}

export interface RunningTarget {
  pid: number;
  host: string;
  port: number;
  /** spawn() -> first accepted TCP connection (connect polled every 5 ms). */
  spawnToAcceptMs: number;
  /** spawn() -> target says it is ready, when it has a readiness probe (gateway: GET /healthz 200). */
  spawnToReadyMs?: number;
  child: ManagedChild;
  stop(): Promise<void>;
}

export interface MqttTarget {
  id: string;
  label: string;
  /** Only the start-up/memory phase is run (no load phase). */
  startupOnly?: boolean;
  /** Why this target cannot run here (missing binary/entry point), undefined when it can. */
  unavailable(ctx: TargetContext): string | undefined;
  start(ctx: TargetContext): Promise<RunningTarget>;
}

/** Every target gets the same topic shape and payload so the comparison is fair. */
export const TOPIC_TEMPLATE = 'devices/{clientId}/telemetry';
