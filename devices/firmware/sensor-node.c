/*
 * sensor-node: ATmega328P (Arduino Uno/Nano) firmware speaking edgeway's binary serial framing
 * (devices/serial/framing.ts is the reference: keep the two in step).
 *
 * Wire: 0x00 COBS([ver<<4|type][seq][payload][crc16 hi][crc16 lo]) 0x00, CRC-16/CCITT-FALSE.
 * - On boot, and whenever the gateway says HELLO, it sends HELLO with its firmware version (seq = boot counter).
 * - Every interval it samples ADC0 and a simulated sensor and sends a READING; a reading stays in a small
 *   window until the gateway ACKs it (after its durable commit) and is retransmitted until then.
 * - COMMANDs: set report interval, read now, set output pin, reboot; each answered by COMMAND_RESULT.
 * Low power: a 10 ms timer tick and UART interrupts wake the CPU from idle sleep; nothing busy-waits except the
 * ~100 us ADC conversion.
 */
#include <avr/io.h>
#include <avr/interrupt.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <avr/eeprom.h>
#include <util/atomic.h>
#include <stdint.h>
#include <string.h>

#ifndef FW_VERSION
#define FW_VERSION "sensor-node 1.0.0"
#endif
#ifndef BAUD
#define BAUD 115200
#endif
#define BAUD_TOL 3
#include <util/setbaud.h>

enum { T_HELLO = 1, T_READING = 2, T_ACK = 3, T_NACK = 4, T_COMMAND = 5, T_COMMAND_RESULT = 6 };
enum { OP_SET_INTERVAL = 1, OP_READ_NOW = 2, OP_SET_OUTPUT = 3, OP_REBOOT = 4 };
enum { ST_OK = 0, ST_UNKNOWN_OP = 1, ST_BAD_ARGS = 2 };
#define PROTOCOL_VERSION 1

#define TICK_MS 10
#ifndef WINDOW
#define WINDOW 4                      /* unacked readings kept for retransmit (the gateway remembers 16 seqs) */
#endif
#define RETRY_TICKS (500 / TICK_MS)   /* retransmit an unacked reading after 500 ms */
#define MAX_RAW 48                    /* largest frame before COBS (header + payload + CRC) */

/* Runs before main (.init3): a watchdog reset leaves the watchdog armed at 16 ms, and Debian's oversized optiboot
 * can leave it on too; disable it before anything else or the board reboots in a loop. */
uint8_t reset_cause __attribute__((section(".noinit")));
void early_init(void) __attribute__((naked, used, section(".init3")));
void early_init(void) { reset_cause = MCUSR; MCUSR = 0; wdt_disable(); }

/* ---- UART: interrupt-driven ring buffers, so the main loop sleeps instead of polling ---- */
static volatile uint8_t tx_buf[128], tx_head, tx_tail;  /* power-of-two sizes: index wraps with a mask */
static volatile uint8_t rx_buf[64], rx_head, rx_tail;

ISR(USART_RX_vect) {
  uint8_t b = UDR0, n = (rx_head + 1) & 63;
  if (n != rx_tail) { rx_buf[rx_head] = b; rx_head = n; }  /* full: drop; the CRC catches the damaged frame */
}

ISR(USART_UDRE_vect) {
  if (tx_head == tx_tail) { UCSR0B &= ~_BV(UDRIE0); return; }
  UDR0 = tx_buf[tx_tail];
  tx_tail = (tx_tail + 1) & 127;
}

static void tx_byte(uint8_t b) {
  uint8_t n = (tx_head + 1) & 127;
  while (n == tx_tail) { /* ring full: sleep until the UDRE interrupt made room */
    cli(); if (n == tx_tail) { sleep_enable(); sei(); sleep_cpu(); sleep_disable(); } sei();
  }
  tx_buf[tx_head] = b;
  tx_head = n;
  UCSR0B |= _BV(UDRIE0);
}

static uint16_t crc16(const uint8_t *p, uint8_t n) {
  uint16_t crc = 0xFFFF;
  while (n--) {
    crc ^= (uint16_t)(*p++) << 8;
    for (uint8_t b = 0; b < 8; b++) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
  }
  return crc;
}

/* Frames are short (< 254 bytes), so COBS needs a single code byte per zero and no 0xFF blocks. */
static void send_frame(uint8_t type, uint8_t seq, const uint8_t *payload, uint8_t len) {
  uint8_t raw[MAX_RAW], n = 0;
  raw[n++] = (PROTOCOL_VERSION << 4) | type;
  raw[n++] = seq;
  memcpy(raw + n, payload, len); n += len;
  uint16_t crc = crc16(raw, n);
  raw[n++] = crc >> 8; raw[n++] = crc & 0xFF;
  tx_byte(0);
  uint8_t start = 0;
  for (uint8_t i = 0; i <= n; i++) {
    if (i == n || raw[i] == 0) {
      tx_byte(i - start + 1);
      for (uint8_t k = start; k < i; k++) tx_byte(raw[k]);
      start = i + 1;
    }
  }
  tx_byte(0);
}

