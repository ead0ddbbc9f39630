// `edgeway ota ...`: push an image through the running gateway (control socket, with a progress bar) and list jobs.
import { Option, type Command } from 'commander'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { progressDisplay } from '../progress.ts'
import { controlCall, GatewayNotRunning } from '../control/client.ts'
import type { OtaProgress, PushParams } from './service.ts'
import { readJobs } from './store.ts'
import { formatTable, localTime } from '../log.ts'

/** "120s", "2m", "1500ms", "1h" or a bare number of seconds -> ms. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(s.trim())
  if (!m) throw new Error(`invalid duration "${s}": use e.g. 120s, 2m, 1h or 1500ms`)
  const n = Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const)[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h']
  return Math.round(n)
}

interface Ctx { dataDir(opts: { config?: string }): string; configOpt(): Option }

const fail = (msg: string, code = 1): void => { process.stderr.write(`edgeway: ${msg}\n`); process.exitCode = code }

export function registerOtaCommands(program: Command, ctx: Ctx): void {
  const ota = program.command('ota').description('firmware updates over MQTT for networked nodes (protocol: devices/ota/README.md)')
  ota.command('push').argument('<device>').argument('<image>', 'firmware image (e.g. the .bin an ESP32 build produces)').addOption(ctx.configOpt())
    .requiredOption('--version <version>', 'the version the image reports after boot (success needs the device to report exactly this)')
    .option('--signature <file>', 'signature file, passed to the device as is (base64 in the announce); the device verifies it')
    .option('--deadline <duration>', 'how long after "applied" the device has to come back healthy with the new version', '120s')
    .option('--chunk-size <bytes>', 'bytes per chunk', '4096')
    .option('--no-wait', 'return once the image is announced (the job runs on in the gateway)')
    .option('--json', 'print the final job as JSON')
    .description('announce an image to a device, serve it, and wait for the device to come back with the new version (exit 0) or roll back (exit 1)')
    .action(async (device: string, image: string, opts: { config?: string; version: string; signature?: string; deadline: string; chunkSize: string; wait: boolean; json?: boolean }) => {
      let params: PushParams
      try {
        params = {
          device, file: resolve(image), version: opts.version, deadlineMs: parseDuration(opts.deadline), chunkSize: Number(opts.chunkSize), wait: opts.wait,
          signature: opts.signature ? readFileSync(opts.signature).toString('base64') : null,
        }
      } catch (err) { return fail((err as Error).message, 2) }
      let job = 0
      const bar = progressDisplay(`ota ${device} {version} [{bar}] {percentage}% {value}/{total} bytes | {step}`,
        (state, offset, size) => `ota job ${job} ${device}: ${state} (${offset}/${size} bytes)`)
      const onProgress = (raw: unknown): void => {
        const p = raw as OtaProgress
        job = p.job
        bar.update(p.offset, p.size, p.state === 'applied' ? 'applied: waiting for the device to reboot and report' : p.state, { version: p.version })
      }
      let result: OtaProgress
      try {
        result = await controlCall(ctx.dataDir(opts), 'ota.push', params, onProgress) as OtaProgress
      } catch (err) {
        bar.stop()
        if (err instanceof GatewayNotRunning) return fail(err.message, 3)
        const lost = /closed the control connection/.test((err as Error).message)
        return fail(lost ? `${(err as Error).message}; the job is stored and resumes when the gateway runs again (see \`edgeway ota status\`)` : (err as Error).message)
      }
      bar.update(result.offset, result.size, result.state, { version: result.version })
      bar.stop()
      if (opts.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n')
      else if (result.state === 'succeeded') process.stdout.write(`ota job ${result.job}: succeeded: ${device} runs ${result.version}\n`)
      else if (!opts.wait) process.stdout.write(`ota job ${result.job}: announced ${result.size} bytes of ${result.version} to ${device}\n`)
      else process.stdout.write(`ota job ${result.job}: ${result.state}: ${result.reason ?? ''}\n`)
      process.exitCode = result.state === 'succeeded' || !opts.wait ? 0 : 1
    })
  ota.command('cancel').argument('<device>').addOption(ctx.configOpt())
    .description("end the device's unfinished OTA job (e.g. a device that never asks for it); a new push is then possible")
    .action(async (device: string, opts: { config?: string }) => {
      try {
        const r = await controlCall(ctx.dataDir(opts), 'ota.cancel', { device }) as OtaProgress
        process.stdout.write(`ota job ${r.job}: ${r.state}: ${r.reason ?? ''}\n`)
      } catch (err) { fail((err as Error).message, err instanceof GatewayNotRunning ? 3 : 1) }
    })
  ota.command('status').argument('[device]').addOption(ctx.configOpt()).option('--json', 'JSON output').option('-n, --limit <n>', 'at most this many jobs', '20')
    .description('list OTA jobs, newest first (read-only: safe while the gateway runs)')
    .action((device: string | undefined, opts: { config?: string; json?: boolean; limit: string }) => {
      const jobs = readJobs(ctx.dataDir(opts), device, Number(opts.limit))
      if (opts.json) { process.stdout.write(JSON.stringify(jobs, null, 2) + '\n'); return }
      if (jobs.length === 0) { process.stdout.write('no OTA jobs\n'); return }
      process.stdout.write(formatTable(['JOB', 'CREATED', 'DEVICE', 'VERSION', 'STATE', 'BYTES', 'REASON'], jobs.map((j) => [
        String(j.id), localTime(j.createdAt), j.device, `${j.previousVersion ?? '?'} -> ${j.version}`, j.state, `${j.offset}/${j.size}`, j.reason ?? '',
      ])))
    })
}
