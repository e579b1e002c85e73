/*
 * hello.h - the handshake's rules, kept apart from the I/O so that they
 * can be unit-tested and fuzzed with the frame codec (tools/fuzz frames).
 *
 * A link is trusted only after the peer's certificate names a member and
 * its first frame is a HELLO that agrees with the certificate and our
 * cluster; every event received afterwards must name a real origin and seq
 * and paths that stay beneath the store.
 */
#ifndef LEDGERFS_HELLO_H
#define LEDGERFS_HELLO_H

#include <stdint.h>

#include "journal/event.h"
#include "net/proto.h"

/*
 * Judge a peer's first frame.  cert_id is the node id its verified
 * certificate carries.  0 if it is an acceptable HELLO, else the
 * PROTO_ERR_* code to send back, with *why (static text) for the log.
 */
int hello_check(const uint8_t cluster_id[PROTO_CLUSTER_ID_LEN], uint64_t cert_id,
		const struct proto_msg *first, const char **why);

/*
 * Judge a decoded event received from a peer before anything is done with
 * it: origin and seq set, paths valid store paths.  0, or PROTO_ERR_EVENT
 * with *why.
 */
int hello_check_event(const struct event *ev, const char **why);

#endif