/* ---- timer: 10 ms tick from Timer1 in CTC mode ---- */
static volatile uint8_t ticks;
ISR(TIMER1_COMPA_vect) { ticks++; }

/* ---- readings ---- */
struct slot { uint8_t used, seq, age; int32_t adc, count, sim, skipped; };
static struct slot window[WINDOW];
static uint8_t next_seq;
static int32_t count, skipped;
#ifndef INTERVAL_MS
#define INTERVAL_MS 1000
#endif
static uint16_t interval_ticks = INTERVAL_MS ? INTERVAL_MS / TICK_MS : 0xFFFF, until_sample = 1;
static uint8_t read_now;

static uint16_t adc_read(uint8_t ch) {
  ADMUX = _BV(REFS0) | (ch & 7);
  ADCSRA |= _BV(ADSC);
  while (ADCSRA & _BV(ADSC)) {}   /* ~104 us at 125 kHz ADC clock: shorter than any sleep would save */
  return ADC;
}

static uint8_t put_metric(uint8_t *p, const char *name, int32_t v) {
  uint8_t n = strlen(name);
  p[0] = n; memcpy(p + 1, name, n);
  p[n + 1] = v >> 24; p[n + 2] = v >> 16; p[n + 3] = v >> 8; p[n + 4] = v;
  return n + 5;
}

static void send_reading(struct slot *s) {
  uint8_t p[MAX_RAW - 4], n = 0;
  n += put_metric(p + n, "adc0", s->adc);
  n += put_metric(p + n, "count", s->count);
  n += put_metric(p + n, "sim", s->sim);
  n += put_metric(p + n, "skipped", s->skipped);
  send_frame(T_READING, s->seq, p, n);
  s->age = 0;
}

static void sample(void) {
  count++;
  struct slot *s = 0;
  for (uint8_t i = 0; i < WINDOW; i++) if (!window[i].used) { s = &window[i]; break; }
  if (!s) { skipped++; return; }   /* gateway not acking: keep the old readings, count the ones not taken */
  s->used = 1; s->seq = next_seq++;
  s->adc = adc_read(0);
  s->count = count;
  /* simulated sensor: a triangle wave 200..300 (e.g. deci-degrees) */
  int32_t ph = count % 200;
  s->sim = 200 + (ph < 100 ? ph : 200 - ph);
  s->skipped = skipped;
  send_reading(s);
}

/* INTERVAL_MS=0 builds a benchmark node: it samples whenever the ack window has room, so the rate is bounded by
 * the line and the gateway's commit latency only. */
static uint8_t flood_ready(void) {
#if INTERVAL_MS == 0
  for (uint8_t i = 0; i < WINDOW; i++) if (!window[i].used) return 1;
#endif
  return 0;
}

/* HELLO's seq is a boot counter kept in EEPROM: the gateway tells a reboot (new sequence numbers) from a HELLO that
 * only answers its own, and resets its duplicate detection only for the former. */
static uint8_t boot_id;
static void send_hello(void) {
  static const char v[] = FW_VERSION;
  send_frame(T_HELLO, boot_id, (const uint8_t *)v, sizeof v - 1);
}

/* ---- commands ---- */
static uint8_t last_cmd_seq, last_cmd_status, have_last_cmd;

static void set_output(uint8_t pin, uint8_t on) {  /* Arduino digital pins 2..13 */
  volatile uint8_t *ddr = pin < 8 ? &DDRD : &DDRB, *port = pin < 8 ? &PORTD : &PORTB;
  uint8_t bit = _BV(pin < 8 ? pin : pin - 8);
  *ddr |= bit;
  if (on) *port |= bit; else *port &= ~bit;
}

static void reboot(void) {
  while (tx_head != tx_tail || !(UCSR0A & _BV(TXC0))) {}  /* let the result leave the UART first */
  wdt_enable(WDTO_15MS);
  for (;;) {}
}

static void handle_command(uint8_t seq, const uint8_t *p, uint8_t len) {
  if (have_last_cmd && seq == last_cmd_seq) {  /* a retransmitted command: answer again, do not run it twice */
    send_frame(T_COMMAND_RESULT, seq, &last_cmd_status, 1);
    return;
  }
  uint8_t st = ST_OK, boot = 0;
  if (len < 1) st = ST_BAD_ARGS;
  else switch (p[0]) {
    case OP_SET_INTERVAL: {
      uint16_t ms = len == 3 ? ((uint16_t)p[1] << 8 | p[2]) : 0;
      if (ms < TICK_MS) st = ST_BAD_ARGS;
      else { interval_ticks = ms / TICK_MS; if (until_sample > interval_ticks) until_sample = interval_ticks; }
      break;
    }
    case OP_READ_NOW: read_now = 1; break;
    case OP_SET_OUTPUT:
      if (len != 3 || p[1] < 2 || p[1] > 13) st = ST_BAD_ARGS; else set_output(p[1], p[2]);
      break;
    case OP_REBOOT: boot = 1; break;
    default: st = ST_UNKNOWN_OP;
  }
  last_cmd_seq = seq; last_cmd_status = st; have_last_cmd = 1;
  send_frame(T_COMMAND_RESULT, seq, &st, 1);
  if (boot) reboot();
}

