// Boards `edgeway flash --board` knows: the chip's signature, page and flash sizes, and the bootloader's usual baud.

export interface BoardProfile {
  name: string
  chip: string
  signature: string
  pageSize: number
  /** Flash the application may use (the bootloader sits above it). */
  appBytes: number
  baud: number
  description: string
}

export const BOARDS: Record<string, BoardProfile> = {
  uno: { name: 'uno', chip: 'ATmega328P', signature: '1e950f', pageSize: 128, appBytes: 32768 - 512, baud: 115200, description: 'Arduino Uno (optiboot, 115200 baud)' },
  nano: { name: 'nano', chip: 'ATmega328P', signature: '1e950f', pageSize: 128, appBytes: 32768 - 2048, baud: 57600, description: 'Arduino Nano / Duemilanove 328 (ATmegaBOOT, 57600 baud)' },
  diecimila: { name: 'diecimila', chip: 'ATmega168', signature: '1e9406', pageSize: 128, appBytes: 16384 - 2048, baud: 19200, description: 'Arduino Diecimila / Nano 168 (ATmegaBOOT, 19200 baud)' },
}

/** A signature -> chip name, for the "wrong board" message. */
export const CHIPS: Record<string, string> = { '1e950f': 'ATmega328P', '1e9514': 'ATmega328', '1e9406': 'ATmega168', '1e940b': 'ATmega168P', '1e9307': 'ATmega8', '1e9801': 'ATmega2560' }

export function boardProfile(name: string): BoardProfile {
  const b = BOARDS[name]
  if (!b) throw new Error(`unknown board "${name}" (known: ${Object.keys(BOARDS).join(', ')})`)
  return b
}
