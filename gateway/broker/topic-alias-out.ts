// MQTT 5 topic aliases the gateway assigns on what it sends to one connection (MQTT 5.0 section 3.3.2.3.4), up to the
// Topic Alias Maximum the client sent in CONNECT. Pure: the caller puts the result on the wire in wire order.

/** A topic sent with an alias costs 3 bytes of property; sent as "" + alias it saves its length minus those 3. */
const ALIAS_COST = 3
/**
 * Shortest topic that gets an alias: its second send carries topic + alias (3 bytes more), every later one saves at
 * least 4 bytes, so by its third send the alias has paid for itself.
 */
const MIN_TOPIC_LENGTH = 2 * ALIAS_COST + 1
/** Topics sent once, remembered to recognise a second send (forgotten together when full: a bounded memory). */
const SEEN_MAX = 256

/**
 * Per connection: a topic gets an alias the second time it is sent (a topic sent once costs nothing), while aliases
 * are free; an assigned alias is never moved to another topic (no churn when more topics are in use than aliases).
 */
export class TopicAliasesOut {
  private readonly aliases = new Map<string, number>()
  private seen: Set<string> | null = new Set()

  constructor(private readonly max: number) {
    if (max <= 0) this.seen = null
  }

  /** Aliases assigned so far. */
  get size(): number { return this.aliases.size }

  /**
   * How to send `topic`: 0, as it is; n > 0, as an empty topic with alias n; n < 0, as the topic with alias -n
   * (its first use: the client learns the alias from it).
   */
  use(topic: string): number {
    const known = this.aliases.get(topic)
    if (known !== undefined) return known
    const seen = this.seen
    // UTF-16 length <= byte length: a topic this long in characters is at least as long in bytes
    if (seen === null || topic.length < MIN_TOPIC_LENGTH) return 0
    if (!seen.has(topic)) {
      if (seen.size >= SEEN_MAX) seen.clear()
      seen.add(topic)
      return 0
    }
    const alias = this.aliases.size + 1
    this.aliases.set(topic, alias)
    seen.delete(topic)
    // all aliases given out: nothing more to recognise
    if (alias >= this.max) this.seen = null
    return -alias
  }
}
