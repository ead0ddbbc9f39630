/** Small aligned-text table formatter. */

export type Align = 'left' | 'right';

export interface Table {
  title: string;
  columns: { header: string; align?: Align }[];
  rows: string[][];
  notes?: string[];
}

export function renderTable(t: Table): string {
  const widths = t.columns.map((c, i) =>
    Math.max(c.header.length, ...t.rows.map((r) => (r[i] ?? '').length)),
  );
  const pad = (s: string, i: number): string => {
    const w = widths[i] ?? 0;
    const align = t.columns[i]?.align ?? (i === 0 ? 'left' : 'right');
    return align === 'left' ? s.padEnd(w) : s.padStart(w);
  };
  const line = (cells: string[]): string => cells.map((c, i) => pad(c, i)).join('  ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  const out = [t.title, line(t.columns.map((c) => c.header)), rule, ...t.rows.map(line)];
  for (const n of t.notes ?? []) out.push(`  ${n}`);
  return out.join('\n');
}

/** Number formatting helpers; non-finite values print as "n/a". */
export const fmt = {
  int(n: number | undefined): string {
    return n === undefined || !Number.isFinite(n) ? 'n/a' : Math.round(n).toLocaleString('en-US');
  },
  fixed(n: number | undefined, digits: number): string {
    return n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(digits);
  },
  ms(n: number | undefined): string {
    if (n === undefined || !Number.isFinite(n)) return 'n/a';
    return n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0);
  },
  /** Signed difference in ms (`+0.42`, `-1.3`), same precision rules as ms(). */
  deltaMs(n: number | undefined): string {
    if (n === undefined || !Number.isFinite(n)) return 'n/a';
    return `${n < 0 ? '-' : '+'}${fmt.ms(Math.abs(n))}`;
  },
  mib(bytes: number | undefined): string {
    return bytes === undefined || !Number.isFinite(bytes) ? 'n/a' : (bytes / 1024 / 1024).toFixed(1);
  },
  ratio(a: number | undefined, b: number | undefined): string {
    if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return 'n/a';
    return `${(a / b).toFixed(2)}x`;
  },
};
