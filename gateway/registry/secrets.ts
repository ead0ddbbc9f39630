// Device and integration-client secrets: generated random, stored only as scrypt hashes, verified off the event loop.
import { randomBytes, scrypt as scryptCb, timingSafeEqual, createHash } from 'node:crypto'

const N = 16384, R = 8, P = 1, KEYLEN = 32

function scrypt(secret: string, salt: Buffer, n: number, r: number, p: number, len: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(secret, salt, len, { N: n, r, p, maxmem: 128 * n * r * 2 }, (err, key) => (err ? reject(err) : resolve(key)))
  })
}

export function generateSecret(): string {
  return randomBytes(24).toString('base64url')
}

export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await scrypt(secret, salt, N, R, P, KEYLEN)
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string]
  const expected = Buffer.from(hash, 'base64url')
  const key = await scrypt(secret, Buffer.from(salt, 'base64url'), Number(n), Number(r), Number(p), expected.length)
  return key.length === expected.length && timingSafeEqual(key, expected)
}

/**
 * Remembers recent successful verifications so a reconnect storm does not cost one scrypt per CONNECT.
 * Keyed by the stored hash too, so a rotated secret invalidates the entry by itself.
 */
export class VerifiedCache {
  private readonly map = new Map<string, number>()
  constructor(private readonly max = 4096, private readonly ttlMs = 10 * 60_000) {}

  private key(id: string, secret: string, stored: string): string {
    return createHash('sha256').update(id).update('\0').update(secret).update('\0').update(stored).digest('base64')
  }

  has(id: string, secret: string, stored: string, now = Date.now()): boolean {
    const k = this.key(id, secret, stored)
    const t = this.map.get(k)
    if (t === undefined) return false
    if (now - t > this.ttlMs) { this.map.delete(k); return false }
    return true
  }

  add(id: string, secret: string, stored: string, now = Date.now()): void {
    if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value as string)
    this.map.set(this.key(id, secret, stored), now)
  }
}
