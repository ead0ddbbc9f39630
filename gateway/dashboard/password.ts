// `edgeway dashboard set-password`: reads the new admin password and stores only its scrypt hash in edgeway.yaml.
import { closeSync, existsSync, fchmodSync, fchownSync, fstatSync, fsyncSync, openSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeSync, type Stats } from 'node:fs'
import { dirname } from 'node:path'
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

/**
 * Sets dashboard.passwordHash in the file, keeping its comments and layout. Written atomically (a temp file in the
 * same directory, renamed over it) with the original's owner, group and mode: `sudo edgeway dashboard set-password`
 * runs as root, and the installed config must stay root:edgeway 0640 for the service to read it. A symlinked config
 * is written where the link points. A new file gets mode 0600.
 */
export function writePasswordHash(file: string, hash: string): void {
  const target = existsSync(file) ? realpathSync(file) : file
  const old = existsSync(target) ? statSync(target) : null
  const text = old ? readFileSync(target, 'utf8') : ''
  const doc = parseDocument(text)
  if (doc.errors.length) throw new Error(`${file}: YAML syntax: ${doc.errors[0]!.message.split('\n')[0]}`)
  let out: string
  if (doc.contents === null) out = text + hashSnippet(hash)
  else { doc.setIn(['dashboard', 'passwordHash'], hash); out = doc.toString() }
  replaceFile(target, out, old)
}

/** Replaces `file` with `data` in one rename, the new file owned and moded like `old` (the file's stat, if any). */
function replaceFile(file: string, data: string, old: Stats | null): void {
  const tmp = `${file}.tmp-${process.pid}`
  // 'wx': never through a link or file someone left at that name; 0600 until the final owner and mode are set.
  const fd = openSync(tmp, 'wx', 0o600)
  try {
    try {
      writeSync(fd, data)
      if (old) {
        const now = fstatSync(fd)
        if (now.uid !== old.uid || now.gid !== old.gid) {
          try { fchownSync(fd, old.uid, old.gid) } catch (err) {
            const e = err as NodeJS.ErrnoException
            if (e.code !== 'EPERM') throw err
            throw new Error(`${file} belongs to ${old.uid}:${old.gid}; written by ${now.uid}:${now.gid} it would change owner and could become unreadable for its users: run this as root or as the file's owner`)
          }
        }
        fchmodSync(fd, old.mode & 0o7777)
      }
      fsyncSync(fd)
    } finally { closeSync(fd) }
    renameSync(tmp, file)
  } catch (err) {
    try { unlinkSync(tmp) } catch { /* renamed or never there */ }
    throw err
  }
  // The rename itself survives a power cut only once the directory is on disk.
  try { const d = openSync(dirname(file), 'r'); try { fsyncSync(d) } finally { closeSync(d) } } catch { /* best effort */ }
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
