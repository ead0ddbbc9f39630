// Debian's Chromium driven by playwright-core (which cannot download a browser here), one private instance per test.
import { chromium, type Browser } from 'playwright-core'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { requireBinary } from './mosquitto.ts'
import { ROOT } from './gateway.ts'

export const CHROMIUM = '/usr/bin/chromium'
export const ARTIFACTS = join(ROOT, 'test-artifacts')

export async function launchBrowser(): Promise<Browser> {
  requireBinary(CHROMIUM, 'chromium')
  mkdirSync(ARTIFACTS, { recursive: true })
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  })
}

export const artifact = (name: string): string => join(ARTIFACTS, name)
