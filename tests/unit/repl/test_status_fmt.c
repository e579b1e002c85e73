/*
 * test_status_fmt.c - unit tests of the status renderers
 * (repl/status_fmt.c) and of the control socket that serves them
 * (repl/control.c).
 *
 * The renderers are checked on a hand-made two-peer status, one peer
 * connected and one retrying, whose text form is compared whole, so any
 * change in what an operator reads shows up here; JSON and Prometheus are
 * checked line by line against their schemas, including the escaping of a
 * refusal reason that carries quotes, backslashes, control characters and
 * bytes that are not UTF-8.  The control socket tests run a real server in
 * a mkdtemp directory with a fake snapshot and talk to it as a client,
 * including one that connects and never speaks.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "repl/control.h"
#include "journal/event.h"
#include "repl/status_fmt.h"

#define ID_A 0x0123456789abcdefull
#define ID_B 0x89abcdef01234567ull
#define ID_C 0xfedcba9876543210ull
/* 2026-11-23 08:13:20 UTC */
#define NOW_MS 1795421600000ll

static void sample_status(struct repl_status *st)
{
	struct repl_peer_status *b = &st->peers[0], *c = &st->peers[1];

	memset(st, 0, sizeof(*st));
	strcpy(st->name, "a");
	st->node_id = ID_A;
	st->primary = 1;
	st->term = 1;
	st->now_ms = NOW_MS;
	strcpy(st->listen, "127.0.0.1:7001");
	st->norigins = 3;
	st->journal_bytes = 3u << 20;
	st->journal_bound = 1u << 30;
	st->oldest[0] = (struct evid){ID_A, 1000};
	st->oldest[1] = (struct evid){ID_B, 1};
	st->oldest[2] = (struct evid){ID_C, 1};
	st->applied[0] = (struct evid){ID_A, 1234};
	st->applied[1] = (struct evid){ID_B, 3};
	st->applied[2] = (struct evid){ID_C, 2};
	st->npeers = 2;

	strcpy(b->name, "b");
	strcpy(b->address, "127.0.0.1:7002");
	b->id = ID_B;
	b->state = REPL_PEER_CONNECTED;
	b->since_ms = NOW_MS - 303000;
	b->inbound = 1;
	b->ncheckpoints = 3;
	memcpy(b->checkpoints, st->applied, 3 * sizeof(struct evid));
	b->events_sent = 1234;
	b->bytes_sent = 5347738;
	b->events_received = 3;
	b->bytes_received = 1229;
	b->connects = 1;

	strcpy(c->name, "c");
	strcpy(c->address, "127.0.0.1:7003");
	c->id = ID_C;
	c->state = REPL_PEER_RETRYING;
	c->since_ms = NOW_MS - 12000;
	strcpy(c->why, "connect: Connection refused");
	c->retry_in_ms = 1600;
	c->lag_events = 5;
	c->lag_bytes = 2048;
	c->lag_seconds = 12.5;
	c->ncheckpoints = 1;
	c->checkpoints[0] = (struct evid){ID_A, 1229};
	c->events_sent = 1229;
	c->bytes_sent = 1048576;
	c->connects = 2;

	st->nnotes = 2;
	st->outages = 1;
	st->notes[0] = (struct repl_note){
	    .type = EV_OUTAGE, .origin = ID_C, .seq = 7, .time_ms = 1795421521000ll};
	st->notes[1] = (struct repl_note){.type = EV_RECOVERED,
					  .origin = ID_C,
					  .seq = 8,
					  .time_ms = 1795421522000ll,
					  .first = {ID_A, 1201},
					  .last_seq = 1234};
}

/* The rendering of st by fmt as a C string; free() it. */
static char *render(int (*fmt)(const struct repl_status *, struct buf *),
		    const struct repl_status *st)
{
	struct buf b = BUF_INIT;

	cr_assert_eq(fmt(st, &b), 0);
	cr_assert_not_null(b.data);
	cr_assert_eq(strlen((char *)b.data), b.len, "output must be NUL-terminated at len");
	return (char *)b.data;
}

static void assert_has(const char *out, const char *want)
{
	cr_assert_not_null(strstr(out, want), "missing:\n%s\nin:\n%s", want, out);
}

