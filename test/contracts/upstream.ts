// The Upstream contract (issue 12): one suite run against every implementation with its real peer, driven by the real
// Forwarder over an in-process outbox (outbox.ts), with a TCP relay (proxy.ts) between the upstream and the peer.
//
// What every upstream promises (gateway/upstream/types.ts, README "Upstreams"):
//   order     readings reach the peer in row order (per device always; across devices where the peer is one stream),
//             each settled exactly once, and only rows that were in flight are settled;
//   window    never more rows in flight than the upstream's credit allows, even when the peer stops answering;
//   refusal   a reading the peer refuses is reported the way the implementation documents (see Refusal);
//   link loss rows in flight when the link drops are given back, not settled (no ack came), and resent in row order
//             after the reconnect; nothing is lost, nothing settled twice;
//   down      while the link is down nothing is claimed from the outbox.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { Forwarder } from '../../gateway/upstream/forwarder.ts'
import { Metrics } from '../../gateway/metrics.ts'
import type { Upstream } from '../../gateway/upstream/types.ts'
import { MemoryOutbox } from './outbox.ts'
import type { TcpProxy } from './proxy.ts'
import { scaled, waitFor } from '../helpers/net.ts'

export interface UpstreamHarness {
  upstream: Upstream
  /** The most rows the upstream may have in flight (its configured maxInflight). */
  window: number
  /** The relay the upstream reaches its peer through. */
  proxy: TcpProxy
  /** Message ids as the peer got them, in arrival order (a resend shows up again). */
  arrived(): string[]
  /** Gets the peer ready to show these devices' readings (consumers, nodes, subscriptions); the link is up after it. */
  prepare(devices: string[]): Promise<void>
  close(): Promise<void>
}

/**
 * How a refusal by the peer shows. Each implementation documents its own:
 *   rejected        the peer's negative outcome is final: the row is dead-lettered, never acked.
 *   released        the peer's negative outcome is "not now": the row is offered again until the peer takes it.
 *   accepted-unseen the protocol has no negative ack: the row is acked although the peer dropped it.
 *   link-drop       the peer ends the link instead of answering: the row stays unsettled and is resent after each
 *                   reconnect until the peer takes it.
 */
export interface Refusal<H extends UpstreamHarness> {
  expect: 'rejected' | 'released' | 'accepted-unseen' | 'link-drop'
  /** Why this implementation shows it this way (printed with the test name). */
  why: string
  /** The device whose readings the peer refuses (the gateway id keeps names apart between tests). */
  device(gatewayId: string): string
  /** Makes the peer refuse that device's readings from now on. */
  refuse(h: H, device: string): Promise<void>
  /** Makes the peer take them again (released and link-drop: the row must then be accepted exactly once). */
  allow?(h: H, device: string): Promise<void>
  /**
   * Set (with the reason) when the refusal also holds back other devices' readings until it is lifted: a peer that
   * drops the whole link takes their unsettled rows with it each time. They must still all be accepted, once each,
   * after allow().
   */
  holdsOthers?: string
}

export interface UpstreamImplementation<H extends UpstreamHarness> {
  /** Starts the real peer, once per suite. */
  start(): Promise<void>
  stop(): Promise<void>
  /** A fresh upstream (messages ids `<gatewayId>:<device>:<seq>`) reaching the peer through a fresh relay. */
  make(gatewayId: string, outboxName: string): Promise<H>
  /** The peer is one ordered stream for all devices (one connection and destination), so row order holds across them. */
  globalOrder: boolean
  refusal: Refusal<H>
}

interface Run<H> { h: H; outbox: MemoryOutbox; forwarder: Forwarder; gw: string; downs: number }

const log = pino({ level: process.env.CONTRACT_LOG ?? 'silent' })

