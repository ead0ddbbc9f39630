// Pure XMPP bridge code: stanza building/parsing (as strings), chat-command parsing, allowlist and presence rhythm.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { serialize, parseIncoming, presence, chat, errorReply, pubsubPublish, pubsubCreate, parseJid, bareJid, stanzaError, publishErrorOutcome, discoFeatures, el, rosterSuggestion, type XmlNode } from '../bridges/xmpp/stanza.ts'
import { parseChat, parseArgs, summary, resultReply, getReply, statusReply, alertChat } from '../bridges/xmpp/chat.ts'
import { allowed, jidMatches, blockedBy, Rhythm } from '../bridges/xmpp/policy.ts'
import { xmppSection } from '../bridges/xmpp/config.ts'
import { nodeFor } from '../bridges/xmpp/pubsub.ts'

test('outgoing stanzas serialize to the expected XML, escaping text and attributes and dropping control characters', () => {
  assert.equal(serialize(presence('d1@dev.example', 'alice@example.org', { show: 'away', status: 'temp=21 <ok> & "fine"' })),
    '<presence from="d1@dev.example" to="alice@example.org"><show>away</show><status>temp=21 &lt;ok&gt; &amp; &quot;fine&quot;</status></presence>')
  assert.equal(serialize(presence('d1@dev.example', 'alice@example.org', { type: 'unavailable' })), '<presence from="d1@dev.example" to="alice@example.org" type="unavailable"/>')
  assert.equal(serialize(chat('d1@x', 'a@y/r', 'hi\u0001 there', 't1')), '<message from="d1@x" to="a@y/r" type="chat"><body>hi there</body><thread>t1</thread></message>')
  assert.equal(serialize(errorReply('message', 'm1', 'd@x', 'a@y', 'auth', 'forbidden', "a@y may not")),
    '<message from="d@x" to="a@y" type="error" id="m1"><error type="auth"><forbidden xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">a@y may not</text></error></message>')
  assert.equal(serialize(pubsubPublish('pubsub.x', 'edgeway/gw/d1', 'gw:d1:7', '{"a":1}')),
    '<iq type="set" to="pubsub.x"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="edgeway/gw/d1"><item id="gw:d1:7"><json xmlns="urn:xmpp:json:0">{&quot;a&quot;:1}</json></item></publish></pubsub></iq>')
  assert.equal(serialize(pubsubCreate('pubsub.x', 'n')), '<iq type="set" to="pubsub.x"><pubsub xmlns="http://jabber.org/protocol/pubsub"><create node="n"/></pubsub></iq>')
  assert.equal(serialize(rosterSuggestion([{ jid: 'd1@dev.x', name: 'd1', group: 'edgeway gw' }])),
    '<x xmlns="http://jabber.org/protocol/rosterx"><item action="add" jid="d1@dev.x" name="d1"><group>edgeway gw</group></item></x>')
  assert.match(serialize(pubsubCreate('pubsub.x', 'n', 500)), /<field var="pubsub#max_items"><value>500<\/value><\/field>/)
})

