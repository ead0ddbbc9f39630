// `edgeway dashboard set-password`: reads the new admin password and stores only its scrypt hash in edgeway.yaml.
import { readFileSync, writeFileSync, renameSync, statSync, existsSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { parseDocument } from 'yaml'
import { hashSecret } from '../registry/secrets.ts'

export const MIN_PASSWORD = 8

export function passwordProblem(pw: string): string | null {
  if (pw.length < MIN_PASSWORD) return `the password must have at least ${MIN_PASSWORD} characters`
  if (pw.length > 1024) return 'the password is longer than 1024 characters'
  return null
}

export const hashPassword = (pw: string): Promise<string> => hashSecret(pw)

/** The YAML to paste when there is no config file to write. */
export function hashSnippet(hash: string): string {
  return `dashboard:\n  passwordHash: "${hash}"\n`
}

/** Sets dashboard.passwordHash in the file, keeping its comments and layout; written atomically with the same mode. */
export function writePasswordHash(file: string, hash: string): void {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const doc = parseDocument(text)
  if (doc.errors.length) throw new Error(`${file}: YAML syntax: ${doc.errors[0]!.message.split('\n')[0]}`)
  let out: string
  if (doc.contents === null) out = text + hashSnippet(hash)
  else { doc.setIn(['dashboard', 'passwordHash'], hash); out = doc.toString() }
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, out, { mode: existsSync(file) ? statSync(file).mode & 0o777 : 0o600 })
  renameSync(tmp, file)
}

/** From a terminal: asked twice without echo. From a pipe: the first line. */
export async function readPassword(): Promise<string> {
  const input = process.stdin
  if (!input.isTTY) {
    let data = ''
    for await (const chunk of input) data += (chunk as Buffer).toString()
    return data.split(/\r?\n/)[0] ?? ''
  }
  const ask = (prompt: string): Promise<string> => new Promise((resolve) => {
    const rl = createInterface({ input, output: process.stderr, terminal: true })
    process.stderr.write(prompt)
    // Keep the password off the screen: swallow readline's echo.
    const r = rl as unknown as { _writeToOutput: (s: string) => void }
    r._writeToOutput = () => undefined
    rl.question('', (answer) => { rl.close(); process.stderr.write('\n'); resolve(answer) })
  })
  const a = await ask('new dashboard password: ')
  const b = await ask('again: ')
  if (a !== b) throw new Error('the two passwords differ')
  return a
}
