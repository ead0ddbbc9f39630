// The node options the gateway runs with. `npm start` (package.json) is where they are written down; the installed
// service (scripts/install.sh), the `edgeway` command's shebang, the test harness and the bench take them from there,
// so every measured or tested gateway runs like an installed one.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const packageJson = fileURLToPath(new URL('../package.json', import.meta.url))

/** The options (words starting with --) of package.json's start script, e.g. ['--max-semi-space-size=4']. */
export function gatewayNodeFlags(): string[] {
  const pkg = JSON.parse(readFileSync(packageJson, 'utf8')) as { scripts?: { start?: string } }
  const start = pkg.scripts?.start
  if (typeof start !== 'string') throw new Error(`${packageJson}: no scripts.start`)
  return start.split(' ').filter((w) => w.startsWith('--'))
}
