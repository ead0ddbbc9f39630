import net from 'node:net';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

/** Ask the kernel for a free loopback port (tiny race until the target binds it). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

function tryConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      s.removeAllListeners();
      s.on('error', () => undefined);
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export interface WaitOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** Polled each round; a returned string aborts the wait with that message (e.g. child exited). */
  abort?: () => string | undefined;
}

/** Poll a TCP connect every intervalMs until it succeeds; resolves with the time it took (ms). */
export async function waitForTcp(host: string, port: number, opts: WaitOptions): Promise<number> {
  const t0 = performance.now();
  const interval = opts.intervalMs ?? 5;
  for (;;) {
    const reason = opts.abort?.();
    if (reason !== undefined) throw new Error(reason);
    const roundStart = performance.now();
    if (await tryConnect(host, port)) return performance.now() - t0;
    if (performance.now() - t0 > opts.timeoutMs) {
      throw new Error(`no TCP listener on ${host}:${port} after ${opts.timeoutMs} ms`);
    }
    const left = interval - (performance.now() - roundStart);
    if (left > 0) await sleep(left);
  }
}

function httpStatus(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

/** Poll GET url until it answers 200; resolves with the time it took (ms). */
export async function waitForHttp200(url: string, opts: WaitOptions): Promise<number> {
  const t0 = performance.now();
  const interval = opts.intervalMs ?? 20;
  let last: number | undefined;
  for (;;) {
    const reason = opts.abort?.();
    if (reason !== undefined) throw new Error(reason);
    last = await httpStatus(url);
    if (last === 200) return performance.now() - t0;
    if (performance.now() - t0 > opts.timeoutMs) {
      throw new Error(`GET ${url} not 200 after ${opts.timeoutMs} ms (last: ${last ?? 'no answer'})`);
    }
    await sleep(interval);
  }
}
