/** Contract of a bench section (mqtt today; amqp, serial, dashboard later). */
import type { Table } from './table.ts';

export interface BenchContext {
  repoRoot: string;
  /** Progress line on stderr (tables go to stdout). */
  log(message: string): void;
}

export interface SectionReport {
  tables: Table[];
  notes: string[];
  /** Raw results, written to the JSON file under bench-results/. */
  data: unknown;
}

export interface BenchSection {
  id: string;
  description: string;
  run(ctx: BenchContext): Promise<SectionReport>;
}

export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  return n;
}