Test(status_fmt, text_shows_connected_and_retrying_peers)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	out = render(status_fmt_text, &st);
	cr_assert_str_eq(
	    out, "node a (0123456789abcdef), primary, term 1, listening on 127.0.0.1:7001\n"
		 "applied: a=1234 b=3 c=2\n"
		 "in sync: no\n"
		 "journal: 3.0 MiB of a 1.0 GiB bound, oldest held: a=1000 b=1 c=1\n"
		 "peer b (89abcdef01234567) 127.0.0.1:7002\n"
		 "  link: connected for 5m3s; inbound: up\n"
		 "  lag: 0 events, 0 B, 0.0 s\n"
		 "  confirmed: a=1234 b=3 c=2\n"
		 "  sent 1234 events (5.1 MiB), received 3 events (1.2 KiB), 1 connect\n"
		 "peer c (fedcba9876543210) 127.0.0.1:7003\n"
		 "  link: retrying for 12s (connect: Connection refused), next try in 1.6s; "
		 "inbound: down\n"
		 "  lag: 5 events, 2.0 KiB, 12.5 s\n"
		 "  confirmed: a=1229\n"
		 "  sent 1229 events (1.0 MiB), received 0 events (0 B), 2 connects\n"
		 "outages:\n"
		 "  2026-11-23 08:12:01 c OUTAGE\n"
		 "  2026-11-23 08:12:02 c RECOVERED a 1201..1234\n");
	free(out);
}

Test(status_fmt, text_names_unseen_origins_by_hex_and_says_when_id_unknown)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	st.peers[1].id = 0;
	st.peers[1].state = REPL_PEER_CONNECTING;
	st.peers[1].why[0] = '\0';
	st.primary = 0;
	st.listen[0] = '\0';
	st.in_sync = 1;
	out = render(status_fmt_text, &st);
	assert_has(out, "node a (0123456789abcdef), replica, term 1, not listening\n");
	assert_has(out, "applied: a=1234 b=3 fedcba9876543210=2\n");
	assert_has(out, "in sync: yes\n");
	assert_has(out, "peer c (id not yet known) 127.0.0.1:7003\n"
			"  link: connecting for 12s; inbound: down\n");
	free(out);
}

Test(status_fmt, text_durations_and_sizes_read_naturally)
{
	static const struct {
		int64_t ago_ms;
		uint64_t bytes;
		const char *duration, *size;
	} cases[] = {
	    {350, 0, "connected for 350ms;", "events, 0 B,"},
	    {-5000, 1023, "connected for 0ms;", "events, 1023 B,"}, /* a clock step back */
	    {1600, 1024, "connected for 1.6s;", "events, 1.0 KiB,"},
	    {59999, 1536 * 1024, "connected for 59s;", "events, 1.5 MiB,"},
	    {3600000 + 5 * 60000 + 7000, 3ull << 30, "connected for 1h5m;", "events, 3.0 GiB,"},
	    {3 * 86400000ll + 4 * 3600000ll, 1ull << 62, "connected for 3d4h;", "events, 4.0 EiB,"},
	};
	struct repl_status st;
	char *out;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sample_status(&st);
		st.peers[0].since_ms = NOW_MS - cases[i].ago_ms;
		st.peers[0].lag_bytes = cases[i].bytes;
		out = render(status_fmt_text, &st);
		assert_has(out, cases[i].duration);
		assert_has(out, cases[i].size);
		free(out);
	}
}

Test(status_fmt, text_escapes_terminal_controls_in_why)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	strcpy(st.peers[1].why, "bad\033[2J\n\xc2\x9b"
				"x\xff \xc3\xa9");
	out = render(status_fmt_text, &st);
	assert_has(out, "(bad\\x1b[2J\\x0a\\xc2\\x9bx\\xff \xc3\xa9)");
	cr_assert_null(strchr(out, '\033'));
	free(out);
}

Test(status_fmt, json_follows_the_schema)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	out = render(status_fmt_json, &st);
	cr_assert_eq(out[0], '{');
	cr_assert_str_eq(out + strlen(out) - 2, "}\n");
	assert_has(out, "{\"name\":\"a\",\"node_id\":\"0123456789abcdef\",\"role\":\"primary\","
			"\"term\":1,\"listen\":\"127.0.0.1:7001\",\"now_ms\":1795421600000,"
			"\"in_sync\":false,\"applied\":{\"0123456789abcdef\":1234,"
			"\"89abcdef01234567\":3,\"fedcba9876543210\":2},\"peers\":[");
	assert_has(out,
		   "{\"name\":\"b\",\"address\":\"127.0.0.1:7002\","
		   "\"id\":\"89abcdef01234567\",\"state\":\"connected\","
		   "\"since_ms\":1795421297000,\"why\":\"\",\"retry_in_ms\":0,\"inbound\":true,"
		   "\"lag\":{\"events\":0,\"bytes\":0,\"seconds\":0.000},"
		   "\"checkpoints\":{\"0123456789abcdef\":1234,\"89abcdef01234567\":3,"
		   "\"fedcba9876543210\":2},\"events_sent\":1234,\"bytes_sent\":5347738,"
		   "\"events_received\":3,\"bytes_received\":1229,\"connects\":1,"
		   "\"synchronous\":false}");
	assert_has(out, ",{\"name\":\"c\",\"address\":\"127.0.0.1:7003\","
			"\"id\":\"fedcba9876543210\",\"state\":\"retrying\","
			"\"since_ms\":1795421588000,\"why\":\"connect: Connection refused\","
			"\"retry_in_ms\":1600,\"inbound\":false,"
			"\"lag\":{\"events\":5,\"bytes\":2048,\"seconds\":12.500},"
			"\"checkpoints\":{\"0123456789abcdef\":1229},");
	assert_has(out,
		   "],\"journal_bytes\":3145728,\"journal_bound\":1073741824,"
		   "\"oldest\":{\"0123456789abcdef\":1000,"
		   "\"89abcdef01234567\":1,\"fedcba9876543210\":1},"
		   "\"sync_peers\":0,\"degraded\":false,\"rebuild_needed\":false,"
		   "\"tails\":[],\"notes\":[{\"type\":\"outage\",\"origin\":\"fedcba9876543210\","
		   "\"seq\":7,\"time_ms\":1795421521000},"
		   "{\"type\":\"recovered\",\"origin\":\"fedcba9876543210\",\"seq\":8,"
		   "\"time_ms\":1795421522000,\"first_origin\":\"0123456789abcdef\","
		   "\"first_seq\":1201,\"last_seq\":1234}],");
	free(out);
}

