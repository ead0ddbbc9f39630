// `npm test`: Node's test runner over test/*.test.ts, two files at a time. The per-file time limit is 300 s times
// TEST_TIME_SCALE, the one scale factor every wait in the tests derives from (test/helpers/net.ts), so a loaded
// machine (or CI) raises them all together. Arguments, if any, replace the file list.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'

const scale = Math.max(1, Number(process.env.TEST_TIME_SCALE ?? '1') || 1)
const args = process.argv.slice(2)
const files = args.length > 0 ? args : readdirSync('test').filter((f) => f.endsWith('.test.ts')).sort().map((f) => `test/${f}`)
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', `--test-timeout=${Math.round(300_000 * scale)}`, ...files], { stdio: 'inherit' })
process.exit(r.status ?? 1)
