// MQTT.js clients for tests, with promise helpers.
import mqtt, { type MqttClient, type IClientOptions, type IPublishPacket } from 'mqtt'

export type { MqttClient }

/** Resolves with the CONNACK's session-present flag; rejects if the connection fails or closes first. */
function connack(c: MqttClient): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    c.once('connect', (p) => resolve(p.sessionPresent))
    c.once('error', (e) => { c.end(true); reject(e) })
    c.once('close', () => reject(new Error('closed before connack')))
  })
}

export async function connect(url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  await connack(c)
  return c
}

/** Resolves with the connack error (return code) when the broker refuses the connection. */
export async function connectRefused(url: string, opts: IClientOptions = {}): Promise<{ code: number | undefined; message: string }> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  return await new Promise((resolve, reject) => {
    c.once('connect', () => { c.end(true); reject(new Error('connection was accepted')) })
    c.once('error', (e: Error & { code?: number }) => { c.end(true); resolve({ code: e.code, message: e.message }) })
  })
}

/**
 * Connects with the message collector attached before CONNACK: a resumed session's queued
 * messages can arrive in the same TCP read as the CONNACK and be emitted before an `await
 * connect()` resumes, so a collector attached afterwards would miss them.
 */
export async function connectCollecting(url: string, opts: IClientOptions = {}): Promise<{ client: MqttClient; got: IPublishPacket[]; sessionPresent: boolean }> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  const got = collect(c)
  return { client: c, got, sessionPresent: await connack(c) }
}

export function collect(c: MqttClient): IPublishPacket[] {
  const got: IPublishPacket[] = []
  c.on('message', (_t, _p, packet) => { got.push(packet) })
  return got
}

/** MQTT.js's end() can wait forever on a connection the peer already dropped: bound it. */
export async function endClient(c: MqttClient): Promise<void> {
  let t: NodeJS.Timeout | undefined
  await Promise.race([
    c.endAsync(true).catch(() => undefined),
    new Promise<void>((resolve) => { t = setTimeout(resolve, 1000) }),
  ])
  clearTimeout(t)
}

export async function end(...cs: MqttClient[]): Promise<void> {
  await Promise.all(cs.map(endClient))
}
