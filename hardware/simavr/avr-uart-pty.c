/*
 * avr-uart-pty: runs a real AVR bootloader (Intel HEX) in simavr on an
 * ATmega328P and bridges UART0 to an existing tty (one end of a socat pty
 * pair), so host tools talk to it as to an Arduino on a USB-serial adapter.
 *
 *   avr-uart-pty BOOTLOADER.hex TTY [FLASH_OUT]
 *
 * Board behaviour modelled:
 *  - BOOTRST fuse: execution starts at the bootloader's base address.
 *  - Arduino auto-reset: whenever execution leaves the bootloader (it timed
 *    out, or was told to leave programming mode), the MCU is reset again with
 *    EXTRF set in MCUSR, as the DTR-driven reset circuit does on each
 *    connection. optiboot only stays in the bootloader after an external
 *    reset. The application itself is therefore never run.
 *  - Simulated time is kept at wall-clock speed, so the bootloader's own
 *    timeouts behave as on hardware and the simulation does not burn a core.
 *
 * On SIGTERM/SIGINT the application flash (below the bootloader) is written
 * to FLASH_OUT if given.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "sim_avr.h"
#include "sim_hex.h"
#include "avr_uart.h"

#define MCUSR_ADDR 0x54 /* ATmega328P MCUSR (I/O 0x34 + 0x20) */
#define EXTRF 1

static volatile sig_atomic_t running = 1;
static int tty = -1;
static int xon = 1;
static uint8_t rx[4096];
static size_t rx_len;
static uint8_t tx[4096];
static size_t tx_len;

static void on_signal(int sig) { (void)sig; running = 0; }

/* The AVR transmitted a byte. */
static void uart_out_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq; (void)param;
	if (tx_len < sizeof tx) tx[tx_len++] = (uint8_t)value;
}

/* The UART's receive FIFO has room again / is full. */
static void uart_xon_hook(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq; (void)value; (void)param; xon = 1; }
static void uart_xoff_hook(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq; (void)value; (void)param; xon = 0; }

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void external_reset(avr_t *avr, uint32_t boot_base)
{
	avr_reset(avr);
	avr->pc = boot_base;
	avr->data[MCUSR_ADDR] |= 1 << EXTRF;
}

static void pump_io(avr_t *avr, avr_irq_t *uart_in)
{
	if (rx_len < sizeof rx) {
		ssize_t n = read(tty, rx + rx_len, sizeof rx - rx_len);
		if (n > 0) rx_len += (size_t)n;
	}
	size_t fed = 0;
	while (xon && fed < rx_len) avr_raise_irq(uart_in, rx[fed++]);
	if (fed) { memmove(rx, rx + fed, rx_len - fed); rx_len -= fed; }
	if (tx_len) {
		ssize_t n = write(tty, tx, tx_len);
		if (n > 0) { memmove(tx, tx + n, tx_len - (size_t)n); tx_len -= (size_t)n; }
	}
	(void)avr;
}

int main(int argc, char *argv[])
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s BOOTLOADER.hex TTY [FLASH_OUT]\n", argv[0]);
		return 2;
	}
	avr_t *avr = avr_make_mcu_by_name("atmega328p");
	if (!avr) { fprintf(stderr, "simavr has no atmega328p\n"); return 1; }
	avr_init(avr);
	avr->frequency = 16000000;
	avr->log = LOG_ERROR;

	uint32_t boot_size = 0, boot_base = 0;
	uint8_t *boot = read_ihex_file(argv[1], &boot_size, &boot_base);
	if (!boot) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
	memcpy(avr->flash + boot_base, boot, boot_size);
	free(boot);
	avr->codeend = avr->flashend;
	avr->reset_pc = boot_base;

	tty = open(argv[2], O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (tty < 0) { fprintf(stderr, "open %s: %s\n", argv[2], strerror(errno)); return 1; }
	struct termios tio;
	if (tcgetattr(tty, &tio) == 0) { cfmakeraw(&tio); tcsetattr(tty, TCSANOW, &tio); }

	avr_irq_t *uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), uart_out_hook, NULL);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), uart_xon_hook, NULL);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), uart_xoff_hook, NULL);

	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	external_reset(avr, boot_base);
	printf("avr-uart-pty: atmega328p bootloader at 0x%04x (%u bytes) on %s\n", boot_base, boot_size, argv[2]);
	fflush(stdout);

	const double start = now_seconds();
	const avr_cycle_count_t start_cycle = avr->cycle;
	unsigned long steps = 0;
	while (running) {
		int state = avr_run(avr);
		if (state == cpu_Done || state == cpu_Crashed || avr->pc < boot_base) external_reset(avr, boot_base);
		if (++steps % 512 != 0) continue;
		pump_io(avr, uart_in);
		double ahead = (double)(avr->cycle - start_cycle) / avr->frequency - (now_seconds() - start);
		if (ahead > 0.001) {
			struct timespec nap = { 0, (long)(ahead * 1e9) };
			nanosleep(&nap, NULL);
		}
	}
	if (argc > 3) {
		FILE *out = fopen(argv[3], "wb");
		if (!out || fwrite(avr->flash, 1, boot_base, out) != boot_base) { fprintf(stderr, "cannot write %s\n", argv[3]); return 1; }
		fclose(out);
	}
	return 0;
}
