// `edgeway doctor`'s camera check: what commonly stops an enabled camera on an edge box (the pipeline's program not
// installed, the video device missing or not readable by the service user). Returns the doctor's result shape.
import { accessSync, constants, existsSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import type { CameraConfig } from './config.ts'

export interface CameraCheck { name: string; ok: boolean; level: 'ok' | 'warn' | 'fail'; detail: string; fix?: string }

/** The executable `cmd` runs as (absolute, relative, or found on PATH), or null. */
export function findExecutable(cmd: string, path: string): string | null {
  const candidates = cmd.includes('/') ? [cmd] : path.split(delimiter).filter(Boolean).map((d) => join(d, cmd))
  for (const c of candidates) {
    try { accessSync(c, constants.X_OK); return c } catch { /* next */ }
  }
  return null
}

export function checkCamera(c: CameraConfig, path = process.env.PATH ?? ''): CameraCheck {
  const r = (level: CameraCheck['level'], detail: string, fix?: string): CameraCheck => ({ name: 'camera', ok: level !== 'fail', level, detail, ...(fix ? { fix } : {}) })
  if (!c.enabled) return r('ok', 'camera off (camera.enabled is false)')
  const cmd = c.command[0]!
  if (!findExecutable(cmd, path)) {
    return r('fail', `the camera command "${cmd}" is not installed or not executable`, cmd.endsWith('ffmpeg') ? 'apt-get install -y ffmpeg' : 'install it or fix camera.command')
  }
  for (const dev of c.command.filter((a) => a.startsWith('/dev/'))) {
    if (!existsSync(dev)) return r('fail', `camera device ${dev} (camera.command) is not present`, 'plug the camera in, or fix camera.command (ls /dev/video*)')
    try { accessSync(dev, constants.R_OK | constants.W_OK) } catch {
      return r('fail', `camera device ${dev} is not readable by this user`, 'add the service user to the video group (systemctl edit edgeway: SupplementaryGroups=dialout video)')
    }
  }
  return r('ok', `camera source: ${cmd} -> RTP on 127.0.0.1:${c.rtpPort}`)
}
