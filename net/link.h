/*
 * link.h - one TLS connection between two nodes, carrying protocol frames.
 *
 * The socket is non-blocking and every call takes a deadline, so a peer
 * that stops reading or writing (paused, cut off, hostile) costs a thread
 * at most that long and never hangs it.  One thread owns a link: OpenSSL
 * objects must not be used from two threads at once.
 *
 * Errors are negative errnos with a reason for the log in l->why (or the
 * why buffer of the dial/accept calls): -ETIMEDOUT, -ECONNRESET (closed by
 * the peer), -EPROTO (TLS failure, OpenSSL's reason), -EBADMSG/-EMSGSIZE
 * (a frame the codec refused), -ECONNREFUSED etc. from connect().
 */
#ifndef LEDGERFS_LINK_H
#define LEDGERFS_LINK_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "net/proto.h"

#define LINK_WHY_MAX 256

struct link {
	int fd;
	SSL *ssl;
	char addr[64]; /* the peer's numeric address, for logs */
	uint8_t *rbuf; /* received bytes not yet handed out */
	size_t rlen, rcap;
	size_t consumed; /* bytes of rbuf the last frame handed out took */
	struct buf out;	 /* frames queued by the caller for link_flush() */
	uint64_t bytes_in, bytes_out;
	char why[LINK_WHY_MAX];
};

/*
 * Connect to address ("HOST:PORT", "[V6]:PORT") and do the TLS client
 * handshake within timeout_ms.  *out is the caller's: link_close().
 */
int link_dial(const char *address, SSL_CTX *ctx, int timeout_ms, struct link **out, char *why,
	      size_t whylen);

/*
 * link_dial() from the host of source ("HOST:PORT", the node's listen
 * address; port 0): peers then see the node at the address it listens on,
 * and a firewall rule on that address covers both directions.  A wildcard
 * or empty host, a NULL source, or a host of another address family than
 * the peer's lets the kernel pick, as link_dial() does.
 */
int link_dial_from(const char *address, const char *source, SSL_CTX *ctx, int timeout_ms,
		   struct link **out, char *why, size_t whylen);

/*
 * Take an accepted socket (ownership passes to the link, even on failure)
 * and do the TLS server handshake within timeout_ms.
 */
int link_accept(int fd, SSL_CTX *ctx, int timeout_ms, struct link **out, char *why, size_t whylen);

void link_close(struct link *l);

/* Send l->out whole within timeout_ms, then empty it. */
int link_flush(struct link *l, int timeout_ms);

/*
 * The next frame, waiting up to timeout_ms (0: only what is buffered or
 * readable now).  0 with *msg filled (proto_msg_free() it; EVENTS points
 * into the link's buffer, valid until the next link_recv()), -EAGAIN when
 * no whole frame arrived in time (a partial one stays buffered).
 */
int link_recv(struct link *l, int timeout_ms, struct proto_msg *msg);

/*
 * Wait up to timeout_ms until the link has input or extra_fd (-1: none) is
 * readable.  Returns a mask: 1 link, 2 extra_fd; 0 on timeout.
 */
int link_wait(struct link *l, int extra_fd, int timeout_ms);

/* Wait up to timeout_ms for fd to be readable: 1 if it is, else 0. */
int link_wait_fd(int fd, int timeout_ms);

#endif
