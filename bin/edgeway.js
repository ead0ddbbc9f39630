#!/usr/bin/env -S node --max-semi-space-size=4
// Entry for the `edgeway` command: runs the compiled gateway (dist/, built by `npm run build`, which `npm ci`
// runs through "prepare"), or the TypeScript sources through tsx when no build exists.
import { existsSync } from 'node:fs'

const compiled = new URL('../dist/app/cli.js', import.meta.url)
if (existsSync(compiled)) {
  await import(compiled.href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../app/cli.ts')
}
