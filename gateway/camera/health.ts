// The camera's part of /healthz: an enabled camera whose source is dead degrades the gateway (it never fails it).
import type { CameraStatus } from './service.ts'

export function cameraHealthReasons(s: CameraStatus, now: number): string[] {
  if (!s.enabled || s.state !== 'dead') return []
  const secs = Math.max(0, Math.round((now - Date.parse(s.since)) / 1000))
  return [`camera source dead for ${secs} s (${s.reason ?? 'unknown reason'}; restarted ${s.restarts} times)`]
}
