// "Each I/O library imported in exactly one file": the product's sources (not tests, not the bench's reference
// targets) are scanned for value imports of each I/O library, and bridges/amqp/rhea.ts, the adapter that reaches past
// rhea's typings, fails loudly if rhea's SASL object changes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { saslMechanisms } from '../bridges/amqp/rhea.ts'

const root = join(import.meta.dirname, '..')
const PRODUCT_DIRS = ['gateway', 'devices', 'bridges', 'app', 'fleet', 'bin']
const IO_LIBRARIES: Record<string, string> = {
  'aedes': 'gateway/broker/broker.ts',
  'mqtt': 'gateway/upstream/mqtt.ts',
  'mqtt-packet': 'gateway/broker/aedes-adapter.ts',
  'better-sqlite3': 'gateway/store/sqlite.ts',
  'ws': 'gateway/net/websocket.ts',
  'serialport': 'devices/serial/port.ts',
  'rhea': 'bridges/amqp/rhea.ts',
  'amqplib': 'bridges/amqp/queue-check.ts',
  '@xmpp/client': 'bridges/xmpp/connection.ts',
  '@xmpp/component': 'bridges/xmpp/connection.ts',
  'node-datachannel': 'gateway/camera/webrtc.ts',
  'johnny-five': 'devices/firmata/board.ts',
}

function sources(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...sources(p))
    else if (/\.(ts|js|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(p)
  }
  return out
}

/** Modules a file imports for their values (`import type` and type-only `export type ... from` do not load them). */
function valueImports(text: string): Set<string> {
  const out = new Set<string>()
  for (const m of text.matchAll(/^\s*(import|export)\s+(?!type\s)[^'";]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm)) {
    out.add((m[2] ?? m[3] ?? m[4])!)
  }
  return out
}

test('each I/O library is imported (for its values) by exactly one product file', () => {
  const files = PRODUCT_DIRS.flatMap((d) => sources(join(root, d)))
  assert.ok(files.length > 100, `scanned ${files.length} files`)
  const importers = new Map<string, string[]>()
  for (const f of files) {
    for (const mod of valueImports(readFileSync(f, 'utf8'))) {
      if (!(mod in IO_LIBRARIES)) continue
      importers.set(mod, [...(importers.get(mod) ?? []), relative(root, f)])
    }
  }
  for (const [lib, file] of Object.entries(IO_LIBRARIES)) assert.deepEqual(importers.get(lib), [file], `${lib} is imported by ${JSON.stringify(importers.get(lib))}`)
})

test('the scan sees value imports and skips type-only ones', () => {
  const seen = valueImports([
    "import rhea, { type Message } from 'rhea'", "import type { Sender } from 'rhea-types'", "export type { X } from 'typed'",
    "import { a,\n  b } from 'multi'", "const m = await import('lazy')", "import 'side-effect'", "export { c } from 'reexported'",
  ].join('\n'))
  assert.deepEqual([...seen].sort(), ['lazy', 'multi', 'reexported', 'rhea', 'side-effect'])
})

test('rhea adapter: each SASL mechanism is set up on the object rhea takes as sasl_mechanisms', () => {
  const plain = saslMechanisms('PLAIN', 'u', 'p') as Record<string, unknown>
  assert.equal(typeof plain.PLAIN, 'function', 'PLAIN enabled')
  assert.equal(plain.ANONYMOUS, undefined)
  assert.equal(typeof (saslMechanisms('ANONYMOUS', undefined, undefined) as Record<string, unknown>).ANONYMOUS, 'function')
  assert.equal(typeof (saslMechanisms('EXTERNAL', undefined, undefined) as Record<string, unknown>).EXTERNAL, 'function')
})