Test(status_fmt, json_id_is_null_until_seen)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	st.peers[0].id = 0;
	st.peers[0].state = REPL_PEER_REFUSED;
	out = render(status_fmt_json, &st);
	assert_has(out, "\"address\":\"127.0.0.1:7002\",\"id\":null,\"state\":\"refused\",");
	free(out);
}

Test(status_fmt, json_escapes_quotes_backslashes_controls_and_stray_bytes)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	strcpy(st.peers[1].why, "say \"no\" \\ back\n\t\x01\x7f \xff\xc0\x80 \xe2\x82\xac");
	out = render(status_fmt_json, &st);
	assert_has(out, "\"why\":\"say \\\"no\\\" \\\\ back\\u000a\\u0009\\u0001\\u007f "
			"\\ufffd\\ufffd\\ufffd \xe2\x82\xac\",");
	free(out);
}

Test(status_fmt, json_fields_need_no_terminator)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	memset(st.peers[1].why, 'x', sizeof(st.peers[1].why));
	out = render(status_fmt_json, &st);
	assert_has(out, "xxx\",\"retry_in_ms\"");
	free(out);
}

Test(status_fmt, prometheus_two_peers)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "# HELP ledgerfs_primary ");
	assert_has(out, "# TYPE ledgerfs_primary gauge\nledgerfs_primary{node=\"a\"} 1\n");
	assert_has(out, "# TYPE ledgerfs_term gauge\nledgerfs_term{node=\"a\"} 1\n");
	assert_has(out, "# TYPE ledgerfs_in_sync gauge\nledgerfs_in_sync{node=\"a\"} 0\n");
	assert_has(out, "# TYPE ledgerfs_applied_seq gauge\n"
			"ledgerfs_applied_seq{node=\"a\",origin=\"0123456789abcdef\"} 1234\n"
			"ledgerfs_applied_seq{node=\"a\",origin=\"89abcdef01234567\"} 3\n"
			"ledgerfs_applied_seq{node=\"a\",origin=\"fedcba9876543210\"} 2\n");
	assert_has(out, "# TYPE ledgerfs_peer_up gauge\n"
			"ledgerfs_peer_up{node=\"a\",peer=\"b\"} 1\n"
			"ledgerfs_peer_up{node=\"a\",peer=\"c\"} 0\n");
	assert_has(out, "ledgerfs_peer_inbound_up{node=\"a\",peer=\"b\"} 1\n"
			"ledgerfs_peer_inbound_up{node=\"a\",peer=\"c\"} 0\n");
	assert_has(out, "ledgerfs_peer_lag_events{node=\"a\",peer=\"c\"} 5\n");
	assert_has(out, "ledgerfs_peer_lag_bytes{node=\"a\",peer=\"c\"} 2048\n");
	assert_has(out, "ledgerfs_peer_lag_seconds{node=\"a\",peer=\"c\"} 12.500\n");
	assert_has(out, "ledgerfs_peer_checkpoint_seq{node=\"a\",peer=\"b\","
			"origin=\"89abcdef01234567\"} 3\n");
	assert_has(out, "ledgerfs_peer_checkpoint_seq{node=\"a\",peer=\"c\","
			"origin=\"0123456789abcdef\"} 1229\n");
	assert_has(out, "# TYPE ledgerfs_peer_events_sent_total counter\n"
			"ledgerfs_peer_events_sent_total{node=\"a\",peer=\"b\"} 1234\n"
			"ledgerfs_peer_events_sent_total{node=\"a\",peer=\"c\"} 1229\n");
	assert_has(out, "ledgerfs_peer_bytes_sent_total{node=\"a\",peer=\"b\"} 5347738\n");
	assert_has(out, "ledgerfs_peer_events_received_total{node=\"a\",peer=\"b\"} 3\n");
	assert_has(out, "ledgerfs_peer_bytes_received_total{node=\"a\",peer=\"b\"} 1229\n");
	assert_has(out, "# TYPE ledgerfs_peer_connects_total counter\n"
			"ledgerfs_peer_connects_total{node=\"a\",peer=\"b\"} 1\n"
			"ledgerfs_peer_connects_total{node=\"a\",peer=\"c\"} 2\n");
	assert_has(out, "# TYPE ledgerfs_outages_total counter\n"
			"ledgerfs_outages_total{node=\"a\"} 1\n");
	assert_has(out, "# TYPE ledgerfs_journal_bytes gauge\n"
			"ledgerfs_journal_bytes{node=\"a\"} 3145728\n");
	assert_has(out, "# TYPE ledgerfs_journal_bound_bytes gauge\n"
			"ledgerfs_journal_bound_bytes{node=\"a\"} 1073741824\n");
	free(out);
}

