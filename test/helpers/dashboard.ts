// Dashboard test helpers: the first-run password command, fed through stdin as a script would.
import { spawn } from 'node:child_process'
import { EDGEWAY_BIN } from './gateway.ts'

export async function setPassword(configFile: string, password: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [EDGEWAY_BIN, 'dashboard', 'set-password', '--config', configFile], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  p.stdin.end(password + '\n')
  const code = await new Promise<number | null>((resolve) => p.on('exit', resolve))
  return { code, stdout, stderr }
}
