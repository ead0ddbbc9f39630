// The dashboard's static files: its own pages and modules (public/, served as they are: no build step) and uPlot
// from node_modules, with the content types and security headers every page gets.
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { dirname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import type { ServerResponse } from 'node:http'

export interface AssetDirs { publicDir: string; vendorDir: string }

/**
 * public/ under the package root (found by walking up to package.json), so the same path works from the sources
 * (tsx) and from dist/, and in an install that copies gateway/dashboard/public next to dist/.
 */
export function assetDirs(): AssetDirs {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5 && !existsSync(join(dir, 'package.json')); i++) dir = dirname(dir)
  if (!existsSync(join(dir, 'package.json'))) throw new Error('dashboard: package.json not found above ' + fileURLToPath(import.meta.url))
  return {
    publicDir: join(dir, 'gateway', 'dashboard', 'public'),
    vendorDir: dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.esm.js')),
  }
}

/** "/ui/<rel>" -> a file inside one of the dirs ("vendor/..." is uPlot), or null for anything that tries to leave them. */
export function assetFile(dirs: AssetDirs, urlRel: string): string | null {
  let rel: string
  try { rel = decodeURIComponent(urlRel) } catch { return null }
  if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(rel) || rel.split('/').some((p) => p.startsWith('.'))) return null
  const vendor = rel.startsWith('vendor/')
  const base = vendor ? dirs.vendorDir : dirs.publicDir
  const file = resolve(base, vendor ? rel.slice('vendor/'.length) : rel)
  return file.startsWith(base + sep) ? file : null
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.json': 'application/json',
}

// No inline script or style anywhere: the pages only run their own modules.
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  // same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on form posts, which the login refuses.
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
}

export async function sendFile(res: ServerResponse, file: string | null): Promise<void> {
  let data: Buffer | null = null
  if (file) { try { data = await readFile(file) } catch { data = null } }
  if (!data || !file) { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n'); return }
  const ext = file.slice(file.lastIndexOf('.'))
  res.writeHead(200, { 'content-type': TYPES[ext] ?? 'application/octet-stream', 'cache-control': 'no-cache', ...SECURITY_HEADERS }).end(data)
}
