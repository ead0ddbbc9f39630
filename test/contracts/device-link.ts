// The DeviceLink contract (issue 12): one suite run against every link with a real device behind it. Commands go
// through a CommandRouter over DeviceLinks([link]), wired as the gateway wires it (app/main.ts), so the outcome each
// link gives is seen as the typed result a sender gets.
//
// What every link promises (gateway/links/device-link.ts):
//   truth     serves / isOnline / devices say what is so, before, while and after the device is connected;
//   presence  one online event when the device comes, one offline event when it goes (through the bus, for every
//             consumer: registry, dashboard, alerts, XMPP, AMQP);
//   commands  delivered while online, answered with a typed outcome: success, device error, timeout (delivered, no
//             answer by the deadline); never delivered when offline or already expired (refused: offline, expired);
//   scope     a command for a device the link does not serve is refused, not sent anywhere.
// The suite's tests run in order against one device (a simulated board is slow to build and boot).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { CommandRouter, type CommandResult } from '../../gateway/commands/router.ts'
import { DeviceLinks, type DeviceLink, type LinkCommand } from '../../gateway/links/device-link.ts'
import type { GatewayBus } from '../../gateway/events.ts'
import { scaled, waitFor } from '../helpers/net.ts'

export interface LinkCase { name: string; args: unknown }

export interface DeviceLinkHarness {
  link: DeviceLink
  /** The bus the link reports presence on. */
  bus: GatewayBus
  /** The device behind the link. */
  device: string
  /**
   * Whether devices() lists the device while it is offline: configured boards always are; the MQTT link knows only
   * the devices connected now (the registry knows the rest).
   */
  listedOffline: boolean
  /** The device comes (board powered and the link started / the MQTT client connects). */
  connect(): Promise<void>
  /** The device goes (board unplugged / the client's socket cut without DISCONNECT). */
  lose(): Promise<void>
  /** A command the device carries out, and what its result must be. */
  success: LinkCase & { check(result: unknown): void }
  /** A command the device refuses, and the error it must give. */
  deviceError: LinkCase & { error: RegExp }
  /** A command the device takes and never answers (`timeout` at its deadline), or why there can be none. */
  unanswered: (LinkCase & { why?: undefined }) | { why: string }
  /** A device this link does not serve, or why there is none. */
  unserved: { device: string } | { why: string }
  /** Results that come back out of band (MQTT's result topic) reach the router here. */
  routeResults?(router: CommandRouter): void
  close(): Promise<void>
}

interface Presence { online: boolean; device: string; link: string; reason?: string }