test('incoming stanzas are classified; malformed ones come back as invalid with a reason', () => {
  const p = parseIncoming(el('presence', { from: 'Alice@Example.org/phone', to: 'D1@dev.example', type: 'subscribe' }))
  assert.deepEqual(p, { kind: 'presence', type: 'subscribe', from: { local: 'alice', domain: 'example.org', resource: 'phone' }, to: { local: 'd1', domain: 'dev.example', resource: null }, id: undefined })
  const m = parseIncoming(el('message', { from: 'a@b/r', to: 'd@c', type: 'chat', id: 'x' }, el('body', {}, 'get ', 'temp'), el('thread', {}, 'th')))
  assert.equal(m.kind === 'message' && m.body, 'get temp')
  assert.equal(m.kind === 'message' && m.thread, 'th')
  assert.equal(parseIncoming(el('presence', { from: 'a@b', to: 'd@c', type: 'bogus' })).kind, 'invalid')
  assert.match((parseIncoming(el('message', { to: 'd@c' })) as { reason: string }).reason, /missing or malformed "from"/)
  assert.equal(parseIncoming(el('iq', { from: 'a@b', to: 'c', type: 'get' })).kind, 'invalid', 'iq without id')
  assert.equal(parseIncoming(el('iq', { type: 'result', id: '1' })).kind, 'iq-reply')
  assert.equal(parseIncoming(el('foo', { from: 'a@b', to: 'c' })).kind, 'invalid')
  assert.equal(parseJid('@x'), null)
  assert.equal(parseJid('a@b@c'), null)
  assert.equal(bareJid(parseJid('A@B/c')!), 'a@b')
  const err: XmlNode = el('iq', { type: 'error' }, el('error', { type: 'cancel' }, el('item-not-found', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' })))
  assert.deepEqual(stanzaError(err), { type: 'cancel', condition: 'item-not-found', text: '' })
  assert.equal(publishErrorOutcome('payload-too-big', 'modify'), 'rejected')
  assert.equal(publishErrorOutcome('internal-server-error', 'cancel'), 'released')
  assert.equal(publishErrorOutcome('resource-constraint', 'wait'), 'released')
  assert.deepEqual(discoFeatures(el('query', {}, el('feature', { var: 'a' }), el('identity', {}), el('feature', { var: 'b' }))), ['a', 'b'])
  assert.equal(nodeFor('edgeway/{gateway}/{device}', 'gw', 'd1'), 'edgeway/gw/d1')
})

test('chat commands parse into gateway commands, device commands with arguments, or a helpful unknown', () => {
  assert.deepEqual(parseChat('  HELP '), { kind: 'help' })
  assert.deepEqual(parseChat('get temperature'), { kind: 'get', metric: 'temperature' })
  assert.equal(parseChat('get').kind, 'unknown')
  assert.deepEqual(parseChat('set led 1'), { kind: 'device', name: 'set', args: { name: 'led', value: 1 } })
  assert.deepEqual(parseChat('set mode eco mode'), { kind: 'device', name: 'set', args: { name: 'mode', value: 'eco mode' } })
  assert.deepEqual(parseChat('reboot'), { kind: 'device', name: 'reboot', args: null })
  assert.deepEqual(parseChat('ping x=1 on=true s=hi'), { kind: 'device', name: 'ping', args: { x: 1, on: true, s: 'hi' } })
  assert.deepEqual(parseChat('move {"x":[1,2]}'), { kind: 'device', name: 'move', args: { x: [1, 2] } })
  assert.deepEqual(parseArgs('hello world'), 'hello world')
  const u = parseChat('héllo!')
  assert.equal(u.kind, 'unknown')
  assert.equal(parseChat('').kind, 'unknown')
})

test('reply texts: summaries are bounded, results and errors read well', () => {
  assert.equal(summary({ t: 21.5678, on: true, s: 'x' }), 't=21.568 on=true s=x')
  assert.ok(summary(Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`metric${i}`, i]))).length <= 122)
  assert.equal(resultReply({ id: '1', device: 'd', name: 'ping', ok: true, result: { a: 1 } }), 'ping: {"a":1}')
  assert.equal(resultReply({ id: '1', device: 'd', name: 'x', ok: false, code: 'offline', error: 'off' }), 'x: the device is offline, try again when it is back')
  const v = { online: true, link: 'mqtt', lastAt: 1000, intervalMs: 2000, metrics: { t: 1 }, lateness: 'away' as const }
  assert.equal(getReply('d', 't', v), 't = 1')
  assert.match(getReply('d', 'u', v), /known: t/)
  assert.match(statusReply('d', v, 3000), /^d: online, readings overdue \(mqtt\)\nlast reading 2 s ago/)
  // Alert texts come from the alerts engine (test/alerts-rules.test.ts); the bridge only marks raise and clear.
  assert.equal(alertChat({ type: 'raised', text: 'd: t = 31 is above 30' }), '⚠️ d: t = 31 is above 30')
  assert.equal(alertChat({ type: 'cleared', text: 'd: t = 29 is back in range' }), '✅ d: t = 29 is back in range')
})

test('allowlist: JIDs, whole domains, "*", per device and per group; commands can be withheld; blocking by JID or domain', () => {
  const cfg = {
    groups: { lab: ['d2', 'd3'] },
    allow: [
      { jids: ['alice@example.org'], commands: true },
      { jids: ['ops.example.com'], groups: ['lab'], commands: true },
      { jids: ['*'], devices: ['public'], commands: false },
    ],
  }
  assert.ok(allowed(cfg, 'alice@example.org', 'any', 'command'))
  assert.ok(allowed(cfg, 'bob@ops.example.com', 'd3', 'command'))
  assert.ok(!allowed(cfg, 'bob@ops.example.com', 'd1', 'subscribe'))
  assert.ok(!allowed(cfg, 'bob@evil.ops.example.com', 'd2', 'subscribe'), 'a domain does not match its subdomains')
  assert.ok(allowed(cfg, 'x@y', 'public', 'subscribe'))
  assert.ok(!allowed(cfg, 'x@y', 'public', 'command'))
  assert.ok(!allowed({ groups: {}, allow: [] }, 'a@b', 'd', 'subscribe'), 'empty allowlist: nobody')
  assert.ok(jidMatches('Example.org', 'a@example.org'))
  assert.ok(blockedBy(['spam.example'], 'x@spam.example'))
  assert.ok(!blockedBy(['a@b'], 'c@b'))
})

test('rhythm: away after awayFactor usual intervals, xa after xaFactor', () => {
  const r = new Rhythm()
  assert.equal(r.lateness(0, 3, 10), null)
  for (let t = 0; t <= 10000; t += 1000) r.note(t)
  assert.equal(r.intervalMs, 1000)
  assert.equal(r.lateness(12000, 3, 10), null)
  assert.equal(r.lateness(13500, 3, 10), 'away')
  assert.equal(r.lateness(21000, 3, 10), 'xa')
})

const msgs = (issues: { message: string }[] | undefined): string => (issues ?? []).map((i) => i.message).join('\n')

test('config: disabled by default; component and client modes need their credentials; unknown groups are named', () => {
  assert.equal(xmppSection.parse({}).enabled, false)
  const bad = xmppSection.safeParse({ enabled: true })
  assert.ok(!bad.success)
  assert.match(msgs(bad.error.issues), /component mode needs component.domain and component.secret/)
  assert.match(msgs(xmppSection.safeParse({ enabled: true, mode: 'client' }).error?.issues), /client mode needs client.jid and client.password/)
  assert.match(msgs(xmppSection.safeParse({ allow: [{ jids: ['a@b'], groups: ['nope'] }] }).error?.issues), /unknown group "nope"/)
  assert.match(msgs(xmppSection.safeParse({ allow: [{ jids: ['a b'] }] }).error?.issues), /a bare JID/)
  assert.match(msgs(xmppSection.safeParse({ enabled: true, component: { domain: 'd', secret: 's' }, pubsub: { enabled: true } }).error?.issues), /pubsub needs the service JID/)
})
