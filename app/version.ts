// The installed package's version (package.json sits two levels above dist/app/, one above app/ in a checkout).
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

function findPackageJson(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 4; i++, dir = dirname(dir)) if (existsSync(join(dir, 'package.json'))) return join(dir, 'package.json')
  throw new Error('package.json not found')
}

export const VERSION = (JSON.parse(readFileSync(findPackageJson(), 'utf8')) as { version: string }).version
