// `edgeway xmpp block|unblock|blocked`: the gateway-side block list, in <dataDir>/xmpp.db. Safe while the gateway
// runs: it reads the list on every stanza, so a change applies to the next one.
import type { Command, Option } from 'commander'
import { XmppStore, xmppDbPath } from './store.ts'
import { parseJid, bareJid } from './stanza.ts'

/** A bare JID or a whole domain, lowercased; a resource is dropped (blocking is per account or per domain). */
function normalise(input: string): string | null {
  const j = parseJid(input.trim())
  return j ? bareJid(j) : null
}

/** What the commands read of the config file (app/config/schema.ts's Config has it). */
interface XmppCliConfig { gateway: { dataDir: string }; xmpp: { blocked: readonly string[] } }

export function registerXmppCli(program: Command, load: (file: string | undefined) => XmppCliConfig, configOpt: () => Option): void {
  const xmpp = program.command('xmpp').description('XMPP bridge: block list')
  const withStore = (opts: { config?: string }, fn: (s: XmppStore, c: XmppCliConfig) => void): void => {
    const c = load(opts.config)
    const s = new XmppStore(xmppDbPath(c.gateway.dataDir))
    s.open()
    try { fn(s, c) } finally { s.close() }
  }
  const jidArg = (raw: string): string => {
    const j = normalise(raw)
    if (!j) { process.stderr.write(`edgeway: "${raw}" is not a JID or domain\n`); process.exit(2) }
    return j
  }
  xmpp.command('block').argument('<jid>', 'bare JID (user@domain) or a whole domain').addOption(configOpt())
    .description('block a JID or domain: no presence, no messages, commands refused (applies at once, also while running)')
    .action((raw: string, opts: { config?: string }) => withStore(opts, (s) => {
      const j = jidArg(raw)
      process.stdout.write(s.block(j) ? `blocked ${j}\n` : `${j} was already blocked\n`)
    }))
  xmpp.command('unblock').argument('<jid>').addOption(configOpt()).description('remove a JID or domain from the block list')
    .action((raw: string, opts: { config?: string }) => withStore(opts, (s, c) => {
      const j = jidArg(raw)
      if (s.unblock(j)) process.stdout.write(`unblocked ${j}\n`)
      else if (c.xmpp.blocked.map((b) => b.toLowerCase()).includes(j)) { process.stderr.write(`edgeway: ${j} is blocked by the config file (xmpp.blocked), not by the CLI\n`); process.exitCode = 1 }
      else { process.stderr.write(`edgeway: ${j} is not blocked\n`); process.exitCode = 1 }
    }))
  xmpp.command('blocked').addOption(configOpt()).option('--json', 'JSON output').description('list blocked JIDs and domains (CLI and config)')
    .action((opts: { config?: string; json?: boolean }) => withStore(opts, (s, c) => {
      const rows = [...s.blocked().map((jid) => ({ jid, source: 'cli' })), ...c.xmpp.blocked.map((jid) => ({ jid: jid.toLowerCase(), source: 'config' }))]
      if (opts.json) { process.stdout.write(JSON.stringify(rows, null, 2) + '\n'); return }
      if (rows.length === 0) { process.stdout.write('nothing is blocked\n'); return }
      for (const r of rows) process.stdout.write(`${r.jid}${r.source === 'config' ? '  (config)' : ''}\n`)
    }))
}
