/*
 * simboard: runs AVR firmware (.hex or .elf) under libsimavr in real time and exposes UART0 as a pty.
 *
 *   simboard [-m atmega328p] [-f 16000000] [-a adc0_mV[,adc1_mV...]] [-b bootloader.hex] [-p] firmware.hex /path/to/link
 *
 * The pty's slave is reachable through a symlink at the path given (not libsimavr's fixed /tmp/simavr-uart0, so
 * several boards run side by side); the path is printed on stdout once the board runs. SIGTERM/SIGINT remove the
 * link and exit; SIGUSR1 injects 64 random bytes into the line after the next frame delimiter (0x00) the firmware
 * sends (tests of the gateway's resync). Single-threaded: the pty is serviced from the simulation loop, so nothing
 * calls into simavr from another thread.
 *
 * -b: an Arduino with a bootloader. The bootloader hex goes at its own address (the boot section) next to the app,
 * every reset starts there (BOOTRST fuse), and the board starts as after an external reset (EXTRF) so a programmer
 * can connect. A pty has no DTR line, so the Arduino auto-reset is emulated: whenever a program opens the port (the
 * pty's hangup clears) the board gets an external reset, like the DTR edge through the Uno's reset capacitor.
 * SIGUSR2 is the reset button.
 * Baud (boot mode): the line runs at the baud the opener set on the pty (read from its termios); when that is more
 * than 5% off the simulated UART's (UBRR0, U2X0), bytes both ways are garbled, as on a real line with mismatched rates.
 * -p: report output pin changes on stderr as "simboard: pin PB5=1" (for tests of actuators), and drive input pins
 * from lines on stdin, "PD2=1" (a button, for tests of sensors).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <simavr/sim_avr.h>
#include <simavr/sim_hex.h>
#include <simavr/sim_elf.h>
#include <simavr/sim_time.h>
#include <simavr/avr_uart.h>
#include <simavr/avr_adc.h>
#include <simavr/avr_ioport.h>

static int master_fd = -1, slave_fd = -1;
static const char *link_path;
static volatile sig_atomic_t stop_req, garbage_req, reset_req;
static avr_t *avr;
static int boot_mode;       /* -b: reset into the bootloader when the port is opened */
static int peer_open = 1;   /* someone has the pty's slave open (boot mode only tracks it) */
static int garbage_armed;  /* injections still owed: one per delimiter, so quick requests do not merge */

/* pty -> UART input; simavr's own UART fifo tells us to pause with XOFF */
static uint8_t in_buf[4096];
static size_t in_head, in_len;
static int xoff;
static avr_irq_t *uart_in;

/* ---- baud: the opener's termios rate vs the simulated UART's rate ---- */
static uint32_t line_baud;   /* 0: unknown (not checked yet) */
static int garbling;
static void refresh_line_baud(void) {
  struct termios t;
  /* on a pty master, termios ioctls act on the slave: this is the rate the opener asked for */
  if (tcgetattr(master_fd, &t) != 0) return;
  static const struct { speed_t s; uint32_t b; } rates[] = {
    { B1200, 1200 }, { B2400, 2400 }, { B4800, 4800 }, { B9600, 9600 }, { B19200, 19200 }, { B38400, 38400 },
    { B57600, 57600 }, { B115200, 115200 }, { B230400, 230400 }, { B460800, 460800 }, { B500000, 500000 },
    { B1000000, 1000000 },
  };
  speed_t s = cfgetospeed(&t);
  line_baud = 0;
  for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) if (rates[i].s == s) line_baud = rates[i].b;
}
static int baud_mismatch(void) {
  /* ATmega328P UART0: UBRR0 at 0xC4/0xC5, U2X0 is bit 1 of UCSR0A (0xC0) */
  uint32_t ubrr = ((avr->data[0xC5] & 0x0F) << 8) | avr->data[0xC4];
  uint32_t div = (avr->data[0xC0] & 0x02) ? 8 : 16;
  uint32_t uart = avr->frequency / (div * (ubrr + 1));
  /* only in boot mode, which knows when someone has the port open (otherwise the termios rate is stale) */
  int bad = boot_mode && peer_open && line_baud && (uart * 100 > line_baud * 105 || uart * 105 < line_baud * 100);
  if (bad != garbling) {
    garbling = bad;
    if (bad) fprintf(stderr, "simboard: line at %u baud but the UART runs at %u: bytes garbled\n", (unsigned)line_baud, (unsigned)uart);
    else fprintf(stderr, "simboard: line and UART agree on %u baud\n", (unsigned)line_baud);
  }
  return bad;
}