export function deviceLinkContract(name: string, make: () => Promise<DeviceLinkHarness>): void {
  describe(`DeviceLink contract: ${name}`, () => {
    let h: DeviceLinkHarness
    let router: CommandRouter
    const presence: Presence[] = []
    /** What reached link.command (the router must not call it for an offline device or an expired command). */
    const sent: string[] = []
    let n = 0
    const dispatch = (c: LinkCase, expiresAt?: number): Promise<CommandResult> =>
      router.dispatch({ id: `ct-${++n}`, device: h.device, name: c.name, args: c.args, ...(expiresAt !== undefined ? { expiresAt } : {}) })
    const of = (online: boolean): Presence[] => presence.filter((p) => p.device === h.device && p.online === online)

    before(async () => {
      h = await make()
      const link = h.link
      const counted: DeviceLink = {
        kind: link.kind,
        serves: (d) => link.serves(d),
        isOnline: (d) => link.isOnline(d),
        devices: () => link.devices(),
        command: (d: string, cmd: LinkCommand) => { sent.push(`${d}:${cmd.name}`); return link.command(d, cmd) },
      }
      const links = new DeviceLinks([counted])
      router = new CommandRouter({
        isKnown: (d) => d === h.device || links.devices().includes(d),
        isOnline: (d) => links.isOnline(d),
        send: (d, cmd) => links.command(d, cmd),
      }, { timeoutMs: scaled(5000) })
      h.routeResults?.(router)
      h.bus.on('deviceOnline', (e) => presence.push({ online: true, device: e.device, link: e.link }))
      h.bus.on('deviceOffline', (e) => presence.push({ online: false, device: e.device, link: e.link, reason: e.reason }))
    })
    after(async () => { router?.close(); await h?.close() })

    test('before the device comes: offline, served, no presence event; a command is refused as offline', async () => {
      assert.equal(h.link.isOnline(h.device), false)
      assert.equal(h.link.serves(h.device), true, 'the link is the way to its device')
      assert.equal(h.link.devices().includes(h.device), h.listedOffline, `devices() ${h.listedOffline ? 'lists' : 'does not list'} it while offline`)
      assert.deepEqual(presence, [])
      const r = await dispatch(h.success)
      assert.equal(r.ok, false)
      assert.equal(!r.ok && r.code, 'offline', JSON.stringify(r))
      assert.deepEqual(sent, [], 'nothing sent to an offline device')
    })

    test('the device comes: online, listed, one online event with the link\'s kind', async () => {
      await h.connect()
      await waitFor('online', () => h.link.isOnline(h.device), 30000)
      assert.ok(h.link.devices().includes(h.device))
      await waitFor('the online event', () => of(true).length > 0, 5000)
      // Readings and liveness keep coming: still exactly one event.
      await new Promise((r) => setTimeout(r, scaled(1500)))
      assert.deepEqual(of(true).map((p) => p.link), [h.link.kind], 'one online event, from this link')
      assert.deepEqual(of(false), [], 'no offline event')
    })

    test('a command is delivered and answered: success with the device\'s result', async () => {
      const r = await dispatch(h.success)
      assert.equal(r.ok, true, JSON.stringify(r))
      if (r.ok) h.success.check(r.result)
      assert.ok(sent.includes(`${h.device}:${h.success.name}`), 'it went through the link')
    })

    test('a command the device refuses: device_error with its reason', async () => {
      const r = await dispatch(h.deviceError)
      assert.equal(r.ok, false)
      assert.equal(!r.ok && r.code, 'device_error', JSON.stringify(r))
      assert.match(!r.ok ? r.error : '', h.deviceError.error)
    })

    test('deadlines: an expired command is refused before it reaches the device; an unanswered one times out', async () => {
      const before = sent.length
      const r = await dispatch(h.success, Date.now() - 1)
      assert.equal(!r.ok && r.code, 'expired', JSON.stringify(r))
      assert.equal(sent.length, before, 'not handed to the link')
      if (h.unanswered.why !== undefined) {
        // Said, not skipped: this link answers in-band at once, so no command can stay unanswered until its deadline.
        assert.ok(h.unanswered.why.length > 0)
        return
      }
      // One the device has and never answers: `timeout` at its deadline (`expired` is for one it never had).
      const u = h.unanswered
      const t0 = Date.now()
      const late = await dispatch(u, Date.now() + scaled(600))
      assert.equal(!late.ok && late.code, 'timeout', JSON.stringify(late))
      assert.ok(Date.now() - t0 >= scaled(500), 'at its deadline, not before')
      assert.ok(sent.includes(`${h.device}:${u.name}`), 'it was delivered')
    })

    test('a command for a device the link does not serve is refused', async () => {
      const links = new DeviceLinks([h.link])
      if ('why' in h.unserved) {
        // Said, not skipped: this link serves every device (the fallback); one nobody knows is refused as unknown.
        assert.ok(h.unserved.why.length > 0)
        const other = `${h.device}-nobody`
        assert.equal(h.link.serves(other), true)
        assert.equal(h.link.isOnline(other), false)
        const r = await router.dispatch({ id: `ct-${++n}`, device: other, name: h.success.name, args: h.success.args })
        assert.equal(!r.ok && r.code, 'unknown_device', JSON.stringify(r))
        return
      }
      const other = h.unserved.device
      assert.equal(h.link.serves(other), false)
      assert.equal(h.link.isOnline(other), false)
      assert.ok(!h.link.devices().includes(other))
      await assert.rejects(links.command(other, { id: 'x', name: h.success.name, args: h.success.args }), /no device link serves/)
      await assert.rejects(h.link.command(other, { id: 'y', name: h.success.name, args: h.success.args }), 'the link itself refuses it too')
      const r = await router.dispatch({ id: `ct-${++n}`, device: other, name: h.success.name, args: h.success.args })
      assert.equal(!r.ok && r.code, 'unknown_device', JSON.stringify(r))
    })

    test('the device goes: offline, one offline event; a command is refused as offline and not sent', async () => {
      await h.lose()
      await waitFor('offline', () => !h.link.isOnline(h.device), 15000)
      await waitFor('the offline event', () => of(false).length > 0, 5000)
      assert.equal(h.link.devices().includes(h.device), h.listedOffline)
      await new Promise((r) => setTimeout(r, scaled(1500)))
      assert.equal(of(false).length, 1, `one offline event, got ${JSON.stringify(of(false))}`)
      assert.equal(of(true).length, 1, 'and no new online event')
      assert.ok(of(false)[0]!.reason, 'with a reason')
      const before = sent.length
      const r = await dispatch(h.success)
      assert.equal(!r.ok && r.code, 'offline', JSON.stringify(r))
      assert.equal(sent.length, before, 'not handed to the link')
      // Asked directly, the link never reports a success for a device that is gone.
      const direct = await h.link.command(h.device, { id: 'direct', name: h.success.name, args: h.success.args }).catch((e: Error) => e)
      assert.ok(direct instanceof Error || direct.kind === 'sent' || !direct.ok, `no success while offline: ${JSON.stringify(direct)}`)
    })
  })
}
