/*
 * hello.c - the handshake's rules (see hello.h).
 */
#include <string.h>

#include "net/hello.h"
#include "store/path.h"

int hello_check(const uint8_t cluster_id[PROTO_CLUSTER_ID_LEN], uint64_t cert_id,
		const struct proto_msg *first, const char **why)
{
	const struct proto_hello *h = &first->hello;
	uint32_t i;

	if (first->type != PROTO_HELLO) {
		*why = first->type == PROTO_ERROR ? "peer sent an error instead of HELLO"
						  : "first frame is not HELLO";
		return PROTO_ERR_MALFORMED;
	}
	if (memcmp(h->cluster_id, cluster_id, PROTO_CLUSTER_ID_LEN) != 0) {
		*why = "HELLO names another cluster";
		return PROTO_ERR_CLUSTER;
	}
	if (h->node_id != cert_id) {
		*why = "HELLO node id differs from the certificate's";
		return PROTO_ERR_MEMBER;
	}
	for (i = 0; i < h->count; i++) {
		if (h->applied[i].origin == 0) {
			*why = "HELLO applied vector names origin 0";
			return PROTO_ERR_MALFORMED;
		}
	}
	return 0;
}

int hello_check_event(const struct event *ev, const char **why)
{
	if (ev->origin == 0 || ev->seq == 0 || ev->seq == UINT64_MAX) {
		*why = "event has no valid origin and seq";
		return PROTO_ERR_EVENT;
	}
	if ((ev->path && path_check(ev->path, why) < 0) ||
	    (ev->path2 && path_check(ev->path2, why) < 0))
		return PROTO_ERR_EVENT;
	return 0;
}