Test(status_fmt, prometheus_lines_are_well_formed)
{
	struct repl_status st;
	char *out, *line, *save = NULL;

	sample_status(&st);
	out = render(status_fmt_prometheus, &st);
	cr_assert_str_eq(out + strlen(out) - 1, "\n");
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#') {
			cr_assert(!strncmp(line, "# HELP ledgerfs_", 16) ||
				      !strncmp(line, "# TYPE ledgerfs_", 16),
				  "%s", line);
			continue;
		}
		cr_assert(!strncmp(line, "ledgerfs_", 9), "%s", line);
		cr_assert_not_null(strstr(line, "{node=\"a\""), "%s", line);
		cr_assert_not_null(strstr(line, "} "), "%s", line);
	}
	free(out);
}

Test(status_fmt, prometheus_escapes_label_values)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	strcpy(st.peers[0].name, "b\"\\\nx\xff");
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_peer_up{node=\"a\",peer=\"b\\\"\\\\\\nx\xef\xbf\xbd\"} 1\n");
	free(out);
}

Test(status_fmt, sync_and_kept_aside_tails_are_shown)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	st.sync_peers = 1;
	st.degraded = 1;
	st.ntails = 1;
	st.tails[0] = (struct node_tail){0x0123456789abcdefull, 1230, 1234, 2};
	st.rebuild_needed = 1;
	st.peers[0].synchronous = 1;
	out = render(status_fmt_text, &st);
	assert_has(out, "synchronous replication: fsync waits for 1 peer; DEGRADED to "
			"asynchronous\n");
	assert_has(out, "kept aside: events 0123456789abcdef:1230..1234 beyond the promotion of "
			"term 2 (ledgerctl tail-export)\n");
	assert_has(out, "restart the node to rebuild it\n");
	assert_has(out, "; inbound: up; synchronous\n");
	free(out);
	out = render(status_fmt_json, &st);
	assert_has(out, "\"sync_peers\":1,\"degraded\":true,\"rebuild_needed\":true,"
			"\"tails\":[{\"origin\":\"0123456789abcdef\",\"first\":1230,"
			"\"last\":1234,\"term\":2}]");
	free(out);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_degraded{node=\"a\"} 1\n");
	assert_has(out, "ledgerfs_kept_aside_events{node=\"a\"} 5\n");
	free(out);
}

Test(status_fmt, empty_status_renders_in_every_format)
{
	struct repl_status st;
	char *out;

	memset(&st, 0, sizeof(st));
	strcpy(st.name, "z");
	st.node_id = 42;
	st.now_ms = 1000;
	out = render(status_fmt_text, &st);
	cr_assert_str_eq(out, "node z (000000000000002a), replica, term 0, not listening\n"
			      "applied: none\n"
			      "in sync: no\n"
			      "journal: 0 B of a 0 B bound, oldest held: none\n");
	free(out);
	out = render(status_fmt_json, &st);
	cr_assert_str_eq(
	    out, "{\"name\":\"z\",\"node_id\":\"000000000000002a\",\"role\":\"replica\","
		 "\"term\":0,\"listen\":\"\",\"now_ms\":1000,\"in_sync\":false,"
		 "\"applied\":{},\"peers\":[],\"journal_bytes\":0,\"journal_bound\":0,\"oldest\":{},"
		 "\"sync_peers\":0,\"degraded\":false,"
		 "\"rebuild_needed\":false,\"tails\":[],\"notes\":[],"
		 "\"snapshot\":{\"needed\":false,\"active\":false,\"done\":false,"
		 "\"peer\":\"\",\"round\":0,\"entries\":0,\"listed\":0,\"fetched\":0,"
		 "\"bytes\":0,\"reused\":0,\"deleted\":0},"
		 "\"diverged\":false,\"divergence\":{\"state\":\"none\",\"divergences\":0,"
		 "\"healed\":0,\"heal_failures\":0,\"heal_entries\":0,\"heal_bytes\":0}}\n");
	free(out);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_primary{node=\"z\"} 0\n");
	assert_has(out, "# TYPE ledgerfs_peer_up gauge\n# HELP");
	assert_has(out, "ledgerfs_outages_total{node=\"z\"} 0\n");
	cr_assert_null(strstr(out, "peer=\""));
	cr_assert_null(strstr(out, "origin=\""));
	free(out);
}

