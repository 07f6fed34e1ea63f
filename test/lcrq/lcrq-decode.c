/*
 * lcrq-decode: a test-only bridge between fwcast's RaptorQ symbols and
 * Librecast's independent RFC 6330 implementation (Debian liblcrq-dev 0.0.1).
 * test/fec-lcrq.test.ts builds it with
 *     gcc -O2 -o test/lcrq/build/lcrq-decode test/lcrq/lcrq-decode.c -llcrq
 * and talks to it over stdin/stdout. It is not part of fwcast.
 *
 * Usage: lcrq-decode decode | encode | params F T | kprime KMAX
 *
 * All integers are little-endian. "Header" is 14 bytes:
 *     F      u64   transfer length in bytes (1 .. 2^32)
 *     T      u16   symbol size in bytes (multiple of 4, lcrq's Al)
 *     count  u32   number of symbols / ESIs that follow
 *
 * decode:  stdin  = header, then count records of
 *                       ESI  u32  RFC 6330 encoding symbol ID (source < K, repair >= K)
 *                       data T bytes
 *          stdout = the F decoded bytes.
 *          The symbols are passed, in the order given, to
 *          rq_decode(rq, dec, enc, ESI, count).
 *
 * encode:  stdin  = header, then F bytes of object, then count ESIs (u32 each)
 *          stdout = count symbols of T bytes, in the order of the ESIs given,
 *                   each produced by rq_symbol() after rq_encode().
 *
 * params:  no stdin; prints one line of JSON with what rq_init(F, T) derived:
 *          {"F":..,"T":..,"K":..,"KP":..,"Z":..,"N":..,"Al":..}
 *
 * kprime:  no stdin; for K = 1 .. KMAX prints the K' that lcrq's rq_init picks
 *          for an object of exactly K symbols (F = 8K, T = 8), one per line.
 *
 * On any failure: a message on stderr and exit status 1 (2 for usage errors).
 *
 * What lcrq 0.0.1 requires (found by reading its header/man pages and probing):
 *  - rq_init(F, T) asserts T % 4 == 0 (its Al is the compile-time RQ_AL = 4)
 *    and aborts otherwise, so this helper checks T first.
 *  - rq_init picks Z and N itself from a 1 GiB working-memory default; it
 *    asserts N == 1 (no sub-block support). rq_decode() has no SBN argument:
 *    it decodes the first (only) source block, so this helper refuses Z != 1.
 *  - rq_decode() writes K*T bytes (the padded source block) to dec; the first
 *    F bytes are the object.
 *  - rq_symbol() takes the ESI from a packed rq_pid_t built with the header's
 *    rq_pidsetsbn/rq_pidsetesi macros. On little-endian x86 that word holds
 *    SBN in its top byte and the ESI byte-swapped below it, so in memory it is
 *    ESI(3 bytes, big-endian) then SBN: not the RFC 6330 §3.2 wire layout
 *    (SBN first). This helper therefore never passes payload IDs as bytes.
 *  - Every symbol handed to rq_decode(), source or repair, is placed by its
 *    ESI (ISI = ESI for ESI < K, ESI + K' - K otherwise), in any order; no
 *    prior rq_encode() is needed on the decoding context.
 */
#include <lcrq.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_F ((uint64_t)1 << 32)

static void die(const char *msg)
{
	fprintf(stderr, "lcrq-decode: %s\n", msg);
	exit(1);
}

static void read_exact(void *buf, size_t len, const char *what)
{
	uint8_t *p = buf;
	while (len) {
		size_t n = fread(p, 1, len, stdin);
		if (n == 0) {
			fprintf(stderr, "lcrq-decode: short read on stdin (%s)\n", what);
			exit(1);
		}
		p += n;
		len -= n;
	}
}

static void write_exact(const void *buf, size_t len)
{
	if (len && fwrite(buf, 1, len, stdout) != len) die("write to stdout failed");
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
	return v;
}

static void *xmalloc(size_t n)
{
	void *p = calloc(n ? n : 1, 1);
	if (!p) die("out of memory");
	return p;
}

/* rq_init with the checks lcrq itself only asserts */
static rq_t *init(uint64_t F, uint64_t T)
{
	if (F == 0 || F > MAX_F) die("F must be in 1..2^32");
	if (T == 0 || T > 0xffff || T % RQ_AL != 0) {
		fprintf(stderr, "lcrq-decode: T=%" PRIu64 " is not a positive multiple of lcrq's Al=%d\n", T, RQ_AL);
		exit(1);
	}
	rq_t *rq = rq_init(F, (uint16_t)T);
	if (!rq) die("rq_init failed");
	return rq;
}

static void need_single_block(rq_t *rq)
{
	if (rq_Z(rq) != 1 || rq_N(rq) != 1) {
		fprintf(stderr, "lcrq-decode: lcrq chose Z=%u N=%u; this helper only handles one block\n",
			rq_Z(rq), rq_N(rq));
		exit(1);
	}
}

