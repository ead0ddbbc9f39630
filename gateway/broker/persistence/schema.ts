// The broker persistence's SQLite side: tables, migration and every statement, over the gateway's one SQLite module.
// Knows rows, not aedes: the store maps packets to these columns.
import type { Db, Statement } from '../../store/sqlite.ts'

export const SCHEMA_VERSION = 2

// Orders: aedes-persistence's memory store keeps Maps / arrays in insertion order, and an entry that is overwritten
// keeps its place. Rows are therefore upserted (ON CONFLICT DO UPDATE keeps the rowid) and read back by rowid. Table
// names are prefixed so the file could be shared with other gateway stores.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS mqtt_retained (
  topic   TEXT PRIMARY KEY,
  packet  TEXT NOT NULL,
  payload BLOB
);
CREATE TABLE IF NOT EXISTS mqtt_sub_clients (
  seq       INTEGER PRIMARY KEY,
  client_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS mqtt_subscriptions (
  seq       INTEGER PRIMARY KEY,
  client_id TEXT NOT NULL,
  topic     TEXT NOT NULL,
  qos       INTEGER NOT NULL,
  rh        TEXT,
  rap       TEXT,
  nl        TEXT,
  subscription_identifier INTEGER,
  UNIQUE (client_id, topic)
);
CREATE TABLE IF NOT EXISTS mqtt_outgoing (
  seq            INTEGER PRIMARY KEY,
  client_id      TEXT NOT NULL,
  broker_id      TEXT,
  broker_counter INTEGER,
  message_id     INTEGER,
  has_message_id INTEGER NOT NULL,
  packet         TEXT NOT NULL,
  payload        BLOB
);
CREATE INDEX IF NOT EXISTS mqtt_outgoing_by_client ON mqtt_outgoing (client_id, seq);
CREATE TABLE IF NOT EXISTS mqtt_incoming (
  client_id  TEXT NOT NULL,
  message_id TEXT NOT NULL,
  packet     TEXT NOT NULL,
  payload    BLOB,
  PRIMARY KEY (client_id, message_id)
);
CREATE TABLE IF NOT EXISTS mqtt_wills (
  client_id TEXT PRIMARY KEY,
  broker_id TEXT,
  packet    TEXT NOT NULL,
  payload   BLOB
);
-- Who a client id's persistent session belongs to (the broker's principal key): only that identity may resume it.
CREATE TABLE IF NOT EXISTS mqtt_session_owners (
  client_id TEXT PRIMARY KEY,
  owner     TEXT NOT NULL
);
-- MQTT 5 Session Expiry: when a disconnected session ends (ms epoch); no row: connected, or it never expires.
CREATE TABLE IF NOT EXISTS mqtt_session_expiry (
  client_id  TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL
);
`

export function migrate(db: Db): void {
  const version = db.pragma('user_version', { simple: true }) as number
  if (version > SCHEMA_VERSION) {
    throw new Error(`broker persistence schema version ${version} is newer than this gateway (${SCHEMA_VERSION})`)
  }
  db.transaction(() => {
    db.exec(SCHEMA)
    db.pragma(`user_version = ${SCHEMA_VERSION}`)
  })()
}

/** A value better-sqlite3 can bind, compared with `IS` the way the memory store compares with `===`. */
export type SqlKey = string | number | null
export function sqlKey(value: unknown): SqlKey {
  return typeof value === 'string' || typeof value === 'number' ? value : null
}

export type Blob = Buffer | null

export interface PacketRow { packet: string; payload: Blob }
export interface ClientPacketRow extends PacketRow { client_id: string }
export interface SubRow {
  topic: string
  qos: number
  rh: string | null
  rap: string | null
  nl: string | null
  subscription_identifier: number | null
}
export interface OutgoingRow extends ClientPacketRow {
  message_id: number | null
  has_message_id: number
}
export interface OutgoingMatch { seq: number; broker_id: string | null }
/** An outgoing row's columns after client_id: broker_id, broker_counter, message_id, has_message_id, packet, payload. */
export type OutgoingColumns = [SqlKey, SqlKey, SqlKey, number, string, Blob]

export interface Statements {
  retainedUpsert: Statement<[string, string, Blob]>
  retainedDelete: Statement<[string]>
  subClientAdd: Statement<[string]>
  subClientDropIfEmpty: Statement<[string, string]>
  subClientDelete: Statement<[string]>
  subUpsert: Statement<[string, string, number, string | null, string | null, string | null, number | null]>
  subDelete: Statement<[string, string]>
  subDeleteClient: Statement<[string]>
  subTopics: Statement<[], string>
  outInsert: Statement<[string, ...OutgoingColumns]>
  outFindForUpdate: Statement<[string, SqlKey, SqlKey, SqlKey, SqlKey], OutgoingMatch>
  outSetMessageId: Statement<[SqlKey, number]>
  outReplace: Statement<[...OutgoingColumns, number]>
  outDeleteByMessageId: Statement<[string, SqlKey]>
  incomingUpsert: Statement<[string, string, string, Blob]>
  incomingDelete: Statement<[string, string]>
  incomingDeleteClient: Statement<[string]>
  willUpsert: Statement<[string, SqlKey, string, Blob]>
  willDelete: Statement<[string]>
  ownerUpsert: Statement<[string, string]>
  ownerDelete: Statement<[string]>
  expiryUpsert: Statement<[string, number]>
  expiryDelete: Statement<[string]>
  outgoingDeleteClient: Statement<[string]>
  storedClientIds: Statement<[], string>
  // read once, at setup (in the order the memory store must get them back)
  retainedAll: Statement<[], PacketRow>
  subClientsAll: Statement<[], string>
  subsOf: Statement<[string], SubRow>
  outgoingAll: Statement<[], OutgoingRow>
  incomingAll: Statement<[], ClientPacketRow>
  ownersAll: Statement<[], { client_id: string; owner: string }>
  expiryAll: Statement<[], { client_id: string; expires_at: number }>
  willsAll: Statement<[], ClientPacketRow>
}

export function prepareStatements(db: Db): Statements {
  return {
    retainedUpsert: db.prepare(`INSERT INTO mqtt_retained (topic, packet, payload) VALUES (?, ?, ?)
      ON CONFLICT (topic) DO UPDATE SET packet = excluded.packet, payload = excluded.payload`),
    retainedDelete: db.prepare('DELETE FROM mqtt_retained WHERE topic = ?'),
    subClientAdd: db.prepare('INSERT OR IGNORE INTO mqtt_sub_clients (client_id) VALUES (?)'),
    subClientDropIfEmpty: db.prepare(`DELETE FROM mqtt_sub_clients WHERE client_id = ?
      AND NOT EXISTS (SELECT 1 FROM mqtt_subscriptions WHERE client_id = ?)`),
    subClientDelete: db.prepare('DELETE FROM mqtt_sub_clients WHERE client_id = ?'),
    subUpsert: db.prepare(`INSERT INTO mqtt_subscriptions (client_id, topic, qos, rh, rap, nl, subscription_identifier)
      VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (client_id, topic) DO UPDATE SET qos = excluded.qos, rh = excluded.rh, rap = excluded.rap,
        nl = excluded.nl, subscription_identifier = excluded.subscription_identifier`),
    subDelete: db.prepare('DELETE FROM mqtt_subscriptions WHERE client_id = ? AND topic = ?'),
    subDeleteClient: db.prepare('DELETE FROM mqtt_subscriptions WHERE client_id = ?'),
    subTopics: db.prepare<[], string>('SELECT DISTINCT topic FROM mqtt_subscriptions').pluck(),
    outInsert: db.prepare(`INSERT INTO mqtt_outgoing
      (client_id, broker_id, broker_counter, message_id, has_message_id, packet, payload) VALUES (?, ?, ?, ?, ?, ?, ?)`),
    // The memory store's outgoingUpdate loop, in SQL: the first queued entry that has the same brokerId
    // and brokerCounter, or a different brokerId and the same messageId (`IS` = null-safe `===`).
    outFindForUpdate: db.prepare(`SELECT seq, broker_id FROM mqtt_outgoing WHERE client_id = ?
      AND ((broker_id IS ? AND broker_counter IS ?) OR (broker_id IS NOT ? AND message_id IS ?))
      ORDER BY seq LIMIT 1`),
    outSetMessageId: db.prepare('UPDATE mqtt_outgoing SET message_id = ?, has_message_id = 1 WHERE seq = ?'),
    outReplace: db.prepare(`UPDATE mqtt_outgoing SET broker_id = ?, broker_counter = ?, message_id = ?,
      has_message_id = ?, packet = ?, payload = ? WHERE seq = ?`),
    outDeleteByMessageId: db.prepare(`DELETE FROM mqtt_outgoing WHERE seq =
      (SELECT seq FROM mqtt_outgoing WHERE client_id = ? AND message_id IS ? ORDER BY seq LIMIT 1)`),
    incomingUpsert: db.prepare(`INSERT INTO mqtt_incoming (client_id, message_id, packet, payload) VALUES (?, ?, ?, ?)
      ON CONFLICT (client_id, message_id) DO UPDATE SET packet = excluded.packet, payload = excluded.payload`),
    incomingDelete: db.prepare('DELETE FROM mqtt_incoming WHERE client_id = ? AND message_id = ?'),
    incomingDeleteClient: db.prepare('DELETE FROM mqtt_incoming WHERE client_id = ?'),
    willUpsert: db.prepare(`INSERT INTO mqtt_wills (client_id, broker_id, packet, payload) VALUES (?, ?, ?, ?)
      ON CONFLICT (client_id) DO UPDATE SET broker_id = excluded.broker_id, packet = excluded.packet,
        payload = excluded.payload`),
    willDelete: db.prepare('DELETE FROM mqtt_wills WHERE client_id = ?'),
    ownerUpsert: db.prepare(`INSERT INTO mqtt_session_owners (client_id, owner) VALUES (?, ?)
      ON CONFLICT (client_id) DO UPDATE SET owner = excluded.owner`),
    ownerDelete: db.prepare('DELETE FROM mqtt_session_owners WHERE client_id = ?'),
    expiryUpsert: db.prepare(`INSERT INTO mqtt_session_expiry (client_id, expires_at) VALUES (?, ?)
      ON CONFLICT (client_id) DO UPDATE SET expires_at = excluded.expires_at`),
    expiryDelete: db.prepare('DELETE FROM mqtt_session_expiry WHERE client_id = ?'),
    outgoingDeleteClient: db.prepare('DELETE FROM mqtt_outgoing WHERE client_id = ?'),
    storedClientIds: db.prepare<[], string>(`SELECT client_id FROM mqtt_sub_clients UNION SELECT client_id FROM mqtt_outgoing
      UNION SELECT client_id FROM mqtt_wills UNION SELECT client_id FROM mqtt_session_owners`).pluck(),
    retainedAll: db.prepare('SELECT packet, payload FROM mqtt_retained ORDER BY rowid'),
    subClientsAll: db.prepare<[], string>('SELECT client_id FROM mqtt_sub_clients ORDER BY seq').pluck(),
    subsOf: db.prepare(`SELECT topic, qos, rh, rap, nl, subscription_identifier
      FROM mqtt_subscriptions WHERE client_id = ? ORDER BY seq`),
    outgoingAll: db.prepare(`SELECT client_id, message_id, has_message_id, packet, payload
      FROM mqtt_outgoing ORDER BY client_id, seq`),
    incomingAll: db.prepare('SELECT client_id, packet, payload FROM mqtt_incoming ORDER BY rowid'),
    ownersAll: db.prepare('SELECT client_id, owner FROM mqtt_session_owners'),
    expiryAll: db.prepare('SELECT client_id, expires_at FROM mqtt_session_expiry'),
    willsAll: db.prepare('SELECT client_id, packet, payload FROM mqtt_wills ORDER BY rowid'),
  }
}