export function upstreamContract<H extends UpstreamHarness>(name: string, impl: UpstreamImplementation<H>): void {
  describe(`Upstream contract: ${name}`, () => {
    let n = 0
    const runs: Run<H>[] = []
    before(() => impl.start())
    after(async () => {
      for (const r of runs.splice(0)) await stopRun(r)
      await impl.stop()
    })

    async function run(): Promise<Run<H>> {
      // One upstream at a time: some peers take one connection per identity (an XMPP component domain).
      for (const old of runs.splice(0)) await stopRun(old)
      const gw = `ct${process.pid}x${++n}`
      const outbox = new MemoryOutbox('up', gw)
      const h = await impl.make(gw, outbox.upstream)
      assert.equal(h.upstream.name, outbox.upstream)
      const forwarder = new Forwarder(h.upstream, outbox, new Metrics(), log, { batchMax: 64, retryDelayMs: scaled(100) })
      const r: Run<H> = { h, outbox, forwarder, gw, downs: 0 }
      let was = false
      h.upstream.onChange(() => { const c = h.upstream.status().connected; if (was && !c) r.downs++; was = c })
      runs.push(r)
      await h.upstream.start()
      forwarder.start()
      return r
    }

    /**
     * One reading per device, acked, before the peer's answers are held: a peer with a destination per device (AMQP
     * sender links) needs an answer to open one, and the cases are about readings on an open link.
     */
    async function warmUp(r: Run<H>, devices: string[]): Promise<void> {
      for (const d of devices) r.outbox.add(d, 1)
      await waitFor('warm-up readings acked', () => allAcked(r.outbox), 15000)
    }

    const ids = (o: MemoryOutbox, device?: string): string[] => o.rows.filter((x) => device === undefined || x.device === device).map((x) => x.msgId)
    const mine = (r: Run<H>): string[] => { const own = new Set(ids(r.outbox)); return r.h.arrived().filter((id) => own.has(id)) }
    const allAcked = (o: MemoryOutbox): boolean => o.rows.every((x) => o.acked(x.rowId))
    /** Each row settled exactly once, as accepted, and only while it was in flight. */
    const settledOnce = (o: MemoryOutbox): void => {
      assert.deepEqual(o.doubles(), [], 'no row settled twice')
      assert.deepEqual(o.strays, [], 'no settle for a row that was not in flight')
      for (const x of o.rows) assert.deepEqual(o.settledOf(x.rowId).map((s) => s.outcome), ['accepted'], `row ${x.rowId} (${x.msgId})`)
    }

    test('order: readings reach the peer in order, each settled exactly once', async () => {
      const r = await run()
      const [a, b] = [`${r.gw}-a`, `${r.gw}-b`]
      await r.h.prepare([a, b])
      for (let i = 0; i < 60; i++) { r.outbox.add(a, 1); r.outbox.add(b, 1) }
      await waitFor('all 120 acked', () => allAcked(r.outbox), 30000)
      await waitFor('all 120 at the peer', () => new Set(mine(r)).size === 120, 10000)
      settledOnce(r.outbox)
      const got = mine(r)
      assert.equal(got.length, 120, 'no link loss: nothing was sent twice')
      for (const d of [a, b]) assert.deepEqual(got.filter((id) => id.startsWith(`${r.gw}:${d}:`)), ids(r.outbox, d), `per-device order of ${d}`)
      // Where the peer is one ordered stream, rows keep their global order; per-destination peers promise less.
      if (impl.globalOrder) assert.deepEqual(got, ids(r.outbox), 'row order across devices')
      assert.ok(r.outbox.maxInflight <= r.h.window, `at most ${r.h.window} in flight, saw ${r.outbox.maxInflight}`)
    })

    test('window: no more in flight than the upstream allows while the peer does not answer', async () => {
      const r = await run()
      const a = `${r.gw}-a`
      await r.h.prepare([a])
      await warmUp(r, [a])
      const w = r.h.window
      r.h.proxy.hold()
      r.outbox.add(a, 3 * w)
      await waitFor(`the window (${w}) at the peer`, () => mine(r).length >= 1 + w, 10000)
      // The peer has them, their acks are held: the upstream must wait, not send the rest.
      await new Promise((res) => setTimeout(res, scaled(700)))
      assert.equal(mine(r).length, 1 + w, `exactly the window reached the peer, got ${mine(r).length - 1}`)
      assert.equal(r.outbox.inflight.size, w, 'the window is claimed and unsettled')
      assert.equal(r.outbox.settlements.length, 1, 'nothing settled without the peer\'s answer')
      r.h.proxy.release()
      await waitFor('all acked once the answers flow', () => allAcked(r.outbox), 30000)
      settledOnce(r.outbox)
      await waitFor('all at the peer', () => mine(r).length >= r.outbox.rows.length, 10000)
      assert.ok(r.outbox.maxInflight <= w, `at most ${w} in flight, saw ${r.outbox.maxInflight}`)
      assert.deepEqual(mine(r), ids(r.outbox), 'in order, each once')
    })

    test(`refusal by the peer: ${impl.refusal.expect} (${impl.refusal.why}${impl.refusal.holdsOthers ? `; ${impl.refusal.holdsOthers}` : ''})`, async () => {
      const r = await run()
      const ok = `${r.gw}-a`
      const bad = impl.refusal.device(r.gw)
      await r.h.prepare([ok])
      await impl.refusal.refuse(r.h, bad)
      r.outbox.add(ok, 2)
      const [refused] = r.outbox.add(bad, 1)
      r.outbox.add(ok, 2)
      const others = r.outbox.rows.filter((x) => x.device === ok)
      const id = refused!.rowId
      const othersAcked = (): boolean => others.every((x) => r.outbox.acked(x.rowId))
      switch (impl.refusal.expect) {
        case 'rejected':
          await waitFor('the refused row dead-lettered', () => r.outbox.settledOf(id).length > 0, 15000)
          await waitFor('the other rows acked', othersAcked, 15000)
          assert.deepEqual(r.outbox.settledOf(id).map((s) => s.outcome), ['rejected'], 'dead-lettered once, never acked')
          assert.ok(r.outbox.settledOf(id)[0]!.reason, 'with the peer\'s reason')
          break
        case 'accepted-unseen':
          await waitFor('all acked', () => allAcked(r.outbox), 15000)
          await waitFor('the other rows at the peer', () => others.every((x) => mine(r).includes(x.msgId)), 10000)
          assert.deepEqual(r.outbox.settledOf(id).map((s) => s.outcome), ['accepted'], 'acked once: the protocol has no refusal')
          assert.ok(!mine(r).includes(refused!.msgId), 'the peer dropped it: it never arrived')
          break
        case 'released':
        case 'link-drop': {
          await waitFor('the refused row offered again', () => (r.outbox.claims.get(id) ?? 0) >= 2, 20000)
          if (!impl.refusal.holdsOthers) await waitFor('the other rows acked', othersAcked, 20000)
          assert.deepEqual(r.outbox.settledOf(id), [], 'not settled while the peer refuses it')
          if (impl.refusal.expect === 'link-drop') assert.ok(r.downs >= 1, 'the peer ended the link')
          assert.ok(impl.refusal.allow, 'a refusal that is retried needs allow()')
          await impl.refusal.allow!(r.h, bad)
          await waitFor('the refused row accepted once the peer takes it', () => r.outbox.acked(id), 20000)
          await waitFor('the other rows acked', othersAcked, 20000)
          await waitFor('and at the peer', () => mine(r).includes(refused!.msgId), 10000)
          assert.deepEqual(r.outbox.settledOf(id).map((s) => s.outcome), ['accepted'])
          break
        }
      }
      for (const x of others) assert.deepEqual(r.outbox.settledOf(x.rowId).map((s) => s.outcome), ['accepted'], `row ${x.rowId}`)
      assert.deepEqual(r.outbox.doubles(), [])
      assert.deepEqual(r.outbox.strays, [])
    })

    test('link loss: rows in flight are not settled, given back, and resent in row order after the reconnect', async () => {
      const r = await run()
      const [a, b] = [`${r.gw}-a`, `${r.gw}-b`]
      await r.h.prepare([a, b])
      const w = r.h.window
      await warmUp(r, [a, b])
      r.h.proxy.hold()
      for (let i = 0; i < w; i++) { r.outbox.add(a, 1); r.outbox.add(b, 1) }
      await waitFor('a full window in flight at the peer', () => r.outbox.inflight.size === w && mine(r).length >= 2 + w, 10000)
      const inFlight = [...r.outbox.inflight].sort((x, y) => x - y)
      const settledBefore = r.outbox.settlements.length
      const arrivedBefore = mine(r).length
      const accepted = r.h.proxy.accepted
      const releases = r.outbox.releases
      r.h.proxy.cut()
      await waitFor('the upstream saw the link go', () => r.downs >= 1, 10000)
      assert.ok(r.outbox.releases > releases, 'the forwarder gave the rows in flight back at the state change')
      assert.equal(r.outbox.settlements.length, settledBefore, 'no row settled without the peer\'s ack (the acks were held and cut)')
      await waitFor('reconnected and drained', () => allAcked(r.outbox), 30000)
      assert.ok(r.h.proxy.accepted > accepted, 'the upstream reconnected')
      settledOnce(r.outbox)
      // The peer's view may trail its acks (a PubSub notification goes out beside the IQ result).
      await waitFor('every row at the peer', () => r.outbox.rows.every((x) => mine(r).includes(x.msgId)), 10000)
      const got = mine(r)
      // After the reconnect the rows that were in flight come first, in row order (per device where the peer has
      // one destination per device).
      const resent = got.slice(arrivedBefore)
      const byId = new Map(r.outbox.rows.map((x) => [x.msgId, x]))
      const rowsAfter = resent.map((m) => byId.get(m)!.rowId)
      const firstSeen = rowsAfter.filter((id, i) => rowsAfter.indexOf(id) === i)
      const expectOrder = (ordered: number[]): void => assert.deepEqual(ordered, [...ordered].sort((x, y) => x - y), `resent in row order: ${ordered.join(',')}`)
      if (impl.globalOrder) {
        assert.deepEqual(firstSeen.slice(0, inFlight.length), inFlight, 'the rows in flight at the cut are resent first, in row order')
        expectOrder(firstSeen)
      } else {
        for (const d of [a, b]) expectOrder(firstSeen.filter((id) => r.outbox.rows[id - 1]!.device === d))
      }
    })

    test('link down: nothing is claimed while the peer is unreachable; everything goes once it is back', async () => {
      const r = await run()
      const a = `${r.gw}-a`
      await r.h.prepare([a])
      r.h.proxy.refuse(true)
      r.h.proxy.cut()
      await waitFor('the upstream saw the link go', () => r.downs >= 1, 10000)
      const claimedBefore = r.outbox.claims.size
      r.outbox.add(a, 10)
      await new Promise((res) => setTimeout(res, scaled(1500)))
      assert.equal(r.outbox.claims.size, claimedBefore, 'no claim while the link is down')
      assert.equal(r.h.upstream.credit(), 0, 'no credit while the link is down')
      assert.ok(r.h.upstream.status().lastError, 'the status says why')
      r.h.proxy.refuse(false)
      await waitFor('delivered after the reconnect', () => allAcked(r.outbox), 30000)
      settledOnce(r.outbox)
      await waitFor('all at the peer', () => mine(r).length >= r.outbox.rows.length, 10000)
      assert.deepEqual(mine(r), ids(r.outbox), 'in order, each once')
    })
  })
}

async function stopRun<H extends UpstreamHarness>(r: Run<H>): Promise<void> {
  r.forwarder.stop()
  await r.h.close()
}
