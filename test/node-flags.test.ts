// The gateway's node options (package.json's start script): every way of starting it carries them, and they do what
// they are there for. --max-semi-space-size=4 caps V8's young generation: with 1,000 idle clients it grew to 16 MiB
// per semi-space and the gateway's RSS was 126-131 MiB; capped at 4, 106-115 MiB (measured on the 2-core machine).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT, EDGEWAY_BIN } from './helpers/gateway.ts'
import { gatewayNodeFlags } from '../scripts/node-flags.ts'

const SEMI = /^--max-semi-space-size=(\d+)$/

test('npm start caps the young generation', () => {
  const flags = gatewayNodeFlags()
  assert.ok(flags.some((f) => SEMI.test(f)), `package.json start script has no --max-semi-space-size: ${flags.join(' ')}`)
})

test('the edgeway command starts node with the same options (its shebang), and runs', () => {
  const first = readFileSync(EDGEWAY_BIN, 'utf8').split('\n')[0]
  assert.equal(first, `#!/usr/bin/env -S node ${gatewayNodeFlags().join(' ')}`)
  const r = spawnSync(EDGEWAY_BIN, ['--version'], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout.trim(), (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version)
})

/** new space's size (MiB) in a node child after allocating objects that survive a few scavenges. */
function newSpaceAfterChurn(flags: string[]): number {
  const source = `let keep = []
for (let i = 0; i < 2e7; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 200000) keep = [] }
process.stdout.write(String(require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size / 1048576))`
  const r = spawnSync(process.execPath, [...flags, '-e', source], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  return Number(r.stdout)
}

test('this node honours the cap: the young generation stays within it under churn, and grows past it without', () => {
  const cap = Number(gatewayNodeFlags().map((f) => SEMI.exec(f)?.[1]).find((v) => v !== undefined))
  const capped = newSpaceAfterChurn(gatewayNodeFlags())
  const free = newSpaceAfterChurn([])
  assert.ok(capped <= 2 * cap, `new space ${capped} MiB with ${cap} MiB semi-spaces`)
  assert.ok(free > 2 * cap, `without the option new space reached only ${free} MiB: the churn no longer tells the cap apart`)
})
