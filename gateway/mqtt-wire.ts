// Sizes on the MQTT wire (pure): what a Maximum Packet Size counts, for the broker's listeners and the mqtt upstream.

/** Bytes of an MQTT Variable Byte Integer holding `n` (MQTT 5.0 1.5.5). */
export function varIntBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4
}

/** Total size of an MQTT packet whose remaining length is `remaining`: fixed header byte, length, body (3.2.2.3.6). */
export function packetBytes(remaining: number): number {
  return 1 + varIntBytes(remaining) + remaining
}
