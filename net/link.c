/*
 * link.c - a TLS connection carrying protocol frames (see link.h).
 *
 * Reads go into one growable buffer per link that is sized by the frame
 * header before the body arrives, so a peer announcing a huge frame is
 * refused from its length field (proto_frame_peek()) before we allocate
 * for it, and the buffer is reused for every frame instead of being
 * allocated per message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/config.h"
#include "net/link.h"
#include "net/tls.h"

/* The read buffer starts at this size. */
#define LINK_RBUF_MIN (256u << 10)
/*
 * It keeps what it grew to up to this size: faulting fresh pages in for
 * every 1 MiB batch cost a third of the receive throughput.  Only a rare
 * bigger frame gives its memory back.
 */
#define LINK_RBUF_KEEP (8u << 20)

static int remaining(int64_t deadline)
{
	int64_t left = deadline - clock_mono_ms();

	return left < 0 ? 0 : left > 1000000 ? 1000000 : (int)left;
}

/* Split "HOST:PORT" or "[V6]:PORT" into host and port. */
static int split_address(const char *address, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = strrchr(address, ':'), *h = address;
	size_t n;

	if (!colon || !colon[1] || strlen(colon + 1) >= plen)
		return -EINVAL;
	n = (size_t)(colon - address);
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n == 0 || n >= hlen)
		return -EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	snprintf(port, plen, "%s", colon + 1);
	return 0;
}

