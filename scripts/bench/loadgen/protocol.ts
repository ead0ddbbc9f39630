/** Messages exchanged over IPC between the bench parent and a load-generator process. */
import type { HistogramSnapshot } from '../lib/histogram.ts';

export interface GeneratorConfig {
  host: string;
  port: number;
  clientIds: string[];
  /** Topic with the literal `{clientId}` replaced per client, e.g. devices/{clientId}/telemetry. */
  topicTemplate: string;
  /** Max unacked QoS 1 PUBLISHes per connection. <= 1024. */
  window: number;
  payloadBytes: number;
  keepalive: number;
  /** Messages/s per connection; null = saturate (send whenever the window allows). */
  ratePerClient: number | null;
  /** Max simultaneous TCP/MQTT handshakes in flight while connecting. */
  connectConcurrency: number;
  connectTimeoutMs: number;
  /** MQTT protocol level: 4 (3.1.1, default) or 5. */
  protocolVersion?: 4 | 5;
  /** MQTT 5 only: the first PUBLISH sets topic alias 1, every later one sends an empty topic and the alias. */
  topicAlias?: boolean;
}

export type ParentMessage =
  | { type: 'init'; config: GeneratorConfig }
  | { type: 'start' }
  | { type: 'mark' }
  | { type: 'stop' }
  | { type: 'close' };

export interface GeneratorResult {
  /** PUBACKs received between mark and stop. */
  acked: number;
  /** PUBLISHes written between mark and stop. */
  sent: number;
  /** Scheduled sends dropped because the window was full (rate-limited mode only). */
  skipped: number;
  elapsedMs: number;
  disconnects: number;
  histogram: HistogramSnapshot;
}

export type GeneratorMessage =
  | { type: 'ready'; connected: number; connectMs: number }
  | { type: 'marked' }
  | { type: 'result'; result: GeneratorResult }
  | { type: 'error'; message: string };

export function isGeneratorMessage(m: unknown): m is GeneratorMessage {
  if (typeof m !== 'object' || m === null || !('type' in m)) return false;
  const t = (m as { type: unknown }).type;
  return t === 'ready' || t === 'marked' || t === 'result' || t === 'error';
}

export function isParentMessage(m: unknown): m is ParentMessage {
  if (typeof m !== 'object' || m === null || !('type' in m)) return false;
  const t = (m as { type: unknown }).type;
  return t === 'init' || t === 'start' || t === 'mark' || t === 'stop' || t === 'close';
}
