// The one file that imports rhea (the gateway's AMQP upstream and reply channel, and the fleet, go through it), and
// the one place that reaches past rhea's typings: its SASL mechanism object (test/amqp-rhea-adapter.test.ts).
import rhea from 'rhea'
import type { Container } from 'rhea'

export type { Connection, ConnectionOptions, Container, Delivery, EventContext, Message, Receiver, Sender, Session } from 'rhea'

export type SaslMechanism = 'PLAIN' | 'ANONYMOUS' | 'EXTERNAL'

/** rhea's typings give client_mechanisms() no methods; these are the ones its sasl module defines. */
interface ClientMechanisms { enable_plain(u: string, p: string): void; enable_anonymous(u?: string): void; enable_external(): void }

export function createContainer(id: string): Container {
  return rhea.create_container({ id })
}

/** A binary body as one AMQP data section (not an AMQP binary value). */
export function dataSection(body: Buffer): unknown {
  return rhea.message.data_section(body)
}

/** The `sasl_mechanisms` connection option (untyped in rhea) of a connection that logs in with `mech`. */
export function saslMechanisms(mech: SaslMechanism, username: string | undefined, password: string | undefined): object {
  const mechanisms = rhea.sasl.client_mechanisms() as unknown as ClientMechanisms
  for (const m of ['enable_plain', 'enable_anonymous', 'enable_external'] as const) {
    if (typeof mechanisms[m] !== 'function') throw new Error(`rhea changed: sasl.client_mechanisms() has no ${m}() (bridges/amqp/rhea.ts)`)
  }
  if (mech === 'PLAIN') mechanisms.enable_plain(username ?? '', password ?? '')
  else if (mech === 'ANONYMOUS') mechanisms.enable_anonymous(username ?? 'anonymous')
  else mechanisms.enable_external()
  return mechanisms
}
