/*
 * test_hello.c - the handshake's rules (net/hello.c).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "net/hello.h"

static const uint8_t cluster[PROTO_CLUSTER_ID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static struct proto_msg hello(uint64_t node_id, struct evid *vec, uint32_t n)
{
	struct proto_msg m = {.type = PROTO_HELLO};

	memcpy(m.hello.cluster_id, cluster, sizeof(cluster));
	m.hello.node_id = node_id;
	m.hello.term = 1;
	m.hello.count = n;
	m.hello.applied = vec;
	return m;
}

Test(hello, member_hello_accepted)
{
	struct evid vec[] = {{5, 10}, {9, 0}};
	struct proto_msg m = hello(9, vec, 2);
	const char *why = NULL;

	cr_assert_eq(hello_check(cluster, 9, &m, &why), 0);
}

Test(hello, first_frame_must_be_hello)
{
	struct proto_msg m = {.type = PROTO_ACK};
	const char *why = NULL;

	cr_assert_eq(hello_check(cluster, 9, &m, &why), PROTO_ERR_MALFORMED);
	cr_assert_str_eq(why, "first frame is not HELLO");
}

Test(hello, other_cluster_refused)
{
	uint8_t other[PROTO_CLUSTER_ID_LEN] = {9};
	struct proto_msg m = hello(9, NULL, 0);
	const char *why = NULL;

	cr_assert_eq(hello_check(other, 9, &m, &why), PROTO_ERR_CLUSTER);
	cr_assert_not_null(why);
}

Test(hello, node_id_must_match_certificate)
{
	struct proto_msg m = hello(8, NULL, 0);
	const char *why = NULL;

	cr_assert_eq(hello_check(cluster, 9, &m, &why), PROTO_ERR_MEMBER);
	cr_assert_str_eq(why, "HELLO node id differs from the certificate's");
}

Test(hello, vector_with_origin_zero_refused)
{
	struct evid vec[] = {{0, 3}};
	struct proto_msg m = hello(9, vec, 1);
	const char *why = NULL;

	cr_assert_eq(hello_check(cluster, 9, &m, &why), PROTO_ERR_MALFORMED);
	cr_assert_not_null(why);
}

Test(hello, events_with_escaping_paths_refused)
{
	static const char *const bad[] = {"../x", "/etc/passwd", "a/../../b", "a//b", ""};
	const char *why;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct event ev = {
		    .type = EV_CREATE, .origin = 1, .seq = 1, .path = (char *)bad[i]};

		why = NULL;
		cr_assert_eq(hello_check_event(&ev, &why), PROTO_ERR_EVENT, "path '%s'", bad[i]);
		cr_assert_not_null(why);
		ev.path = "ok";
		ev.type = EV_RENAME;
		ev.path2 = (char *)bad[i];
		why = NULL;
		cr_assert_eq(hello_check_event(&ev, &why), PROTO_ERR_EVENT, "path2 '%s'", bad[i]);
	}
}

Test(hello, events_need_origin_and_seq)
{
	struct event ev = {.type = EV_MKDIR, .origin = 0, .seq = 1, .path = "d"};
	const char *why = NULL;

	cr_assert_eq(hello_check_event(&ev, &why), PROTO_ERR_EVENT);
	ev.origin = 1;
	ev.seq = 0;
	cr_assert_eq(hello_check_event(&ev, &why), PROTO_ERR_EVENT);
	ev.seq = 1;
	why = NULL;
	cr_assert_eq(hello_check_event(&ev, &why), 0);
	ev.path = "a/b/c";
	cr_assert_eq(hello_check_event(&ev, &why), 0);
}