static void feed_uart(void) {
  while (!xoff && in_len > 0) {
    uint8_t b = in_buf[in_head];
    if (baud_mismatch()) b = rand();
    in_head = (in_head + 1) % sizeof in_buf;
    in_len--;
    avr_raise_irq(uart_in, b);
  }
}
static void on_xon(avr_irq_t *irq, uint32_t v, void *p) { (void)irq; (void)v; (void)p; xoff = 0; feed_uart(); }
static void on_xoff(avr_irq_t *irq, uint32_t v, void *p) { (void)irq; (void)v; (void)p; xoff = 1; }

static void read_pty(void) {
  refresh_line_baud();
  while (in_len < sizeof in_buf) {
    uint8_t tmp[256];
    size_t room = sizeof in_buf - in_len;
    ssize_t n = read(master_fd, tmp, room < sizeof tmp ? room : sizeof tmp);
    if (n <= 0) break;  /* EAGAIN: nothing more now */
    for (ssize_t i = 0; i < n; i++) in_buf[(in_head + in_len++) % sizeof in_buf] = tmp[i];
  }
}

/* UART output -> pty, in chunks like a USB-serial adapter: flushed at each frame delimiter (0x00) or when 64 bytes
 * wait, instead of one write per byte. Nobody reading and the tty queue full: dropped, like a real UART's bytes. */
static uint8_t out_buf[64];
static size_t out_len;
static uint64_t out_since;  /* wall time of the oldest byte waiting in out_buf */
static uint64_t now_ns(void);
static void flush_out(void) {
  if (out_len && baud_mismatch()) for (size_t i = 0; i < out_len; i++) out_buf[i] = rand();
  if (out_len && write(master_fd, out_buf, out_len) < 0 && errno != EAGAIN) { /* reader gone: drop */ }
  out_len = 0;
}
static void on_uart_out(avr_irq_t *irq, uint32_t v, void *p) {
  (void)irq; (void)p;
  uint8_t b = v;
  if (out_len == 0) out_since = now_ns();
  out_buf[out_len++] = b;
  if (b == 0 || out_len == sizeof out_buf) flush_out();
  if (b == 0 && garbage_armed) {
    uint8_t g[64];
    for (size_t i = 0; i < sizeof g; i++) g[i] = rand();
    if (write(master_fd, g, sizeof g) < 0) { /* dropped */ }
    garbage_armed--;
    fprintf(stderr, "simboard: injected %zu garbage bytes\n", sizeof g);
  }
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

/* Boot mode: has someone opened the port since we last looked? The master reports a hangup while nobody has the
 * slave open; the hangup clearing is the "DTR" edge that resets an Arduino. */
static void check_peer(void) {
  struct pollfd pfd = { .fd = master_fd, .events = POLLIN };
  if (poll(&pfd, 1, 0) < 0) return;
  int open_now = !(pfd.revents & POLLHUP);
  if (open_now && !peer_open) { reset_req = 1; refresh_line_baud(); }
  peer_open = open_now;
}

/* Real-time throttle: simulated time may not run ahead of the wall clock. */
static uint64_t wall0;
static avr_cycle_count_t cycle0;
static void wait_until_cycle(avr_t *avr, avr_cycle_count_t cycle) {
  uint64_t target = wall0 + (uint64_t)((cycle - cycle0) * (1e9 / avr->frequency));
  /* the firmware also sleeps between the bytes it sends (~87 us apart): flush only when the line goes quiet */
  /* and never hold a byte longer than 2 ms: busy-loop firmware never lets the line look quiet, least of all when the
   * simulation runs behind on a loaded machine (a Firmata reply's last byte would wait for the next reply) */
  if (target > now_ns() + 1000000 || (out_len && now_ns() - out_since > 2000000)) flush_out();
  /* boot mode: notice a close (and the next open) promptly even when the simulation runs behind and never naps */
  if (boot_mode) check_peer();
  for (;;) {
    uint64_t now = now_ns();
    if (now >= target || reset_req) break;
    /* sleep in poll() so input from the gateway is picked up while the firmware sleeps */
    struct pollfd pfd = { .fd = master_fd, .events = POLLIN };
    int ms = (int)((target - now) / 1000000);
    if (ms == 0) { struct timespec ts = { 0, (long)(target - now) }; nanosleep(&ts, NULL); break; }
    if (!peer_open) {
      /* nobody on the line: poll() would report the hangup at once, so nap and look again */
      struct timespec ts = { 0, (long)(ms < 5 ? ms : 5) * 1000000L };
      nanosleep(&ts, NULL);
      check_peer();
      continue;
    }
    if (poll(&pfd, 1, ms) > 0) {
      if (pfd.revents & POLLIN) { read_pty(); break; }
      if (pfd.revents & POLLHUP) peer_open = 0;  /* only in boot mode: otherwise our own slave fd keeps it open */
    }
  }
  read_pty();
  feed_uart();
}

static void on_sleep(avr_t *avr, avr_cycle_count_t howLong) { wait_until_cycle(avr, avr->cycle + howLong); }

static void on_signal(int s) { if (s == SIGUSR1) garbage_req = 1; else if (s == SIGUSR2) reset_req = 1; else stop_req = 1; }

/* The reset pin: every register to its reset value, the PC to the reset vector (the boot section in boot mode),
 * MCUSR says EXTRF so a bootloader knows a person or a programmer asked for it. */
static void external_reset(void) {
  avr_reset(avr);
  if (avr->reset_flags.extrf.reg) avr_regbit_set(avr, avr->reset_flags.extrf);
  else avr->data[0x54] |= 0x02;  /* MCUSR.EXTRF on the ATmega328P */
  in_len = 0; out_len = 0; xoff = 0;
  wall0 = now_ns();
  cycle0 = avr->cycle;
  fprintf(stderr, "simboard: external reset -> pc 0x%04x\n", (unsigned)avr->pc);
}

static const char *pin_names = "BCD";

/* -p: "PD2=1\n" on stdin sets an input pin's level (stdin is non-blocking; read between simulation slices) */
static char stdin_line[64];
static size_t stdin_len;
static void read_stdin_pins(void) {
  char c;
  while (read(0, &c, 1) == 1) {
    if (c != '\n') { if (stdin_len < sizeof stdin_line - 1) stdin_line[stdin_len++] = c; continue; }
    stdin_line[stdin_len] = 0;
    stdin_len = 0;
    char port; unsigned bit, level;
    if (sscanf(stdin_line, "P%c%u=%u", &port, &bit, &level) == 3 && strchr(pin_names, port) && bit < 8) {
      avr_raise_irq(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(port), IOPORT_IRQ_PIN0 + bit), level ? 1 : 0);
      fprintf(stderr, "simboard: input P%c%u=%u\n", port, bit, level ? 1 : 0);
    } else {
      fprintf(stderr, "simboard: ignored stdin line \"%s\" (expected e.g. PD2=1)\n", stdin_line);
    }
  }
}
static void on_pin(avr_irq_t *irq, uint32_t v, void *p) {
  (void)p;
  fprintf(stderr, "simboard: pin P%c%u=%u\n", pin_names[(intptr_t)irq->irq / 100], (unsigned)(irq->irq % 100), (unsigned)v);
}

