// What aedes hands its persistence and what the persistence hands back: the shapes at the module boundary, shared by
// the store, its adapter to aedes-persistence's memory store and the tests.

export type QoS = 0 | 1 | 2

/** What the persistence needs of an aedes client: its id (aedes also passes `{ id }` literals). */
export interface PersistenceClient {
  readonly id: string
}

/** What the persistence needs of the broker: its id (stamped on wills as `brokerId`). */
export interface PersistenceBroker {
  readonly id: string
}

/** An MQTT packet as aedes hands it to the persistence (aedes-packet Packet, QoSPacket, PubRel ...). */
export interface PersistencePacket {
  cmd?: string
  topic?: string
  payload?: Buffer | string
  qos?: QoS
  retain?: boolean
  dup?: boolean
  messageId?: number
  brokerId?: string
  brokerCounter?: number
  clientId?: string
  nl?: boolean
  properties?: object
  messageExpiry?: number
}

/** A will as stored: putWill stamps the owning broker and the client on it. */
export interface PersistenceWill extends PersistencePacket {
  brokerId: string
  clientId: string
}

/** A subscription of one client, as aedes adds it and as subscriptionsByClient returns it. */
export interface PersistenceSubscription {
  topic: string
  qos: QoS
  rh?: number
  rap?: boolean
  nl?: boolean
  /** MQTT 5 Subscription Identifier, only present when the subscription carried one. */
  subscriptionIdentifier?: number
}

/** A QoS>0 subscription matching a topic (subscriptionsByTopic). */
export interface TopicSubscription {
  clientId: string
  topic: string
  qos: QoS
  rh?: number
  rap?: boolean
  nl?: boolean
}

export interface OfflineCount {
  subsCount: number
  clientsCount: number
}

/** brokerId -> last heartbeat (ms epoch), as in aedes' `broker.brokers`. */
export type BrokerHeartbeats = Readonly<Record<string, number>>
