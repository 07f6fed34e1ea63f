/*
 * A Librecast peer for fwcast's interop tests, linked against Debian's
 * liblibrecast: it sends and receives with lc_msg_send / lc_msg_recv only,
 * so what it proves is what any Librecast application would see.
 *
 *   lc-msg send IFACE NAME PORT    stdin: messages as (u32 BE length, bytes)
 *   lc-msg recv IFACE NAME PORT N  stdout: N messages as (u32 BE length, bytes)
 *   lc-msg group NAME              prints the channel's group address
 *
 * The channel is Librecast's for NAME (lc_channel_new); a PORT other than
 * 4242 moves it with lc_channel_init_grp onto the same group. The receiver
 * writes "ready" to stderr once it has joined. Every run ends within 30 s.
 */
#include <librecast/net.h>
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
	fprintf(stderr, "lc-msg: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int read_all(void *buf, size_t len) {
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(0, (char *)buf + got, len - got);
		if (n == 0) return got == 0 ? 0 : -1;
		if (n < 0) return -1;
		got += (size_t)n;
	}
	return 1;
}

static void write_all(const void *buf, size_t len) {
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(1, (const char *)buf + done, len - done);
		if (n <= 0) die("write");
		done += (size_t)n;
	}
}

static lc_channel_t *channel(lc_ctx_t *ctx, char *name, int port) {
	lc_channel_t *named = lc_channel_new(ctx, name);
	if (!named) die("lc_channel_new");
	if (port == LC_DEFAULT_PORT) return named;
	lc_channel_t *moved = lc_channel_init_grp(ctx, lc_channel_in6addr(named), (short)port);
	if (!moved) die("lc_channel_init_grp");
	return moved;
}

int main(int argc, char **argv) {
	alarm(30);
	if (argc == 3 && !strcmp(argv[1], "group")) {
		lc_ctx_t *ctx = lc_ctx_new();
		lc_channel_t *chan = channel(ctx, argv[2], LC_DEFAULT_PORT);
		char addr[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, lc_channel_in6addr(chan), addr, sizeof addr);
		printf("%s\n", addr);
		lc_ctx_free(ctx);
		return 0;
	}
	if (argc < 5) {
		fprintf(stderr, "usage: lc-msg send IFACE NAME PORT | recv IFACE NAME PORT COUNT | group NAME\n");
		return 2;
	}
	int sending = !strcmp(argv[1], "send");
	unsigned int ifx = if_nametoindex(argv[2]);
	if (!ifx) die(argv[2]);
	lc_ctx_t *ctx = lc_ctx_new();
	if (!ctx) die("lc_ctx_new");
	lc_socket_t *sock = lc_socket_new(ctx);
	if (!sock) die("lc_socket_new");
	if (lc_socket_bind(sock, ifx)) die("lc_socket_bind");
	lc_channel_t *chan = channel(ctx, argv[3], atoi(argv[4]));
	if (lc_channel_bind(sock, chan)) die("lc_channel_bind");

	if (sending) {
		/* fwcast's receivers may share this host. */
		if (lc_socket_loop(sock, 1)) die("lc_socket_loop");
		if (lc_socket_ttl(sock, 1)) die("lc_socket_ttl");
		uint32_t be;
		unsigned long count = 0;
		int r;
		while ((r = read_all(&be, sizeof be)) == 1) {
			size_t len = ntohl(be);
			lc_message_t msg;
			if (lc_msg_init_size(&msg, len)) die("lc_msg_init_size");
			if (len && read_all(msg.data, len) != 1) die("short message on stdin");
			if (lc_msg_send(chan, &msg) < 0) die("lc_msg_send");
			lc_msg_free(&msg);
			count++;
			/* Paced: a receiver on a loaded machine keeps up. */
			struct timespec pause = { 0, 2000000 };
			nanosleep(&pause, NULL);
		}
		if (r < 0) die("read");
		fprintf(stderr, "sent %lu\n", count);
	} else {
		if (argc < 6) return 2;
		long want = atol(argv[5]);
		if (lc_channel_join(chan)) die("lc_channel_join");
		fprintf(stderr, "ready\n");
		for (long i = 0; i < want; i++) {
			lc_message_t msg = {0};
			ssize_t n = lc_msg_recv(sock, &msg);
			if (n < 0) die("lc_msg_recv");
			uint32_t be = htonl((uint32_t)msg.len);
			write_all(&be, sizeof be);
			if (msg.len) write_all(msg.data, msg.len);
			lc_msg_free(&msg);
		}
		lc_channel_part(chan);
	}
	lc_ctx_free(ctx);
	return 0;
}