static void read_header(uint64_t *F, uint64_t *T, uint32_t *count)
{
	uint8_t h[14];
	read_exact(h, sizeof h, "header");
	*F = get_le(h, 8);
	*T = get_le(h + 8, 2);
	*count = (uint32_t)get_le(h + 10, 4);
}

static int do_decode(void)
{
	uint64_t F, T;
	uint32_t count;
	read_header(&F, &T, &count);
	rq_t *rq = init(F, T);
	need_single_block(rq);
	const uint32_t K = rq_K(rq);
	if (count < K) {
		fprintf(stderr, "lcrq-decode: %" PRIu32 " symbols given, K=%" PRIu32 " needed\n", count, K);
		exit(1);
	}
	uint32_t *esi = xmalloc((size_t)count * sizeof *esi);
	uint8_t *enc = xmalloc((size_t)count * T);
	for (uint32_t i = 0; i < count; i++) {
		uint8_t b[4];
		read_exact(b, 4, "ESI");
		esi[i] = (uint32_t)get_le(b, 4);
		if (esi[i] > RQ_ESI_MAX) die("ESI exceeds 24 bits");
		read_exact(enc + (size_t)i * T, T, "symbol");
	}
	uint8_t *dec = xmalloc((size_t)K * T);
	if (rq_decode(rq, dec, enc, esi, count) != 0) die("rq_decode failed");
	write_exact(dec, F);
	if (fflush(stdout)) die("flush failed");
	free(dec);
	free(enc);
	free(esi);
	rq_free(rq);
	return 0;
}

static int do_encode(void)
{
	uint64_t F, T;
	uint32_t count;
	read_header(&F, &T, &count);
	rq_t *rq = init(F, T);
	need_single_block(rq);
	/* lcrq reads K*T bytes of source; give it a zero-padded copy */
	const size_t padded = (size_t)rq_K(rq) * T;
	uint8_t *obj = xmalloc(padded);
	read_exact(obj, F, "object");
	uint32_t *esi = xmalloc((size_t)count * sizeof *esi);
	for (uint32_t i = 0; i < count; i++) {
		uint8_t b[4];
		read_exact(b, 4, "ESI");
		esi[i] = (uint32_t)get_le(b, 4);
		if (esi[i] > RQ_ESI_MAX) die("ESI exceeds 24 bits");
	}
	if (rq_encode(rq, obj, F) != 0) die("rq_encode failed");
	uint8_t *sym = xmalloc(T);
	for (uint32_t i = 0; i < count; i++) {
		rq_pid_t pid = 0;
		pid = rq_pidsetsbn(pid, 0);
		pid = rq_pidsetesi(pid, esi[i]);
		if (rq_pid2esi(pid) != esi[i]) die("payload ID round trip failed");
		if (!rq_symbol(rq, &pid, sym, 0)) die("rq_symbol failed");
		write_exact(sym, T);
	}
	if (fflush(stdout)) die("flush failed");
	free(sym);
	free(esi);
	rq_free(rq);
	free(obj);
	return 0;
}

static int do_params(const char *f, const char *t)
{
	char *end;
	errno = 0;
	uint64_t F = strtoull(f, &end, 10);
	if (errno || *end) die("bad F");
	uint64_t T = strtoull(t, &end, 10);
	if (errno || *end) die("bad T");
	rq_t *rq = init(F, T);
	printf("{\"F\":%" PRIu64 ",\"T\":%u,\"K\":%u,\"KP\":%u,\"Z\":%u,\"N\":%u,\"Al\":%u}\n",
		rq_F(rq), rq_T(rq), rq_K(rq), rq_KP(rq), rq_Z(rq), rq_N(rq), rq_Al(rq));
	rq_free(rq);
	return 0;
}

static int do_kprime(const char *kmax)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(kmax, &end, 10);
	if (errno || *end || n < 1 || n > 56403) die("KMAX must be in 1..56403");
	for (unsigned long k = 1; k <= n; k++) {
		rq_t *rq = init((uint64_t)k * 8, 8);
		if (rq_K(rq) != k) die("rq_init picked an unexpected K");
		printf("%u\n", rq_KP(rq));
		rq_free(rq);
	}
	return fflush(stdout) ? 1 : 0;
}

int main(int argc, char *argv[])
{
	if (argc == 2 && !strcmp(argv[1], "decode")) return do_decode();
	if (argc == 2 && !strcmp(argv[1], "encode")) return do_encode();
	if (argc == 4 && !strcmp(argv[1], "params")) return do_params(argv[2], argv[3]);
	if (argc == 3 && !strcmp(argv[1], "kprime")) return do_kprime(argv[2]);
	fprintf(stderr, "usage: %s decode | encode | params F T | kprime KMAX\n", argv[0]);
	return 2;
}