static void handle_frame(const uint8_t *raw, uint8_t n) {
  if (n < 4 || (raw[0] >> 4) != PROTOCOL_VERSION) return;
  if (crc16(raw, n - 2) != ((uint16_t)raw[n - 2] << 8 | raw[n - 1])) return;  /* damaged: the sender retries */
  uint8_t type = raw[0] & 0x0F, seq = raw[1];
  const uint8_t *p = raw + 2;
  uint8_t len = n - 4;
  switch (type) {
    case T_ACK:
      for (uint8_t i = 0; i < WINDOW; i++) if (window[i].used && window[i].seq == seq) window[i].used = 0;
      break;
    case T_NACK:  /* the gateway could not store it: retransmit on the next tick */
      for (uint8_t i = 0; i < WINDOW; i++) if (window[i].used && window[i].seq == seq) window[i].age = RETRY_TICKS;
      break;
    case T_HELLO:  /* the gateway (re)connected: introduce ourselves and resend what it has not acked */
      send_hello();
      for (uint8_t i = 0; i < WINDOW; i++) if (window[i].used) window[i].age = RETRY_TICKS;
      break;
    case T_COMMAND: handle_command(seq, p, len); break;
    default: send_frame(T_NACK, seq, 0, 0);
  }
}

/* COBS-decode while bytes arrive; a 0x00 ends the frame. Each code byte after the first stands for the zero that
 * ended the previous block (unless that block was a full 0xFF run). */
static uint8_t rx_frame[MAX_RAW], rx_len, rx_code, rx_left, rx_started, rx_bad;
static void rx_put(uint8_t b) { if (rx_len >= sizeof rx_frame) rx_bad = 1; else rx_frame[rx_len++] = b; }
static void rx_feed(uint8_t b) {
  if (b == 0) {
    if (rx_started && !rx_bad && rx_left == 0) handle_frame(rx_frame, rx_len);
    rx_len = rx_left = rx_started = rx_bad = 0;
    return;
  }
  if (rx_left == 0) {
    if (rx_started && rx_code != 0xFF) rx_put(0);
    rx_code = b; rx_left = b - 1; rx_started = 1;
  } else {
    rx_put(b);
    rx_left--;
  }
}

int main(void) {
  /* U2X0 before UBRR0: the same on silicon, but simavr derives its UART timing when UBRR0L is written, and with U2X0
   * still clear it ran the line at half speed (58,823 instead of 117,647 baud) */
#if USE_2X
  UCSR0A |= _BV(U2X0);
#endif
  UBRR0H = UBRRH_VALUE; UBRR0L = UBRRL_VALUE;
  UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
  UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);  /* 8N1 */
  ADCSRA = _BV(ADEN) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0);  /* ADC clock F_CPU/128 */
  TCCR1A = 0;
  TCCR1B = _BV(WGM12) | _BV(CS11) | _BV(CS10);  /* CTC, /64: 250 kHz */
  OCR1A = (F_CPU / 64 / (1000 / TICK_MS)) - 1;
  TIMSK1 = _BV(OCIE1A);
  set_sleep_mode(SLEEP_MODE_IDLE);  /* idle keeps the UART and Timer1 running */
  boot_id = eeprom_read_byte((uint8_t *)0) + 1;
  eeprom_update_byte((uint8_t *)0, boot_id);
  sei();
  send_hello();

  uint8_t seen_ticks = 0;
  for (;;) {
    cli();
    if (rx_head == rx_tail && ticks == seen_ticks && !read_now && !flood_ready()) { sleep_enable(); sei(); sleep_cpu(); sleep_disable(); }
    sei();
    while (rx_head != rx_tail) { uint8_t b = rx_buf[rx_tail]; rx_tail = (rx_tail + 1) & 63; rx_feed(b); }
    while (seen_ticks != ticks) {
      seen_ticks++;
      for (uint8_t i = 0; i < WINDOW; i++)
        if (window[i].used && ++window[i].age >= RETRY_TICKS) send_reading(&window[i]);
      if (--until_sample == 0) { until_sample = interval_ticks; sample(); }
    }
    if (read_now || flood_ready()) { read_now = 0; sample(); }
  }
}
