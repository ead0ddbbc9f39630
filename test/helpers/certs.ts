// Test certificates made with the openssl CLI: private CAs and certificates they sign, as PEM files in a test's dir.
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { requireBinary } from './mosquitto.ts'

export interface CertFiles { cert: string; key: string }

function openssl(args: string[]): void {
  requireBinary('/usr/bin/openssl', 'openssl')
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

/** A self-signed CA: `<name>.pem` and `<name>.key` in `dir`. */
export function makeCa(dir: string, name: string, cn: string): CertFiles {
  const files = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) }
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-days', '2', '-keyout', files.key, '-out', files.cert])
  return files
}

/** A certificate for `cn` signed by `ca`, with one extension line (e.g. `subjectAltName=DNS:localhost`). */
export function issueCert(dir: string, ca: CertFiles, name: string, cn: string, extension: string): CertFiles {
  const files = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) }
  const csr = join(dir, `${name}.csr`)
  const ext = join(dir, `${name}.ext`)
  writeFileSync(ext, `${extension}\n`)
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', files.key, '-out', csr])
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', files.cert])
  return files
}