Test(status_fmt, counts_past_their_arrays_are_refused)
{
	struct buf b = BUF_INIT;
	struct repl_status st;

	sample_status(&st);
	st.npeers = CONFIG_MAX_PEERS + 1;
	cr_assert_eq(status_fmt_text(&st, &b), -EINVAL);
	sample_status(&st);
	st.peers[1].ncheckpoints = REPL_MAX_ORIGINS + 1;
	cr_assert_eq(status_fmt_json(&st, &b), -EINVAL);
	sample_status(&st);
	st.nnotes = REPL_MAX_NOTES + 1;
	cr_assert_eq(status_fmt_prometheus(&st, &b), -EINVAL);
	cr_assert_eq(b.len, 0, "nothing is rendered from a status that is not whole");
	buf_free(&b);
}

Test(status_fmt, renderers_append_to_what_is_there)
{
	struct buf b = BUF_INIT;
	struct repl_status st;

	sample_status(&st);
	cr_assert_eq(status_fmt_json(&st, &b), 0);
	cr_assert_eq(status_fmt_json(&st, &b), 0);
	cr_assert_eq(b.len % 2, 0);
	cr_assert_eq(memcmp(b.data, b.data + b.len / 2, b.len / 2), 0);
	buf_free(&b);
}

/* ---- control socket -------------------------------------------------- */

static char dir[] = "/tmp/ledgerfs-control-XXXXXX";
static char sock_path[sizeof(dir) + 32];
static int snapshot_result;
static int snapshot_calls;

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock_path, sizeof(sock_path), "%s/%s", dir, CONTROL_SOCKET);
	snapshot_result = 0;
	snapshot_calls = 0;
}

static void teardown(void)
{
	unlink(sock_path);
	rmdir(dir);
}

/* Control tests share a directory; the status tests above use none. */
TestSuite(control, .init = setup, .fini = teardown);

static int fake_snapshot(void *arg, struct repl_status *st)
{
	cr_assert_eq(arg, &snapshot_calls);
	snapshot_calls++;
	if (snapshot_result)
		return snapshot_result;
	sample_status(st);
	return 0;
}

static struct control *start(void)
{
	struct control *c = NULL;

