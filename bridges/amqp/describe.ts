// One readable line for whatever rhea or a socket reports as an error (AMQP conditions with their description).
export function describe(e: unknown): string {
  if (!e) return 'unknown error'
  if (typeof e === 'object') {
    const o = e as { condition?: unknown; description?: unknown; message?: unknown; code?: unknown }
    if (o.condition !== undefined) return `${String(o.condition)}${o.description ? `: ${String(o.description)}` : ''}`
    if (o.message !== undefined) return `${o.code ? `${String(o.code)} ` : ''}${String(o.message)}`
  }
  return String(e)
}
