// Home Assistant's documented MQTT discovery keys and types per platform, as a table, and a checker for payloads
// (shared by the mapping's unit tests and the end-to-end test with an HA stand-in).
import assert from 'node:assert/strict'

// The documented configuration variables, from:
//   https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery (topic format, device, origin, availability)
//   https://www.home-assistant.io/integrations/sensor.mqtt/
//   https://www.home-assistant.io/integrations/binary_sensor.mqtt/
//   https://www.home-assistant.io/integrations/button.mqtt/
//   https://www.home-assistant.io/integrations/switch.mqtt/
// Type names: string, integer, boolean, list (array), map (object), template (a string).
type T = 'string' | 'integer' | 'boolean' | 'list' | 'map' | 'template'
const COMMON: Record<string, T> = {
  availability: 'list', availability_mode: 'string', availability_template: 'template', availability_topic: 'string',
  device: 'map', enabled_by_default: 'boolean', encoding: 'string', entity_category: 'string', icon: 'string',
  json_attributes_template: 'template', json_attributes_topic: 'string', name: 'string', default_entity_id: 'string',
  origin: 'map', qos: 'integer', unique_id: 'string', payload_available: 'string', payload_not_available: 'string',
}
const SCHEMA: Record<string, { required: string[]; keys: Record<string, T> }> = {
  sensor: {
    required: ['state_topic'],
    keys: { ...COMMON, device_class: 'string', expire_after: 'integer', force_update: 'boolean', last_reset_value_template: 'template',
      options: 'list', state_class: 'string', state_topic: 'string', suggested_display_precision: 'integer', unit_of_measurement: 'string', value_template: 'template' },
  },
  binary_sensor: {
    required: ['state_topic'],
    keys: { ...COMMON, device_class: 'string', expire_after: 'integer', force_update: 'boolean', off_delay: 'integer', payload_off: 'string',
      payload_on: 'string', state_topic: 'string', value_template: 'template' },
  },
  button: {
    required: ['command_topic'],
    keys: { ...COMMON, command_template: 'template', command_topic: 'string', device_class: 'string', payload_press: 'string', retain: 'boolean' },
  },
  switch: {
    required: ['command_topic'],
    keys: { ...COMMON, command_template: 'template', command_topic: 'string', device_class: 'string', optimistic: 'boolean', payload_off: 'string',
      payload_on: 'string', retain: 'boolean', state_off: 'string', state_on: 'string', state_topic: 'string', value_template: 'template' },
  },
}
const DEVICE_KEYS: Record<string, T> = {
  configuration_url: 'string', connections: 'list', hw_version: 'string', identifiers: 'list', manufacturer: 'string', model: 'string',
  model_id: 'string', name: 'string', serial_number: 'string', suggested_area: 'string', sw_version: 'string', via_device: 'string',
}
const AVAILABILITY_ITEM: Record<string, T> = { payload_available: 'string', payload_not_available: 'string', topic: 'string', value_template: 'template' }
const SENSOR_STATE_CLASSES = ['measurement', 'measurement_angle', 'total', 'total_increasing']
const AVAILABILITY_MODES = ['all', 'any', 'latest']
const TOPIC_RE = /^([A-Za-z0-9_-]+)\/(sensor|binary_sensor|button|switch)\/(?:([A-Za-z0-9_-]+)\/)?([A-Za-z0-9_-]+)\/config$/

function typeOk(v: unknown, t: T): boolean {
  switch (t) {
    case 'string': case 'template': return typeof v === 'string'
    case 'integer': return Number.isInteger(v)
    case 'boolean': return typeof v === 'boolean'
    case 'list': return Array.isArray(v)
    case 'map': return v !== null && typeof v === 'object' && !Array.isArray(v)
  }
}

function checkKeys(obj: Record<string, unknown>, keys: Record<string, T>, where: string): void {
  for (const [k, v] of Object.entries(obj)) {
    assert.ok(k in keys, `${where}: "${k}" is not a documented key`)
    assert.ok(typeOk(v, keys[k]!), `${where}: "${k}" should be a ${keys[k]}, got ${JSON.stringify(v)}`)
  }
}

/** Every discovery payload against the table above. */
export function assertValidDiscovery(topic: string, config: Record<string, unknown>): void {
  const m = TOPIC_RE.exec(topic)
  assert.ok(m, `config topic ${topic} is <prefix>/<component>/[<node_id>/]<object_id>/config`)
  const component = m[2]!
  const s = SCHEMA[component]!
  for (const r of s.required) assert.ok(r in config, `${component} ${topic}: required "${r}" missing`)
  checkKeys(config, s.keys, `${component} ${topic}`)
  assert.ok(typeof config.unique_id === 'string' && config.unique_id.length > 0, 'unique_id')
  const device = config.device as Record<string, unknown>
  checkKeys(device, DEVICE_KEYS, `${topic} device`)
  assert.ok(Array.isArray(device.identifiers) && device.identifiers.length > 0, 'device.identifiers')
  if (config.availability !== undefined) {
    for (const a of config.availability as Record<string, unknown>[]) { checkKeys(a, AVAILABILITY_ITEM, `${topic} availability`); assert.ok(typeof a.topic === 'string') }
    assert.ok(AVAILABILITY_MODES.includes(config.availability_mode as string), 'availability_mode')
  }
  if (config.state_class !== undefined) assert.ok(SENSOR_STATE_CLASSES.includes(config.state_class as string), 'state_class')
  if (config.qos !== undefined) assert.ok([0, 1, 2].includes(config.qos as number), 'qos')
  assert.equal(typeof (config.origin as { name?: unknown } | undefined)?.name, 'string', 'origin.name')
}