	cr_assert_eq(control_start(sock_path, fake_snapshot, NULL, NULL, &snapshot_calls, &c), 0);
	cr_assert_not_null(c);
	return c;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int client_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	strcpy(sa.sun_path, sock_path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	return fd;
}

/* Everything fd sends until it closes, within 5 s, as a C string; free() it. */
static char *read_all(int fd)
{
	int64_t deadline = mono_ms() + 5000;
	struct pollfd pfd = {fd, POLLIN, 0};
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	ssize_t n;

	cr_assert_not_null(buf);
	for (;;) {
		cr_assert_gt(poll(&pfd, 1, (int)(deadline - mono_ms())), 0, "no reply in 5 s");
		if (cap - len < 1024) {
			cap *= 2;
			buf = realloc(buf, cap);
			cr_assert_not_null(buf);
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		cr_assert_geq(n, 0, "recv: %s", strerror(errno));
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

/* Send request as is (include its newline) and return the reply; free() it. */
static char *ask(const char *request)
{
	int fd = client_connect();

	cr_assert_eq(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t)strlen(request));
	return read_all(fd);
}

static void assert_reply_is(const char *request,
			    int (*fmt)(const struct repl_status *, struct buf *))
{
	struct repl_status st;
	char *want, *got;

	sample_status(&st);
	want = render(fmt, &st);
	got = ask(request);
	cr_assert_str_eq(got, want, "request %s", request);
	free(got);
	free(want);
}

Test(control, serves_status_json_and_metrics)
{
	struct control *c = start();
	struct stat sb;

	cr_assert_eq(lstat(sock_path, &sb), 0);
	cr_assert(S_ISSOCK(sb.st_mode));
	cr_assert_eq(sb.st_mode & 07777, 0600);
	assert_reply_is("status json\n", status_fmt_json);
	assert_reply_is("metrics\n", status_fmt_prometheus);
	assert_reply_is("status\n", status_fmt_text);
	assert_reply_is("status\r\n", status_fmt_text);
	cr_assert_eq(snapshot_calls, 4);
	control_stop(c);
}

Test(control, request_without_newline_is_served_at_eof)
{
	struct control *c = start();
	struct repl_status st;
	char *want, *got;
	int fd = client_connect();

	sample_status(&st);
	want = render(status_fmt_json, &st);
	cr_assert_eq(send(fd, "status json", 11, MSG_NOSIGNAL), 11);
	cr_assert_eq(shutdown(fd, SHUT_WR), 0);
	got = read_all(fd);
	cr_assert_str_eq(got, want);
	free(got);
	free(want);
	control_stop(c);
}

Test(control, unknown_and_overlong_requests_get_an_error_line)
{
	struct control *c = start();
	char long_req[CONTROL_MAX_REQUEST + 8];
	char *got;

	got = ask("bogus\n");
	cr_assert_str_eq(got, "error: unknown request 'bogus'\n");
	free(got);
	got = ask("status  json\x01\n");
	cr_assert_str_eq(got, "error: unknown request 'status  json?'\n");
	free(got);
	memset(long_req, 's', sizeof(long_req) - 2);
	long_req[sizeof(long_req) - 2] = '\n';
	long_req[sizeof(long_req) - 1] = '\0';
	got = ask(long_req);
	cr_assert_str_eq(got, "error: request longer than 64 bytes\n");
	free(got);
	cr_assert_eq(snapshot_calls, 0);
	control_stop(c);
}

Test(control, snapshot_failure_is_reported_to_the_client)
{
	struct control *c = start();
	char *got;

	snapshot_result = -EIO;
	got = ask("status\n");
	cr_assert_str_eq(got, "error: cannot take a status snapshot: Input/output error\n");
	free(got);
	control_stop(c);
}

Test(control, silent_client_is_dropped_and_the_next_is_served)
{
	struct control *c = start();
	int64_t t0 = mono_ms(), waited;
	int silent = client_connect();
	int next = client_connect();
	char *got;

	/* The second client queues behind the silent one and is served once it is dropped. */
	cr_assert_eq(send(next, "status json\n", 12, MSG_NOSIGNAL), 12);
	got = read_all(silent);
	waited = mono_ms() - t0;
	cr_assert_str_eq(got, "");
	cr_assert_geq(waited, CONTROL_TIMEOUT_MS - 100, "dropped after %lld ms", (long long)waited);
	cr_assert_leq(waited, CONTROL_TIMEOUT_MS + 500, "dropped after %lld ms", (long long)waited);
	free(got);
	got = read_all(next);
	cr_assert_eq(got[0], '{');
	cr_assert_leq(mono_ms() - t0, CONTROL_TIMEOUT_MS + 500);
	free(got);
	control_stop(c);
}

Test(control, stop_is_prompt_during_a_request_and_removes_the_socket)
{
	struct control *c = start();
	int silent = client_connect();
	int64_t t0;

	/* Let the server accept the silent client and wait on it. */
	usleep(100 * 1000);
	t0 = mono_ms();
	control_stop(c);
	cr_assert_leq(mono_ms() - t0, 500);
	cr_assert_eq(access(sock_path, F_OK), -1);
	cr_assert_eq(errno, ENOENT);
	close(silent);
	control_stop(NULL);
}

Test(control, stale_socket_is_replaced)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct control *c;
	char *got;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	/* A socket file nobody listens on, as a crashed node leaves it. */
	strcpy(sa.sun_path, sock_path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	cr_assert_eq(access(sock_path, F_OK), 0);
	c = start();
	got = ask("status\n");
	cr_assert_eq(strncmp(got, "node a ", 7), 0);
	free(got);
	control_stop(c);
}

Test(control, live_socket_is_not_taken_over)
{
	struct control *c = start(), *c2 = NULL;
	char *got;

	cr_assert_eq(control_start(sock_path, fake_snapshot, NULL, NULL, &snapshot_calls, &c2),
		     -EADDRINUSE);
	cr_assert_null(c2);
	got = ask("status\n");
	cr_assert_eq(strncmp(got, "node a ", 7), 0);
	free(got);
	control_stop(c);
}

Test(control, other_files_are_left_alone)
{
	struct control *c = NULL;
	FILE *f = fopen(sock_path, "w");

	cr_assert_not_null(f);
	fclose(f);
	cr_assert_eq(control_start(sock_path, fake_snapshot, NULL, NULL, &snapshot_calls, &c), -EEXIST);
	cr_assert_null(c);
	cr_assert_eq(access(sock_path, F_OK), 0);
}

Test(control, path_too_long_for_a_socket_is_refused)
{
	char path[200];
	struct control *c = NULL;

	memset(path, 'p', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	cr_assert_eq(control_start(path, fake_snapshot, NULL, NULL, &snapshot_calls, &c), -ENAMETOOLONG);
	cr_assert_null(c);
}

Test(status_fmt, snapshot_resync_progress_in_text_and_json)
{
	struct repl_status st;
	char *out;

	memset(&st, 0, sizeof(st));
	strcpy(st.name, "c");
	st.snap_needed = 1;
	st.snap.active = 1;
	strcpy(st.snap.peer, "a");
	st.snap.round = 2;
	st.snap.entries = 10001;
	st.snap.listed = 12;
	st.snap.fetched = 345;
	st.snap.bytes = 3 << 20;
	st.snap.reused = 40;
	st.snap.deleted = 1;
	out = render(status_fmt_text, &st);
	assert_has(out, "snapshot resync from a: running, round 2, 10001 entries in its tree, 12 "
			"directories compared, 345 entries received (3.0 MiB), 40 reused, 1 "
			"deleted\n");
	cr_assert_null(strstr(out, "snapshot resync needed"), "running, not waiting:\n%s", out);
	free(out);
	out = render(status_fmt_json, &st);
	assert_has(out, "\"snapshot\":{\"needed\":true,\"active\":true,\"done\":false,"
			"\"peer\":\"a\",\"round\":2,\"entries\":10001,\"listed\":12,"
			"\"fetched\":345,\"bytes\":3145728,\"reused\":40,\"deleted\":1},");
	free(out);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_snapshot_needed{node=\"c\"} 1\n");
	assert_has(out, "ledgerfs_snapshot_entries_received{node=\"c\"} 345\n");
	assert_has(out, "ledgerfs_snapshot_bytes_received{node=\"c\"} 3145728\n");
	free(out);
	st.snap.active = 0;
	out = render(status_fmt_text, &st);
	assert_has(out, "snapshot resync needed: waiting for a peer");
	free(out);
	st.primary = 1;
	out = render(status_fmt_text, &st);
	assert_has(out, "snapshot resync needed, but a primary never replaces its store");
	cr_assert_null(strstr(out, "waiting for a peer"), "a primary waits for no peer:\n%s", out);
	free(out);
}

/* DESIGN invariant 9: a divergence says where, why, and how its heal goes. */
Test(status_fmt, divergence_and_heal_in_text_json_and_metrics)
{
	struct repl_status st;
	char *out;

	memset(&st, 0, sizeof(st));
	strcpy(st.name, "b");
	st.now_ms = 1795421521000ll;
	st.div = (struct repl_divergence){
	    .state = REPL_DIV_HEALING,
	    .event = {0xa1, 963},
	    .type = EV_CHMOD,
	    .since_ms = 1795421520000ll,
	    .heals = 1,
	};
	strcpy(st.div.path, "play/n779388/n890355");
	strcpy(st.div.why, "base version mismatch: Stale file handle");
	strcpy(st.div.peer, "a");
	strcpy(st.div.scope, "play/n779388");
	st.divergences = 1;
	out = render(status_fmt_text, &st);
	assert_has(out, "diverged at event 00000000000000a1:963 (chmod play/n779388/n890355): "
			"base version mismatch: Stale file handle\n"
			"  healing subtree play/n779388 from a (heal 1); since 2026-11-23 08:12:00 "
			"UTC, 1 divergence, 0 heals, 0 failed since start\n");
	free(out);
	out = render(status_fmt_json, &st);
	assert_has(out, "\"in_sync\":false");
	assert_has(out,
		   "\"diverged\":true,\"divergence\":{\"state\":\"healing\","
		   "\"event\":{\"origin\":\"00000000000000a1\",\"seq\":963},\"type\":\"chmod\","
		   "\"path\":\"play/n779388/n890355\",");
	assert_has(out, "\"text\":\"diverged at event 00000000000000a1:963 (chmod "
			"play/n779388/n890355): base version mismatch: Stale file handle\"");
	assert_has(out, "\"scope\":\"play/n779388\"");
	free(out);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_diverged{node=\"b\"} 1\n");
	assert_has(out, "ledgerfs_heal_stopped{node=\"b\"} 0\n");
	assert_has(out,
		   "ledgerfs_diverged_event_seq{node=\"b\",origin=\"00000000000000a1\"} 963\n");
	assert_has(out, "ledgerfs_divergences_total{node=\"b\"} 1\n");
	free(out);

	st.div.state = REPL_DIV_STOPPED;
	strcpy(st.div.stopped, "heal of play/n779388 from a failed: Operation not permitted");
	st.div.retry_in_ms = 4000;
	st.heal_failures = 1;
	out = render(status_fmt_text, &st);
	assert_has(out, "  heal stopped: heal of play/n779388 from a failed: Operation not "
			"permitted; next try in 4.0s; since ");
	free(out);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_heal_stopped{node=\"b\"} 1\n");
	assert_has(out, "ledgerfs_heal_failures_total{node=\"b\"} 1\n");
	free(out);

	st.div.state = REPL_DIV_RESOLVED;
	st.div.entries = 2;
	st.div.bytes = 2048;
	st.heals = 1;
	st.heal_entries = 2;
	out = render(status_fmt_text, &st);
	assert_has(out, "last divergence, over: diverged at event 00000000000000a1:963");
	assert_has(out,
		   "  healed subtree play/n779388 from a: 2 entries replaced (2.0 KiB); since");
	free(out);
	out = render(status_fmt_json, &st);
	assert_has(out, "\"diverged\":false,\"divergence\":{\"state\":\"resolved\"");
	assert_has(out, "\"heal_entries\":2,");
	free(out);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_diverged{node=\"b\"} 0\n");
	assert_has(out, "ledgerfs_heals_total{node=\"b\"} 1\n");
	assert_has(out, "ledgerfs_heal_entries_total{node=\"b\"} 2\n");
	free(out);
}

Test(status_fmt, archive_lag_and_failure_are_shown)
{
	struct repl_status st;
	char *out;

	sample_status(&st);
	out = render(status_fmt_text, &st);
	cr_assert_null(strstr(out, "archive"), "no archive line when archiving is off");
	free(out);
	st.archive.on = 1;
	st.archive.lag_events = 42;
	st.archive.lag_ms = 2500;
	snprintf(st.archive.error, sizeof(st.archive.error), "/b/archive: \"full\"");
	out = render(status_fmt_text, &st);
	assert_has(out, "archive: 42 events behind, 2.5 s; failing: /b/archive: \"full\"\n");
	free(out);
	out = render(status_fmt_json, &st);
	assert_has(out, "\"archive\":{\"lag_events\":42,\"lag_ms\":2500,"
			"\"error\":\"/b/archive: \\\"full\\\"\"}");
	free(out);
	out = render(status_fmt_prometheus, &st);
	assert_has(out, "ledgerfs_archive_lag_events{node=\"a\"} 42\n");
	assert_has(out, "ledgerfs_archive_lag_seconds{node=\"a\"} 2.500\n");
	assert_has(out, "ledgerfs_archive_failing{node=\"a\"} 1\n");
	free(out);
}

/* "hold": an action that keeps something until the client lets go. */
static atomic_int held, released;

static int hold_action(void *arg, const char *req, char *reply, size_t len)
{
	if (strcmp(req, "hold"))
		return -ENOENT;
	atomic_store(&held, 1);
	snprintf(reply, len, "ok: held\n");
	return CONTROL_HOLD;
}

static void hold_release(void *arg)
{
	cr_assert_eq(arg, &snapshot_calls);
	atomic_store(&held, 0);
	atomic_fetch_add(&released, 1);
}

Test(control, a_held_request_is_released_when_the_client_lets_go_or_at_stop)
{
	struct control *c = NULL;
	char line[64] = "";
	ssize_t n;
	int fd;

	atomic_store(&released, 0);
	cr_assert_eq(control_start(sock_path, fake_snapshot, hold_action, hold_release,
				   &snapshot_calls, &c),
		     0);
	fd = client_connect();
	cr_assert_eq(send(fd, "hold\n", 5, MSG_NOSIGNAL), 5);
	n = recv(fd, line, sizeof(line) - 1, 0);
	cr_assert_eq(n, 9, "reply: %s", line);
	cr_assert_str_eq(line, "ok: held\n");
	usleep(200000);
	cr_assert_eq(atomic_load(&held), 1, "still held while the client keeps the connection");
	cr_assert_eq(atomic_load(&released), 0);
	close(fd);
	for (int i = 0; i < 100 && atomic_load(&released) == 0; i++)
		usleep(20000);
	cr_assert_eq(atomic_load(&released), 1, "released once the client closed");
	/* The next request is served as usual. */
	free(ask("status\n"));
	/* A client still holding at stop is released by control_stop(). */
	fd = client_connect();
	cr_assert_eq(send(fd, "hold\n", 5, MSG_NOSIGNAL), 5);
	cr_assert_gt(recv(fd, line, sizeof(line) - 1, 0), 0);
	control_stop(c);
	cr_assert_eq(atomic_load(&released), 2, "released at stop");
	close(fd);
}