static void set_why(char *why, size_t len, const char *what, const char *detail)
{
	if (why && len)
		snprintf(why, len, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

static void tune_socket(int fd)
{
	int one = 1;

	/* Batches are already coalesced; Nagle would only delay acks and pings. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

static void describe_peer(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(buf, len, "%s:%u", host, port);
}

/* Wait for the socket to be ready for what OpenSSL asked (err from SSL_get_error). */
static int wait_ssl(struct link *l, int err, int64_t deadline)
{
	struct pollfd p = {.fd = l->fd, .events = err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
	int left = remaining(deadline), r;

	if (left == 0)
		return -ETIMEDOUT;
	r = poll(&p, 1, left);
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

/* Turn an SSL failure into an errno and a reason in l->why. */
static int ssl_failure(struct link *l, int ret, const char *what)
{
	int err = SSL_get_error(l->ssl, ret);
	char text[200];

	if (err == SSL_ERROR_ZERO_RETURN ||
	    (err == SSL_ERROR_SYSCALL && ret == 0 && ERR_peek_error() == 0)) {
		set_why(l->why, sizeof(l->why), what, "connection closed by the peer");
		ERR_clear_error();
		return -ECONNRESET;
	}
	if (err == SSL_ERROR_SYSCALL && errno) {
		set_why(l->why, sizeof(l->why), what, strerror(errno));
		ERR_clear_error();
		return -ECONNRESET;
	}
	tls_error_text(l->ssl, text, sizeof(text));
	set_why(l->why, sizeof(l->why), what, text);
	return -EPROTO;
}

static int handshake(struct link *l, int server, int64_t deadline)
{
	for (;;) {
		int ret = server ? SSL_accept(l->ssl) : SSL_connect(l->ssl), err, r;

		if (ret == 1)
			return 0;
		err = SSL_get_error(l->ssl, ret);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
			return ssl_failure(l, ret, "TLS handshake");
		r = wait_ssl(l, err, deadline);
		if (r < 0) {
			set_why(l->why, sizeof(l->why), "TLS handshake", "timed out");
			return r;
		}
	}
}

static int link_new(int fd, SSL_CTX *ctx, struct link **out)
{
	struct link *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->fd = fd;
	l->ssl = SSL_new(ctx);
	if (!l->ssl || !SSL_set_fd(l->ssl, fd)) {
		if (l->ssl)
			SSL_free(l->ssl);
		free(l);
		return -ENOMEM;
	}
	SSL_set_mode(l->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	describe_peer(fd, l->addr, sizeof(l->addr));
	*out = l;
	return 0;
}

/*
 * The local addresses an outgoing connection may bind to: the host of
 * source ("HOST:PORT", the node's listen address), resolved.  0 with *out
 * NULL when there is nothing to bind: no source, or a wildcard host ("",
 * "*", 0.0.0.0, ::), for which the kernel picks as it always did.  *out is
 * the caller's: freeaddrinfo().
 */
static int source_addrs(const char *source, struct addrinfo **out, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	char host[CONFIG_ADDR_MAX], port[16];
	const char *colon = source ? strrchr(source, ':') : NULL;
	int g;

	*out = NULL;
	if (!source || !source[0] || (colon && (colon == source || !strncmp(source, "*:", 2))))
		return 0;
	if (split_address(source, host, sizeof(host), port, sizeof(port)) < 0) {
		set_why(why, whylen, "listen address is not HOST:PORT", source);
		return -EINVAL;
	}
	g = getaddrinfo(host, NULL, &hints, &res);
	if (g != 0) {
		set_why(why, whylen, "cannot resolve the listen address", gai_strerror(g));
		return -EHOSTUNREACH;
	}
	*out = res;
	return 0;
}

/* The first of src with ai's family and a specific (not wildcard) address, or NULL. */
static const struct addrinfo *source_for(const struct addrinfo *src, const struct addrinfo *ai)
{
	for (; src; src = src->ai_next) {
		if (src->ai_family != ai->ai_family)
			continue;
		if (src->ai_family == AF_INET &&
		    ((const struct sockaddr_in *)src->ai_addr)->sin_addr.s_addr !=
			htonl(INADDR_ANY))
			return src;
		if (src->ai_family == AF_INET6 &&
		    !IN6_IS_ADDR_UNSPECIFIED(
			&((const struct sockaddr_in6 *)src->ai_addr)->sin6_addr))
			return src;
	}
	return NULL;
}

/*
 * Non-blocking connect to one resolved address, finished within the
 * deadline; from the address src (port 0) if not NULL.
 */
static int connect_one(const struct addrinfo *ai, const struct addrinfo *src, int64_t deadline,
		       int *out)
{
	struct pollfd p;
	socklen_t sl = sizeof(int);
	int fd, soerr = 0, one = 1, r;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (src) {
		/* The port is chosen at connect() for the 4-tuple, not reserved here for good. */
		if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
		    bind(fd, src->ai_addr, src->ai_addrlen) < 0) {
			r = -errno;
			goto fail;
		}
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
		r = -errno;
		goto fail;
	}
	p = (struct pollfd){.fd = fd, .events = POLLOUT};
	do {
		r = poll(&p, 1, remaining(deadline));
	} while (r < 0 && errno == EINTR);
	if (r <= 0) {
		r = r == 0 ? -ETIMEDOUT : -errno;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
		r = soerr ? -soerr : -errno;
		goto fail;
	}
	*out = fd;
	return 0;
fail:
	close(fd);
	return r;
}

int link_dial(const char *address, SSL_CTX *ctx, int timeout_ms, struct link **out, char *why,
	      size_t whylen)
{
	return link_dial_from(address, NULL, ctx, timeout_ms, out, why, whylen);
}

int link_dial_from(const char *address, const char *source, SSL_CTX *ctx, int timeout_ms,
		   struct link **out, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *src = NULL, *ai;
	int64_t deadline = clock_mono_ms() + timeout_ms;
	char host[CONFIG_ADDR_MAX], port[16];
	struct link *l = NULL;
	int fd = -1, r, g;

	r = split_address(address, host, sizeof(host), port, sizeof(port));
	if (r < 0) {
		set_why(why, whylen, "address is not HOST:PORT", address);
		return r;
	}
	r = source_addrs(source, &src, why, whylen);
	if (r < 0)
		return r;
	g = getaddrinfo(host, port, &hints, &res);
	if (g != 0) {
		if (src)
			freeaddrinfo(src);
		set_why(why, whylen, "cannot resolve address", gai_strerror(g));
		return -EHOSTUNREACH;
	}
	r = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		r = connect_one(ai, source_for(src, ai), deadline, &fd);
		if (r == 0)
			break;
	}
	freeaddrinfo(res);
	if (src)
		freeaddrinfo(src);
	if (r < 0) {
		set_why(why, whylen, "connect", strerror(-r));
		return r;
	}
	tune_socket(fd);
	r = link_new(fd, ctx, &l);
	if (r < 0) {
		close(fd);
		set_why(why, whylen, "connect", strerror(-r));
		return r;
	}
	r = handshake(l, 0, deadline);
	if (r < 0) {
		set_why(why, whylen, l->why, NULL);
		link_close(l);
		return r;
	}
	*out = l;
	return 0;
}

int link_accept(int fd, SSL_CTX *ctx, int timeout_ms, struct link **out, char *why, size_t whylen)
{
	struct link *l = NULL;
	int r;

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		r = -errno;
		close(fd);
		set_why(why, whylen, "accept", strerror(-r));
		return r;
	}
	tune_socket(fd);
	r = link_new(fd, ctx, &l);
	if (r < 0) {
		close(fd);
		set_why(why, whylen, "accept", strerror(-r));
		return r;
	}
	r = handshake(l, 1, clock_mono_ms() + timeout_ms);
	if (r < 0) {
		set_why(why, whylen, l->why, NULL);
		link_close(l);
		return r;
	}
	*out = l;
	return 0;
}

void link_close(struct link *l)
{
	if (!l)
		return;
	/* A close_notify is a courtesy: never wait for a peer that stopped reading. */
	SSL_set_quiet_shutdown(l->ssl, 0);
	if (SSL_is_init_finished(l->ssl))
		SSL_shutdown(l->ssl);
	SSL_free(l->ssl);
	ERR_clear_error();
	close(l->fd);
	buf_free(&l->out);
	free(l->rbuf);
	free(l);
}

int link_flush(struct link *l, int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	size_t off = 0;
	int r = 0;

	while (off < l->out.len) {
		size_t chunk = l->out.len - off > (1u << 30) ? (1u << 30) : l->out.len - off;
		int n = SSL_write(l->ssl, l->out.data + off, (int)chunk), err;

		if (n > 0) {
			off += (size_t)n;
			l->bytes_out += (uint64_t)n;
			continue;
		}
		err = SSL_get_error(l->ssl, n);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
			r = ssl_failure(l, n, "send");
			break;
		}
		r = wait_ssl(l, err, deadline);
		if (r < 0) {
			set_why(l->why, sizeof(l->why), "send", "peer stopped reading (timed out)");
			break;
		}
	}
	buf_reset(&l->out);
	return r;
}

/* Drop the frame handed out last; give back the memory of an unusually big one. */
static void release_consumed(struct link *l)
{
	if (l->consumed) {
		memmove(l->rbuf, l->rbuf + l->consumed, l->rlen - l->consumed);
		l->rlen -= l->consumed;
		l->consumed = 0;
	}
	if (l->rcap > LINK_RBUF_KEEP && l->rlen <= LINK_RBUF_KEEP) {
		uint8_t *p = realloc(l->rbuf, LINK_RBUF_KEEP);

		if (p) {
			l->rbuf = p;
			l->rcap = LINK_RBUF_KEEP;
		}
	}
}

static int grow_rbuf(struct link *l, size_t want)
{
	uint8_t *p;

	if (want <= l->rcap)
		return 0;
	p = realloc(l->rbuf, want);
	if (!p)
		return -ENOMEM;
	l->rbuf = p;
	l->rcap = want;
	return 0;
}

int link_recv(struct link *l, int timeout_ms, struct proto_msg *msg)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	const char *why = NULL;
	size_t flen = 0;
	int r;

	release_consumed(l);
	if (grow_rbuf(l, LINK_RBUF_MIN) < 0)
		return -ENOMEM;
	for (;;) {
		int n, err;

		r = proto_frame_peek(l->rbuf, l->rlen, &flen, &why);
		if (r == 0) {
			r = proto_parse(l->rbuf, flen, msg, &why);
			if (r < 0) {
				set_why(l->why, sizeof(l->why), "bad frame", why);
				return r;
			}
			l->consumed = flen;
			return 0;
		}
		if (r != -EAGAIN) {
			set_why(l->why, sizeof(l->why), "bad frame", why);
			return r;
		}
		if (flen > l->rcap && grow_rbuf(l, flen) < 0)
			return -ENOMEM;
		if (l->rlen == l->rcap && grow_rbuf(l, l->rcap * 2) < 0)
			return -ENOMEM;
		n = SSL_read(l->ssl, l->rbuf + l->rlen, (int)(l->rcap - l->rlen));
		if (n > 0) {
			l->rlen += (size_t)n;
			l->bytes_in += (uint64_t)n;
			continue;
		}
		err = SSL_get_error(l->ssl, n);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
			r = ssl_failure(l, n, "receive");
			if (l->rlen > l->consumed)
				snprintf(l->why, sizeof(l->why),
					 "truncated frame: link ended after %zu of %zu bytes",
					 l->rlen - l->consumed, flen ? flen : (size_t)4);
			return r;
		}
		if (remaining(deadline) == 0)
			return -EAGAIN;
		r = wait_ssl(l, err, deadline);
		if (r == -ETIMEDOUT)
			return -EAGAIN;
		if (r < 0) {
			set_why(l->why, sizeof(l->why), "receive", strerror(-r));
			return r;
		}
	}
}

/* A whole frame (or a broken one, which link_recv() will report) is buffered. */
static int frame_buffered(struct link *l)
{
	const char *why;
	size_t flen;

	return l->rlen > l->consumed &&
	       proto_frame_peek(l->rbuf + l->consumed, l->rlen - l->consumed, &flen, &why) !=
		   -EAGAIN;
}

int link_wait(struct link *l, int extra_fd, int timeout_ms)
{
	struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN}, {.fd = extra_fd, .events = POLLIN}};
	int r, mask = 0, ready = SSL_pending(l->ssl) > 0 || frame_buffered(l);

	r = poll(p, extra_fd >= 0 ? 2 : 1, ready ? 0 : timeout_ms);
	if (r < 0)
		return ready;
	if (ready || p[0].revents)
		mask |= 1;
	if (extra_fd >= 0 && p[1].revents)
		mask |= 2;
	return mask;
}

int link_wait_fd(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, timeout_ms) > 0;
}