int main(int argc, char **argv) {
  const char *mcu = "atmega328p";
  uint32_t freq = 16000000, adc_mv[6] = { 2500, 0, 0, 0, 0, 0 };
  const char *boot = NULL;
  int opt, pins = 0;
  while ((opt = getopt(argc, argv, "m:f:a:b:p")) != -1) {
    switch (opt) {
      case 'm': mcu = optarg; break;
      case 'f': freq = strtoul(optarg, NULL, 10); break;
      case 'a': {  /* millivolts on ADC0, ADC1, ... (comma-separated) */
        char *p = optarg;
        for (int ch = 0; ch < 6 && *p; ch++) { adc_mv[ch] = strtoul(p, &p, 10); if (*p == ',') p++; else break; }
        break;
      }
      case 'b': boot = optarg; break;
      case 'p': pins = 1; break;
      default: goto usage;
    }
  }
  if (argc - optind != 2) {
  usage:
    fprintf(stderr, "usage: %s [-m mcu] [-f hz] [-a adc0_mV[,adc1_mV...]] [-b bootloader.hex] [-p] firmware.{hex,elf} /path/to/pty-link\n", argv[0]);
    return 2;
  }
  const char *fw = argv[optind];
  link_path = argv[optind + 1];

  elf_firmware_t f;
  memset(&f, 0, sizeof f);
  size_t len = strlen(fw);
  if (len > 4 && strcmp(fw + len - 4, ".hex") == 0) {
    uint32_t size, start;
    uint8_t *code = read_ihex_file(fw, &size, &start);
    if (!code) { fprintf(stderr, "simboard: cannot read %s\n", fw); return 1; }
    f.flash = code; f.flashsize = size; f.flashbase = start;
  } else if (elf_read_firmware(fw, &f) != 0) {
    fprintf(stderr, "simboard: cannot read %s\n", fw);
    return 1;
  }
  if (!f.mmcu[0]) strncpy(f.mmcu, mcu, sizeof f.mmcu - 1);
  if (!f.frequency) f.frequency = freq;

  avr = avr_make_mcu_by_name(f.mmcu);
  if (!avr) { fprintf(stderr, "simboard: unknown mcu %s\n", f.mmcu); return 1; }
  avr_init(avr);
  avr_load_firmware(avr, &f);
  if (boot) {
    uint32_t bsize, bbase;
    uint8_t *bcode = read_ihex_file(boot, &bsize, &bbase);
    if (!bcode) { fprintf(stderr, "simboard: cannot read bootloader %s\n", boot); return 1; }
    if (bbase + bsize > avr->flashend + 1) { fprintf(stderr, "simboard: bootloader %s does not fit in flash\n", boot); return 1; }
    memcpy(avr->flash + bbase, bcode, bsize);
    free(bcode);
    avr->reset_pc = bbase;   /* BOOTRST: every reset enters the bootloader */
    avr->codeend = avr->flashend;  /* the bootloader writes code anywhere below itself */
    boot_mode = 1;
  }
  avr->vcc = avr->avcc = avr->aref = 5000;
  avr->sleep = on_sleep;
  avr->log = LOG_WARNING;

  /* the library's stdio echo of UART lines would mix with our stdout */
  uint32_t flags = 0;
  avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
  flags &= ~(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
  avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);

  char name[128];
  if (openpty(&master_fd, &slave_fd, name, NULL, NULL) != 0) { perror("simboard: openpty"); return 1; }
  /* raw line: binary frames must pass untouched and nothing may echo back to the gateway */
  struct termios tio;
  tcgetattr(slave_fd, &tio);
  cfmakeraw(&tio);
  tcsetattr(slave_fd, TCSANOW, &tio);
  /* keeping our own slave fd open means the master never sees a hangup while no gateway has the port open */
  fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK);
  /* boot mode watches who opens the port (auto-reset), so it must not hold the slave open itself */
  if (boot_mode) { close(slave_fd); slave_fd = -1; peer_open = 0; }
  unlink(link_path);
  if (symlink(name, link_path) != 0) { perror("simboard: symlink"); return 1; }

  uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_out, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), on_xon, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), on_xoff, NULL);
  for (int ch = 0; ch < 6; ch++) avr_raise_irq(avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC0 + ch), adc_mv[ch]);
  if (pins) {
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    for (int port = 0; port < 3; port++) {
      for (int bit = 0; bit < 8; bit++) {
        avr_irq_t *irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(pin_names[port]), IOPORT_IRQ_PIN0 + bit);
        /* our own irq named by port*100+bit, chained to the pin, so the callback knows which pin it is */
        static const char *tap_name[] = { "=pin" };
        avr_irq_t *tap = avr_alloc_irq(&avr->irq_pool, port * 100 + bit, 1, tap_name);
        avr_connect_irq(irq, tap);
        avr_irq_register_notify(tap, on_pin, NULL);
      }
    }
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  srand((unsigned)now_ns());

  printf("%s\n", link_path);
  fflush(stdout);
  fprintf(stderr, "simboard: %s at %u Hz, UART0 on %s -> %s\n", f.mmcu, (unsigned)f.frequency, link_path, name);

  wall0 = now_ns();
  cycle0 = avr->cycle;
  if (boot_mode) external_reset();  /* power on as after pressing reset: the bootloader waits for a programmer */
  unsigned n = 0;
  int state = cpu_Running;
  while (!stop_req && state != cpu_Done && state != cpu_Crashed) {
    state = avr_run(avr);
    /* while the firmware runs (no sleep), throttle and service the pty every ~64k instructions */
    if ((++n & 0xFFFF) == 0) wait_until_cycle(avr, avr->cycle);
    if (garbage_req) { garbage_req = 0; garbage_armed++; }
    if (reset_req) { reset_req = 0; external_reset(); state = cpu_Running; }
    if (pins && (n & 0xFFFF) == 0) read_stdin_pins();
  }
  unlink(link_path);
  fprintf(stderr, "simboard: stopped (cpu state %d)\n", state);
  return state == cpu_Crashed ? 3 : 0;
}
