/*
 * test_journal.c - the journal (journal/journal.c) and its value log (journal/vlog.c).
 *
 * Each test works in its own mkdtemp directory, removed by the fixture.
 * Crashes are simulated by forked children that _exit() without closing,
 * which leaves exactly what a killed process leaves: what reached the
 * kernel, nothing of what was only in memory.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <leveldb/c.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/dirscan.h"
#include "journal/journal.h"
#include "journal/vlog.h"
#include "tree.h"

#define NODE 42

static char tmp[64];
static char jdir[96];

static void setup(void)
{
	strcpy(tmp, "/tmp/test_journal.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(jdir, sizeof(jdir), "%s/journal", tmp);
}

static void teardown(void)
{
	tree_remove(tmp);
}

TestSuite(journal, .init = setup, .fini = teardown);

static struct journal *jopen(int create)
{
	struct journal *j = NULL;
	const char *why = NULL;
	int ret = journal_open(jdir, create, NODE, &j, &why);

	cr_assert_eq(ret, 0, "journal_open: %d (%s)", ret, why ? why : "");
	return j;
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);

	cr_assert_not_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 31 + seed + (i >> 12));
	return p;
}

/* A write event whose data points at buf (not owned by the event). */
static struct event write_event(uint8_t *buf, uint32_t len, uint64_t off)
{
	return (struct event){
	    .type = EV_WRITE,
	    .fid = {NODE, 7},
	    .offset = off,
	    .data = buf,
	    .data_len = len,
	    .mtime_sec = 1700000000,
	};
}

static void append_small(struct journal *j, uint64_t *seq)
{
	uint8_t b[16] = "hello";
	struct event ev = write_event(b, sizeof(b), 0);

	cr_assert_eq(journal_append(j, &ev), 0);
	if (seq)
		*seq = ev.seq;
}

/*
 * A child that plays a crash keeps its journal here, where a killed process
 * would have held it, so leak checkers see it as reachable.
 */
static struct journal *volatile crashed;

/* Run fn in a child and return its exit status (-1 if it did not exit). */
static int in_child(int (*fn)(void))
{
	int status;
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0)
		_exit(fn());
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(journal, create_refuses_existing_and_open_refuses_missing)
{
	struct journal *j = NULL;
	const char *why = NULL;

	cr_assert_eq(journal_open(jdir, 0, 0, &j, &why), -ENOENT);
	cr_assert_null(j);
	cr_assert_not_null(why);
	cr_assert_eq(journal_open(jdir, 1, 0, &j, &why), -EINVAL);
	j = jopen(1);
	journal_close(j);
	why = NULL;
	cr_assert_eq(journal_open(jdir, 1, NODE, &j, &why), -EEXIST);
	cr_assert_str_eq(why, "directory already holds a journal");
	j = jopen(0);
	journal_close(j);
}

/*
 * A running node holds its journal open; journal_lock_holder() names the
 * process, and a process killed with SIGKILL holds nothing.
 */
Test(journal, lock_holder_names_the_process_holding_the_journal)
{
	int go[2], ready[2], status;
	pid_t pid, holder = 0;
	char c = 0;

	cr_assert_eq(journal_lock_holder(jdir, &holder), 0, "no journal: nobody holds it");
	journal_close(jopen(1));
	cr_assert_eq(journal_lock_holder(jdir, &holder), 0, "closed: nobody holds it");
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(ready), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		struct journal *j = NULL;

		close(go[1]);
		close(ready[0]);
		if (journal_open(jdir, 0, NODE, &j, NULL) < 0 || write(ready[1], "x", 1) != 1)
			_exit(1);
		crashed = j;
		/* Held until the parent says, or until it is killed. */
		if (read(go[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(go[0]);
	close(ready[1]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "the child opened the journal");
	cr_assert_eq(journal_lock_holder(jdir, &holder), 1);
	cr_assert_eq(holder, pid);
	cr_assert_eq(journal_lock_holder(jdir, NULL), 1, "the pid is optional");
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_eq(journal_lock_holder(jdir, &holder), 0, "a killed process holds nothing");
	close(go[1]);
	close(ready[0]);
}

Test(journal, node_id_and_next_seq_persist)
{
	struct journal *j = jopen(1);
	struct journal *k = NULL;
	uint64_t v;

	cr_assert_eq(journal_node_id(j), NODE);
	cr_assert_eq(journal_next_seq(j), 1);
	append_small(j, NULL);
	append_small(j, NULL);
	journal_close(j);
	cr_assert_eq(journal_open(jdir, 0, 999, &k, NULL), 0);
	cr_assert_eq(journal_node_id(k), NODE);
	cr_assert_eq(journal_next_seq(k), 3);
	cr_assert_eq(journal_meta_get_u64(k, JOURNAL_META_FORMAT, &v), 0);
	cr_assert_eq(v, JOURNAL_FORMAT);
	cr_assert_eq(journal_meta_get_u64(k, JOURNAL_META_TERM, &v), 0);
	cr_assert_eq(v, 0);
	journal_close(k);
}

Test(journal, inline_write_round_trip)
{
	struct journal *j = jopen(1);
	uint8_t *buf = pattern(JOURNAL_INLINE_MAX, 1);
	struct event ev = write_event(buf, JOURNAL_INLINE_MAX, 4096), got;
	const char *why = NULL;

	cr_assert_eq(event_set_path(&ev, "dir/file"), 0);
	cr_assert_eq(journal_append(j, &ev), 0);
	cr_assert_eq(ev.flags & EVENT_F_VREF, 0);
	cr_assert_eq(journal_get(j, NODE, ev.seq, 1, &got, &why), 0, "%s", why);
	cr_assert_eq(got.type, EV_WRITE);
	cr_assert_eq(got.origin, NODE);
	cr_assert_eq(got.seq, 1);
	cr_assert_eq(got.hlc, ev.hlc);
	cr_assert_eq(got.offset, 4096);
	cr_assert_eq(got.fid.counter, 7);
	cr_assert_str_eq(got.path, "dir/file");
	cr_assert_eq(got.data_len, JOURNAL_INLINE_MAX);
	cr_assert_arr_eq(got.data, buf, JOURNAL_INLINE_MAX);
	event_free(&got);
	free(ev.path);
	free(buf);
	journal_close(j);
}

Test(journal, large_write_goes_to_value_log)
{
	struct journal *j = jopen(1);
	uint32_t len = 2u << 20;
	uint8_t *buf = pattern(len, 2);
	struct event ev = write_event(buf, len, 0), got;
	const char *why = NULL;
	uint64_t ldb, vbytes;
	uint32_t seg;

	cr_assert_eq(journal_append(j, &ev), 0);
	cr_assert(ev.flags & EVENT_F_VREF);
	cr_assert_eq(ev.data, buf, "the caller keeps its data");
	cr_assert_eq(ev.data_len, len);
	cr_assert_eq(ev.vref.len, len);

	cr_assert_eq(journal_get(j, NODE, ev.seq, 0, &got, &why), 0, "%s", why);
	cr_assert(got.flags & EVENT_F_VREF);
	cr_assert_null(got.data);
	cr_assert_eq(got.vref.len, len);
	cr_assert_eq(journal_load_payload(j, &got, &why), 0, "%s", why);
	cr_assert_eq(got.data_len, len);
	cr_assert_arr_eq(got.data, buf, len);
	event_free(&got);

	cr_assert_eq(journal_disk_usage(j, &ldb, &vbytes), 0);
	cr_assert_geq(vbytes, len);
	cr_assert_gt(ldb, 0);
	cr_assert_lt(ldb, len, "the payload is not in LevelDB");
	journal_close(j);

	/* After reopen, appends go to a new segment and the old one is still read. */
	j = jopen(0);
	cr_assert_eq(journal_get(j, NODE, 1, 1, &got, &why), 0, "%s", why);
	cr_assert_arr_eq(got.data, buf, len);
	seg = got.vref.segment;
	event_free(&got);
	ev = write_event(buf, len, len);
	cr_assert_eq(journal_append(j, &ev), 0);
	cr_assert_eq(ev.vref.segment, seg + 1);
	cr_assert_eq(journal_get(j, NODE, 2, 1, &got, &why), 0, "%s", why);
	cr_assert_arr_eq(got.data, buf, len);
	event_free(&got);
	free(buf);
	journal_close(j);
}

Test(journal, rename_round_trip)
{
	struct journal *j = jopen(1);
	struct event ev = {.type = EV_RENAME, .fid = {NODE, 3}, .fid2 = {9, 4}, .op_flags = 1}, got;
	const char *why = NULL;

	cr_assert_eq(event_set_path(&ev, "a/old"), 0);
	cr_assert_eq(event_set_path2(&ev, "b/new"), 0);
	cr_assert_eq(journal_append(j, &ev), 0);
	cr_assert_eq(journal_get(j, NODE, ev.seq, 1, &got, &why), 0, "%s", why);
	cr_assert_eq(got.type, EV_RENAME);
	cr_assert_str_eq(got.path, "a/old");
	cr_assert_str_eq(got.path2, "b/new");
	cr_assert_eq(got.fid2.origin, 9);
	cr_assert_eq(got.fid2.counter, 4);
	cr_assert_eq(got.op_flags, 1);
	event_free(&got);
	event_free(&ev);
	journal_close(j);
}

Test(journal, seq_is_sequential_and_continues_after_reopen)
{
	struct journal *j = jopen(1);
	uint64_t seq;

	for (uint64_t i = 1; i <= 3; i++) {
		append_small(j, &seq);
		cr_assert_eq(seq, i);
	}
	journal_close(j);
	j = jopen(0);
	append_small(j, &seq);
	cr_assert_eq(seq, 4);
	cr_assert_eq(journal_next_seq(j), 5);
	journal_close(j);
}

Test(journal, hlc_strictly_increasing_across_reopen)
{
	struct journal *j = jopen(1);
	struct event got;
	uint64_t prev = 0;

	for (uint64_t i = 1; i <= 500; i++) {
		append_small(j, NULL);
		cr_assert_eq(journal_get(j, NODE, i, 0, &got, NULL), 0);
		cr_assert_gt(got.hlc, prev);
		prev = got.hlc;
		event_free(&got);
	}
	journal_close(j);
	j = jopen(0);
	append_small(j, NULL);
	cr_assert_eq(journal_get(j, NODE, 501, 0, &got, NULL), 0);
	cr_assert_gt(got.hlc, prev);
	event_free(&got);
	journal_close(j);
}

/* Applied seq of origin as stored in LevelDB, 0 if no a/ key. */
static uint64_t applied_on_disk(struct journal *j, uint64_t origin)
{
	struct journal_iter *it;
	const uint8_t *val;
	uint64_t a, seq = 0;
	size_t len;

	cr_assert_eq(journal_iter_new(j, JOURNAL_APPLIED, origin, 0, &it), 0);
	if (journal_iter_next(it, &a, NULL, NULL, NULL, &val, &len) == 1 && a == origin) {
		cr_assert_eq(len, 8);
		for (int i = 7; i >= 0; i--)
			seq = seq << 8 | val[i];
	}
	journal_iter_free(it);
	return seq;
}

Test(journal, applied_marks_ride_on_next_write)
{
	struct journal *j = jopen(1);

	journal_mark_applied(j, 7, 5);
	cr_assert_eq(journal_applied(j, 7), 5);
	cr_assert_eq(applied_on_disk(j, 7), 0, "a mark alone writes nothing");
	journal_mark_applied(j, 7, 3);
	cr_assert_eq(journal_applied(j, 7), 5, "marks do not move backwards");
	append_small(j, NULL);
	cr_assert_eq(applied_on_disk(j, 7), 5);
	journal_mark_applied(j, 7, 6);
	journal_mark_applied(j, 8, 1);
	journal_close(j);
	j = jopen(0);
	cr_assert_eq(journal_applied(j, 7), 6);
	cr_assert_eq(journal_applied(j, 8), 1);
	cr_assert_eq(journal_applied(j, 9), 0);
	journal_close(j);
}

static int child_mark_only(void)
{
	struct journal *j = NULL;

	if (journal_open(jdir, 0, 0, &j, NULL) < 0)
		return 10;
	crashed = j;
	journal_mark_applied(j, 7, 5);
	return 0;
}

static int child_mark_then_append(void)
{
	uint8_t b[4] = "abc";
	struct event ev = write_event(b, sizeof(b), 0);
	struct journal *j = NULL;

	if (journal_open(jdir, 0, 0, &j, NULL) < 0)
		return 10;
	crashed = j;
	journal_mark_applied(j, 7, 9);
	if (journal_append(j, &ev) < 0)
		return 11;
	return 0;
}

Test(journal, applied_mark_lost_in_crash_unless_written)
{
	struct journal *j = jopen(1);

	journal_close(j);
	cr_assert_eq(in_child(child_mark_only), 0);
	j = jopen(0);
	cr_assert_eq(journal_applied(j, 7), 0);
	journal_close(j);
	cr_assert_eq(in_child(child_mark_then_append), 0);
	j = jopen(0);
	cr_assert_eq(journal_applied(j, 7), 9);
	cr_assert_eq(journal_next_seq(j), 2);
	journal_close(j);
}

Test(journal, void_keeps_number_hlc_and_term)
{
	struct journal *j = jopen(1);
	uint32_t len = 64 << 10;
	uint8_t *buf = pattern(len, 3);
	struct event ev = write_event(buf, len, 0), got;

	cr_assert_eq(journal_meta_put_u64(j, JOURNAL_META_TERM, 3, 0), 0);
	cr_assert_eq(journal_append(j, &ev), 0);
	cr_assert_eq(ev.term, 3);
	cr_assert_eq(journal_void(j, NODE, ev.seq), 0);
	cr_assert_eq(journal_get(j, NODE, ev.seq, 1, &got, NULL), 0);
	cr_assert_eq(got.type, EV_VOID);
	cr_assert_eq(got.seq, ev.seq);
	cr_assert_eq(got.hlc, ev.hlc);
	cr_assert_eq(got.term, 3);
	cr_assert_eq(got.flags, 0);
	cr_assert_eq(got.data_len, 0);
	event_free(&got);
	cr_assert_eq(journal_void(j, NODE, 99), -ENOENT);
	free(buf);
	journal_close(j);
}

Test(journal, delete_removes_record)
{
	struct journal *j = jopen(1);
	struct event got;
	const char *why = NULL;

	append_small(j, NULL);
	append_small(j, NULL);
	cr_assert_eq(journal_delete(j, NODE, 1), 0);
	cr_assert_eq(journal_get(j, NODE, 1, 0, &got, &why), -ENOENT);
	cr_assert_eq(journal_get(j, NODE, 2, 0, &got, &why), 0);
	event_free(&got);
	cr_assert_eq(journal_next_seq(j), 3, "deleting does not give numbers back");
	journal_close(j);
}

Test(journal, put_remote_keeps_numbers_and_refuses_duplicate)
{
	struct journal *j = jopen(1);
	struct event ev = {.type = EV_MKDIR, .origin = 7, .seq = 12, .hlc = 99, .term = 2}, got;
	uint32_t len = 100000;
	uint8_t *buf = pattern(len, 4);

	cr_assert_eq(event_set_path(&ev, "d"), 0);
	cr_assert_eq(journal_put_remote(j, &ev), 0);
	cr_assert_eq(journal_put_remote(j, &ev), -EEXIST);
	cr_assert_eq(journal_get(j, 7, 12, 0, &got, NULL), 0);
	cr_assert_eq(got.hlc, 99);
	cr_assert_eq(got.term, 2);
	cr_assert_str_eq(got.path, "d");
	event_free(&got);
	event_free(&ev);
	cr_assert_eq(journal_next_seq(j), 1, "remote events take no local numbers");

	/* A large remote write lands in this node's value log. */
	ev = write_event(buf, len, 0);
	ev.origin = 7;
	ev.seq = 13;
	cr_assert_eq(journal_put_remote(j, &ev), 0);
	cr_assert(ev.flags & EVENT_F_VREF);
	cr_assert_eq(journal_get(j, 7, 13, 1, &got, NULL), 0);
	cr_assert_arr_eq(got.data, buf, len);

	/* A vref whose payload was not loaded cannot be journaled here. */
	free(got.data);
	got.data = NULL;
	got.data_len = 0;
	got.seq = 14;
	cr_assert_eq(journal_put_remote(j, &got), -EINVAL);
	event_free(&got);

	/* This node's own lost event coming back moves next_seq past it. */
	ev = (struct event){.type = EV_MKDIR, .origin = NODE, .seq = 5};
	cr_assert_eq(event_set_path(&ev, "mine"), 0);
	cr_assert_eq(journal_put_remote(j, &ev), 0);
	cr_assert_eq(journal_next_seq(j), 6);
	event_free(&ev);
	free(buf);
	journal_close(j);
}

Test(journal, put_remote_batch_leaves_out_what_it_holds_or_is_told_to_skip)
{
	struct journal *j = jopen(1);
	struct event evs[4], got;
	int skip[4] = {0, 0, 1, 0};
	const char *names[4] = {"a", "b", "c", "mine"};
	unsigned i;

	for (i = 0; i < 4; i++) {
		evs[i] = (struct event){.type = EV_MKDIR, .origin = 7, .seq = 20 + i, .term = 1};
		cr_assert_eq(event_set_path(&evs[i], names[i]), 0);
	}
	evs[3].origin = NODE;
	evs[3].seq = 9;
	cr_assert_eq(journal_put_remote(j, &evs[0]), 0);
	cr_assert_eq(journal_put_remote_batch(j, evs, 4, skip), 0);
	cr_assert_eq(journal_get(j, 7, 21, 0, &got, NULL), 0);
	cr_assert_str_eq(got.path, "b");
	event_free(&got);
	cr_assert_eq(journal_get(j, 7, 22, 0, &got, NULL), -ENOENT, "a skipped event is left out");
	cr_assert_eq(journal_next_seq(j), 10, "this node's own event moves next_seq past it");
	cr_assert_eq(journal_put_remote_batch(j, evs, 2, NULL), 0, "held events are left out");
	for (i = 0; i < 4; i++)
		event_free(&evs[i]);
	journal_close(j);
	j = jopen(0);
	cr_assert_eq(journal_get(j, 7, 20, 0, &got, NULL), 0);
	event_free(&got);
	cr_assert_eq(journal_get(j, NODE, 9, 0, &got, NULL), 0);
	event_free(&got);
	cr_assert_eq(journal_next_seq(j), 10);
	journal_close(j);
}

/* Is (origin, seq)'s payload in the value log?  Its bytes are buf's either way. */
static int in_vlog(struct journal *j, uint64_t origin, uint64_t seq, const uint8_t *buf)
{
	const char *why = NULL;
	struct event got;
	int vref;

	cr_assert_eq(journal_get(j, origin, seq, 0, &got, &why), 0, "%s", why);
	vref = (got.flags & EVENT_F_VREF) != 0;
	event_free(&got);
	cr_assert_eq(journal_get(j, origin, seq, 1, &got, &why), 0, "%s", why);
	cr_assert_eq(got.data_len, 4096);
	cr_assert_arr_eq(got.data, buf, 4096);
	event_free(&got);
	return vref;
}

Test(journal, only_a_backlog_of_received_pages_goes_to_the_value_log)
{
	struct journal *j = jopen(1);
	uint8_t *buf = pattern(4096, 3);
	struct event local = write_event(buf, 4096, 0), one, few[2], bulk[JOURNAL_BULK_RUN];
	uint64_t seq = 0;

	cr_assert_eq(journal_append(j, &local), 0);
	cr_assert_not(in_vlog(j, NODE, local.seq, buf), "a local page stays inline");
	one = local;
	one.origin = 7;
	one.seq = ++seq;
	cr_assert_eq(journal_put_remote(j, &one), 0);
	cr_assert_not(in_vlog(j, 7, one.seq, buf), "a received page alone stays inline");
	for (size_t i = 0; i < 2; i++) {
		few[i] = one;
		few[i].seq = ++seq;
	}
	cr_assert_eq(journal_put_remote_batch(j, few, 2, NULL), 0);
	cr_assert_not(in_vlog(j, 7, few[1].seq, buf), "a short run stays inline");
	for (size_t i = 0; i < JOURNAL_BULK_RUN; i++) {
		bulk[i] = one;
		bulk[i].seq = ++seq;
	}
	cr_assert_eq(journal_put_remote_batch(j, bulk, JOURNAL_BULK_RUN, NULL), 0);
	cr_assert(in_vlog(j, 7, bulk[0].seq, buf), "a backlog's pages go to the value log");
	cr_assert(in_vlog(j, 7, bulk[JOURNAL_BULK_RUN - 1].seq, buf));
	free(buf);
	journal_close(j);
}

Test(journal, sync_in_steps_writes_marks_and_tells_when_nothing_is_left)
{
	struct journal *j = jopen(1);
	struct journal_sync s;

	cr_assert_eq(journal_sync(j), 0);
	cr_assert_eq(journal_sync_begin(j, &s), 0, "nothing to sync");
	journal_mark_applied(j, 7, 4);
	cr_assert_eq(journal_sync_begin(j, &s), 1);
	cr_assert_eq(applied_on_disk(j, 7), 4, "pending marks are written first");
	cr_assert_eq(journal_sync_log(j, &s), 0);
	append_small(j, NULL);
	journal_sync_end(j, &s, 0);
	cr_assert_eq(journal_sync_begin(j, &s), 1, "a write after the begin still needs a sync");
	cr_assert_eq(journal_sync_log(j, &s), 0);
	journal_sync_end(j, &s, 0);
	cr_assert_eq(journal_sync_begin(j, &s), 0);
	journal_close(j);
}

Test(journal, checkpoints_never_move_backwards)
{
	struct journal *j = jopen(1);
	uint64_t seq = 1;

	cr_assert_eq(journal_checkpoint_get(j, 2, 7, &seq), 0);
	cr_assert_eq(seq, 0);
	cr_assert_eq(journal_checkpoint_put(j, 2, 7, 10), 0);
	cr_assert_eq(journal_checkpoint_put(j, 2, 7, 4), 0);
	cr_assert_eq(journal_checkpoint_get(j, 2, 7, &seq), 0);
	cr_assert_eq(seq, 10);
	cr_assert_eq(journal_checkpoint_put(j, 2, 7, 11), 0);
	journal_close(j);
	j = jopen(0);
	cr_assert_eq(journal_checkpoint_get(j, 2, 7, &seq), 0);
	cr_assert_eq(seq, 11);
	cr_assert_eq(journal_checkpoint_get(j, 3, 7, &seq), 0);
	cr_assert_eq(seq, 0);
	journal_close(j);
}

Test(journal, forgetting_a_peer_drops_its_checkpoints_only)
{
	struct journal *j = jopen(1);
	uint64_t seq = 1;

	cr_assert_eq(journal_checkpoint_put(j, 2, 7, 10), 0);
	cr_assert_eq(journal_checkpoint_put(j, 2, NODE, 5), 0);
	cr_assert_eq(journal_checkpoint_put(j, 3, 7, 9), 0);
	cr_assert_eq(journal_checkpoint_put(j, 1, 7, 8), 0);
	cr_assert_eq(journal_checkpoint_forget(j, 2), 0);
	cr_assert_eq(journal_checkpoint_forget(j, 99), 0, "a peer without checkpoints");
	journal_close(j);
	j = jopen(0);
	cr_assert_eq(journal_checkpoint_get(j, 2, 7, &seq), 0);
	cr_assert_eq(seq, 0);
	cr_assert_eq(journal_checkpoint_get(j, 2, NODE, &seq), 0);
	cr_assert_eq(seq, 0);
	cr_assert_eq(journal_checkpoint_get(j, 3, 7, &seq), 0);
	cr_assert_eq(seq, 9, "the next peer's are kept");
	cr_assert_eq(journal_checkpoint_get(j, 1, 7, &seq), 0);
	cr_assert_eq(seq, 8, "and the one before's");
	cr_assert_eq(journal_checkpoint_put(j, 2, 7, 3), 0);
	cr_assert_eq(journal_checkpoint_get(j, 2, 7, &seq), 0);
	cr_assert_eq(seq, 3, "confirmations after forgetting start from nothing");
	journal_close(j);
}

static void put_remote_mkdir(struct journal *j, uint64_t origin, uint64_t seq)
{
	struct event ev = {.type = EV_MKDIR, .origin = origin, .seq = seq};

	cr_assert_eq(event_set_path(&ev, "x"), 0);
	cr_assert_eq(journal_put_remote(j, &ev), 0);
	event_free(&ev);
}

Test(journal, iteration_in_key_order_and_stops_at_kind_end)
{
	struct journal *j = jopen(1);
	struct journal_iter *it;
	const uint64_t want[][2] = {{7, 1}, {7, 2}, {7, 300}, {NODE, 1}, {NODE, 2}};
	const uint8_t *val;
	const char *name;
	uint64_t a, b;
	size_t len, nlen;
	struct event ev;
	int n = 0;

	put_remote_mkdir(j, 7, 300);
	put_remote_mkdir(j, 7, 2);
	append_small(j, NULL);
	put_remote_mkdir(j, 7, 1);
	append_small(j, NULL);
	cr_assert_eq(journal_checkpoint_put(j, 2, 7, 1), 0);
	cr_assert_eq(journal_checkpoint_put(j, 2, NODE, 1), 0);
	cr_assert_eq(journal_checkpoint_put(j, 3, 7, 1), 0);
	journal_mark_applied(j, 7, 2);
	journal_mark_applied(j, NODE, 2);
	cr_assert_eq(journal_sync(j), 0);

	cr_assert_eq(journal_iter_new(j, JOURNAL_EVENTS, 0, 0, &it), 0);
	while (journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) == 1) {
		cr_assert_lt(n, 5, "iteration ran past the events");
		cr_assert_eq(a, want[n][0]);
		cr_assert_eq(b, want[n][1]);
		cr_assert_eq(event_decode(val, len, &ev, NULL, NULL), 0);
		cr_assert_eq(ev.seq, b);
		event_free(&ev);
		n++;
	}
	cr_assert_eq(n, 5);
	cr_assert_eq(journal_iter_next(it, &a, &b, NULL, NULL, &val, &len), 0, "end is sticky");
	journal_iter_free(it);

	cr_assert_eq(journal_iter_new(j, JOURNAL_EVENTS, 7, 3, &it), 0);
	cr_assert_eq(journal_iter_next(it, &a, &b, NULL, NULL, NULL, NULL), 1);
	cr_assert_eq(a, 7);
	cr_assert_eq(b, 300);
	journal_iter_free(it);

	n = 0;
	cr_assert_eq(journal_iter_new(j, JOURNAL_CHECKPOINTS, 3, 0, &it), 0);
	while (journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) == 1) {
		cr_assert_eq(a, 3);
		cr_assert_eq(b, 7);
		cr_assert_eq(len, 8);
		n++;
	}
	cr_assert_eq(n, 1);
	journal_iter_free(it);

	n = 0;
	cr_assert_eq(journal_iter_new(j, JOURNAL_APPLIED, 0, 0, &it), 0);
	while (journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) == 1)
		n++;
	cr_assert_eq(n, 2);
	journal_iter_free(it);

	n = 0;
	cr_assert_eq(journal_iter_new(j, JOURNAL_META, 0, 0, &it), 0);
	while (journal_iter_next(it, &a, &b, &name, &nlen, &val, &len) == 1) {
		cr_assert_eq(a, 0);
		if (nlen == strlen(JOURNAL_META_NODE_ID) &&
		    !memcmp(name, JOURNAL_META_NODE_ID, nlen)) {
			cr_assert_eq(len, 8);
			cr_assert_eq(val[0], NODE);
		}
		n++;
	}
	cr_assert_geq(n, 4);
	journal_iter_free(it);
	journal_close(j);
}

Test(journal, meta_get_and_put)
{
	struct journal *j = jopen(1);
	const uint8_t cid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	void *val;
	size_t len;
	uint64_t v;

	cr_assert_eq(journal_meta_get(j, JOURNAL_META_CLUSTER_ID, &val, &len), -ENOENT);
	cr_assert_eq(journal_meta_put(j, JOURNAL_META_CLUSTER_ID, cid, sizeof(cid), 1), 0);
	cr_assert_eq(journal_meta_get(j, JOURNAL_META_CLUSTER_ID, &val, &len), 0);
	cr_assert_eq(len, sizeof(cid));
	cr_assert_arr_eq(val, cid, sizeof(cid));
	free(val);
	cr_assert_eq(journal_meta_get_u64(j, JOURNAL_META_CLUSTER_ID, &v), -EBADMSG);
	cr_assert_eq(journal_meta_put_u64(j, JOURNAL_META_CLEAN, 1, 0), 0);
	cr_assert_eq(journal_meta_put_u64(j, JOURNAL_META_NODE_ID, 5, 0), -EPERM);
	cr_assert_eq(journal_meta_put_u64(j, "", 5, 0), -EINVAL);
	cr_assert_eq(journal_meta_put_u64(j, JOURNAL_META_TERM, 4, 0), 0);
	journal_close(j);
	j = jopen(0);
	cr_assert_eq(journal_meta_get_u64(j, JOURNAL_META_CLEAN, &v), 0);
	cr_assert_eq(v, 1);
	cr_assert_eq(journal_meta_get_u64(j, JOURNAL_META_TERM, &v), 0);
	cr_assert_eq(v, 4);
	cr_assert_eq(journal_node_id(j), NODE);
	journal_close(j);
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t c;

	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(pread(fd, &c, 1, off), 1);
	c ^= 0x40;
	cr_assert_eq(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

Test(journal, flipped_vlog_byte_is_bad_crc)
{
	struct journal *j = jopen(1);
	uint32_t len = 100000;
	uint8_t *buf = pattern(len, 5);
	struct event ev = write_event(buf, len, 0), got;
	const char *why = NULL;
	char path[160];

	cr_assert_eq(journal_append(j, &ev), 0);
	snprintf(path, sizeof(path), "%s/vlog/%08u.vlog", jdir, ev.vref.segment);
	flip_byte(path, (off_t)ev.vref.offset + 777);
	cr_assert_eq(journal_get(j, NODE, ev.seq, 1, &got, &why), -EBADMSG);
	cr_assert_str_eq(why, "value log payload bad crc");
	cr_assert_null(got.data);
	cr_assert_eq(journal_get(j, NODE, ev.seq, 0, &got, &why), 0, "the record itself is fine");
	event_free(&got);
	free(buf);
	journal_close(j);
}

Test(journal, flipped_leveldb_value_caught_by_decode)
{
	struct journal *j = jopen(1);
	leveldb_options_t *o = leveldb_options_create();
	leveldb_readoptions_t *ro = leveldb_readoptions_create();
	uint8_t key[18] = {'e', '/'};
	struct event got;
	const char *why = NULL;
	char *err = NULL, *val;
	size_t len;
	leveldb_t *db;

	append_small(j, NULL);
	journal_close(j);

	key[9] = NODE;
	key[17] = 1;
	db = leveldb_open(o, jdir, &err);
	cr_assert_null(err, "%s", err);
	val = leveldb_get(db, ro, (char *)key, sizeof(key), &len, &err);
	cr_assert_not_null(val);
	val[len - 2] ^= 1;
	leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
	leveldb_put(db, wo, (char *)key, sizeof(key), val, len, &err);
	cr_assert_null(err);
	leveldb_free(val);
	leveldb_writeoptions_destroy(wo);
	leveldb_readoptions_destroy(ro);
	leveldb_close(db);
	leveldb_options_destroy(o);

	j = jopen(0);
	cr_assert_eq(journal_get(j, NODE, 1, 0, &got, &why), -EBADMSG);
	cr_assert_str_eq(why, "bad crc");
	journal_close(j);
}

static int child_append_100(void)
{
	struct journal *j = NULL;

	if (journal_open(jdir, 0, 0, &j, NULL) < 0)
		return 10;
	crashed = j;
	for (int i = 0; i < 100; i++) {
		uint8_t b[32];
		uint32_t len = i % 10 == 0 ? 20000 : sizeof(b);
		uint8_t *big = i % 10 == 0 ? malloc(len) : b;
		struct event ev = write_event(big, len, (uint64_t)i);

		if (!big)
			return 11;
		memset(big, i, len);
		if (journal_append(j, &ev) < 0)
			return 12;
		if (big != b)
			free(big);
	}
	return 0;
}

Test(journal, crashed_writer_loses_nothing_written)
{
	struct journal *j = jopen(1);
	struct event got;
	const char *why = NULL;

	journal_close(j);
	cr_assert_eq(in_child(child_append_100), 0);
	j = jopen(0);
	cr_assert_eq(journal_next_seq(j), 101);
	for (uint64_t s = 1; s <= 100; s++) {
		cr_assert_eq(journal_get(j, NODE, s, 1, &got, &why), 0, "seq %lu: %s",
			     (unsigned long)s, why);
		cr_assert_eq(got.offset, s - 1);
		cr_assert_eq(got.data[0], (uint8_t)(s - 1));
		event_free(&got);
	}
	journal_close(j);
}

static int child_open(void)
{
	struct journal *j;
	int ret = journal_open(jdir, 0, 0, &j, NULL);

	return ret == -EBUSY ? 0 : 1;
}

Test(journal, second_open_is_busy)
{
	struct journal *j = jopen(1), *k = NULL;
	const char *why = NULL;

	cr_assert_eq(journal_open(jdir, 0, 0, &k, &why), -EBUSY);
	cr_assert_str_eq(why, "journal is in use by another process (is the node mounted?)");
	cr_assert_eq(in_child(child_open), 0, "another process is refused too");
	journal_close(j);
	j = jopen(0);
	journal_close(j);
}

static int child_write_past_file_limit(void)
{
	struct rlimit rl;
	struct journal *j;
	uint32_t big = 2u << 20, small = 100000;
	uint8_t *buf = malloc(big);
	struct event ev, got;

	if (!buf || journal_open(jdir, 0, 0, &j, NULL) < 0)
		return 10;
	memset(buf, 0xab, big);
	signal(SIGXFSZ, SIG_IGN);
	if (getrlimit(RLIMIT_FSIZE, &rl) < 0)
		return 11;
	rl.rlim_cur = 1u << 20;
	if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
		return 11;
	ev = write_event(buf, big, 0);
	if (journal_append(j, &ev) != -EFBIG)
		return 12;
	if (journal_next_seq(j) != 1)
		return 13;
	memset(buf, 0xcd, small);
	ev = write_event(buf, small, 0);
	if (journal_append(j, &ev) < 0 || ev.seq != 1)
		return 14;
	if (ev.vref.offset != VLOG_HEADER_LEN)
		return 15;
	if (journal_get(j, NODE, 1, 1, &got, NULL) < 0)
		return 16;
	if (got.data_len != small || memcmp(got.data, buf, small) != 0)
		return 17;
	event_free(&got);
	free(buf);
	crashed = j;
	return 0;
}

struct bytes_in_arg {
	const char *suffix;
	off_t sum;
};

/* One entry of bytes_in(): count it if its name ends with the suffix. */
static int add_if_suffix(int dfd, const char *name, void *arg)
{
	struct bytes_in_arg *a = arg;
	size_t nl = strlen(name), sl = strlen(a->suffix);
	struct stat st;

	if (nl < sl || strcmp(name + nl - sl, a->suffix) != 0)
		return 0;
	cr_assert_eq(fstatat(dfd, name, &st, 0), 0, "%s: %s", name, strerror(errno));
	a->sum += st.st_size;
	return 0;
}

/* Bytes in jdir's files whose names end with suffix. */
static off_t bytes_in(const char *suffix)
{
	struct bytes_in_arg a = {.suffix = suffix};
	int dfd = open(jdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert_geq(dfd, 0, "%s: %s", jdir, strerror(errno));
	cr_assert_eq(dir_scan(dfd, add_if_suffix, &a), 0, "%s", jdir);
	close(dfd);
	return a.sum;
}

/* A clean close leaves LevelDB nothing to replay from its log at the next open. */
Test(journal, close_leaves_the_log_empty_and_loses_nothing)
{
	struct journal *j = jopen(1);
	struct event got;

	for (int i = 0; i < 1000; i++)
		append_small(j, NULL);
	cr_assert_gt(bytes_in(".log"), 16000);
	journal_close(j);
	cr_assert_eq(bytes_in(".log"), 0);
	cr_assert_gt(bytes_in(".ldb"), 0);
	j = jopen(0);
	cr_assert_eq(journal_next_seq(j), 1001);
	cr_assert_eq(journal_get(j, NODE, 1000, 1, &got, NULL), 0);
	cr_assert_eq(got.data_len, 16);
	cr_assert_str_eq((const char *)got.data, "hello");
	event_free(&got);
	journal_close(j);
}

/* A failing value-log write (EFBIG here, ENOSPC on a full disk) leaves no trace. */
Test(journal, failed_vlog_write_leaves_next_append_right)
{
	struct journal *j = jopen(1);

	journal_close(j);
	cr_assert_eq(in_child(child_write_past_file_limit), 0);
	j = jopen(0);
	cr_assert_eq(journal_next_seq(j), 2);
	journal_close(j);
}

Test(journal, sync_with_nothing_new_is_cheap_and_fine)
{
	struct journal *j = jopen(1);
	uint32_t len = 50000;
	uint8_t *buf = pattern(len, 6);
	struct event ev = write_event(buf, len, 0);

	cr_assert_eq(journal_sync(j), 0);
	cr_assert_eq(journal_append(j, &ev), 0);
	journal_mark_applied(j, NODE, 1);
	cr_assert_eq(journal_sync(j), 0);
	cr_assert_eq(applied_on_disk(j, NODE), 1);
	cr_assert_eq(journal_sync(j), 0);
	free(buf);
	journal_close(j);
}

Test(journal, vlog_rolls_segments_and_reopens_on_a_new_one)
{
	char vdir[128];
	struct vlog *v;
	struct vref r[4];
	uint8_t data[100], back[100];
	const char *why = NULL;
	uint64_t bytes;

	snprintf(vdir, sizeof(vdir), "%s/vlog", tmp);
	cr_assert_eq(vlog_open(vdir, 250, &v, &why), 0);
	for (int i = 0; i < 3; i++) {
		memset(data, i + 1, sizeof(data));
		cr_assert_eq(vlog_append(v, 1, (uint64_t)i + 1, data, sizeof(data), &r[i]), 0);
	}
	cr_assert_eq(r[0].segment, 1);
	cr_assert_eq(r[1].segment, 1);
	cr_assert_eq(r[2].segment, 2);
	cr_assert_eq(r[2].offset, VLOG_HEADER_LEN);
	cr_assert_eq(vlog_sync(v), 0);
	vlog_close(v);

	cr_assert_eq(vlog_open(vdir, 250, &v, &why), 0);
	memset(data, 9, sizeof(data));
	cr_assert_eq(vlog_append(v, 1, 4, data, sizeof(data), &r[3]), 0);
	cr_assert_eq(r[3].segment, 3);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(vlog_read(v, &r[i], 1, (uint64_t)i + 1, back, &why), 0, "%s", why);
		cr_assert_eq(back[0], i < 3 ? i + 1 : 9);
	}
	cr_assert_eq(vlog_read(v, &r[0], 1, 2, back, &why), -EBADMSG, "wrong event number");
	r[0].segment = 77;
	cr_assert_eq(vlog_read(v, &r[0], 1, 1, back, &why), -EBADMSG);
	cr_assert_str_eq(why, "value log segment missing");
	r[3].offset += 1000;
	cr_assert_eq(vlog_read(v, &r[3], 1, 4, back, &why), -EBADMSG);
	cr_assert_str_eq(why, "value log record truncated");
	cr_assert_eq(vlog_disk_usage(v, &bytes), 0);
	cr_assert_eq(bytes, 4 * (VLOG_HEADER_LEN + sizeof(data)));
	vlog_close(v);
}

Test(journal, vlog_sync_in_steps_covers_what_came_before_its_begin)
{
	struct vlog_sync s, s2;
	char vdir[128];
	struct vlog *v;
	struct vref r;
	uint8_t data[100] = {1};
	const char *why = NULL;

	snprintf(vdir, sizeof(vdir), "%s/vlog", tmp);
	cr_assert_eq(vlog_open(vdir, 250, &v, &why), 0);
	cr_assert_eq(vlog_sync_begin(v, &s), 0, "nothing to sync");
	vlog_sync_end(v, &s);
	cr_assert_eq(vlog_append(v, 1, 1, data, sizeof(data), &r), 0);
	cr_assert_eq(vlog_sync_begin(v, &s), 1);
	/* Begun before the first one ends, a second sync does not count on it. */
	cr_assert_eq(vlog_sync_begin(v, &s2), 1);
	/* A roll-over meanwhile syncs and closes the segment; the duplicate stays usable. */
	cr_assert_eq(vlog_append(v, 1, 2, data, sizeof(data), &r), 0);
	cr_assert_eq(vlog_append(v, 1, 3, data, sizeof(data), &r), 0);
	cr_assert_eq(r.segment, 2);
	cr_assert_eq(vlog_sync_fd(v, &s), 0);
	vlog_sync_end(v, &s);
	cr_assert_eq(vlog_sync_fd(v, &s2), 0);
	vlog_sync_end(v, &s2);
	cr_assert_eq(vlog_sync_begin(v, &s), 1, "the append after the begins is not synced");
	vlog_sync_cancel(&s);
	cr_assert_eq(vlog_sync_begin(v, &s), 1, "nor by a cancelled sync");
	cr_assert_eq(vlog_sync_fd(v, &s), 0);
	vlog_sync_end(v, &s);
	cr_assert_eq(vlog_sync_begin(v, &s), 0);
	vlog_sync_end(v, &s);
	cr_assert_eq(vlog_sync(v), 0);
	vlog_close(v);
}

/* ---- trimming -------------------------------------------------------- */

static int segment_exists(uint32_t segment)
{
	char path[160];

	snprintf(path, sizeof(path), "%s/vlog/%08u.vlog", jdir, segment);
	return access(path, F_OK) == 0;
}

/* n small local events, all marked applied. */
static void append_applied(struct journal *j, int n)
{
	uint64_t seq = 0;

	for (int i = 0; i < n; i++)
		append_small(j, &seq);
	journal_mark_applied(j, NODE, seq);
}

/* A remote event of origin with a payload of len bytes and the given hlc, marked applied. */
static void put_remote_write(struct journal *j, uint64_t origin, uint64_t seq, uint32_t len,
			     uint64_t hlc)
{
	uint8_t *buf = pattern(len, (unsigned)seq);
	struct event ev = write_event(buf, len, 0);

	ev.origin = origin;
	ev.seq = seq;
	ev.hlc = hlc;
	cr_assert_eq(journal_put_remote(j, &ev), 0);
	journal_mark_applied(j, origin, seq);
	free(buf);
}

/* A large local write (to the value log), marked applied; its segment. */
static uint32_t append_big(struct journal *j)
{
	uint32_t len = 64 << 10;
	uint8_t *buf = pattern(len, 9);
	struct event ev = write_event(buf, len, 0);

	cr_assert_eq(journal_append(j, &ev), 0);
	cr_assert(ev.flags & EVENT_F_VREF);
	journal_mark_applied(j, NODE, ev.seq);
	free(buf);
	return ev.vref.segment;
}

static uint64_t trimmed_of(struct journal *j, uint64_t origin)
{
	uint64_t seq = 77;

	cr_assert_eq(journal_trimmed(j, origin, &seq), 0);
	return seq;
}

static uint64_t oldest_of(struct journal *j, uint64_t origin)
{
	uint64_t seq = 77;

	cr_assert_eq(journal_oldest(j, origin, &seq), 0);
	return seq;
}

Test(journal, trim_deletes_exactly_the_range)
{
	struct journal *j = jopen(1);
	const char *why = NULL;
	uint64_t n = 99;
	struct event got;

	append_applied(j, 10);
	put_remote_mkdir(j, 7, 1);
	put_remote_mkdir(j, 7, 2);
	journal_mark_applied(j, 7, 2);
	cr_assert_eq(trimmed_of(j, NODE), 0);
	cr_assert_eq(oldest_of(j, NODE), 1);
	cr_assert_eq(journal_trim(j, NODE, 4, &n), 0);
	cr_assert_eq(n, 4);
	cr_assert_eq(trimmed_of(j, NODE), 4);
	cr_assert_eq(oldest_of(j, NODE), 5);
	for (uint64_t s = 1; s <= 4; s++) {
		cr_assert_eq(journal_get(j, NODE, s, 0, &got, &why), -ESTALE, "seq %lu",
			     (unsigned long)s);
		cr_assert_str_eq(why, "event was trimmed");
	}
	for (uint64_t s = 5; s <= 10; s++) {
		cr_assert_eq(journal_get(j, NODE, s, 1, &got, &why), 0, "seq %lu: %s",
			     (unsigned long)s, why);
		event_free(&got);
	}
	cr_assert_eq(journal_get(j, NODE, 11, 0, &got, &why), -ENOENT, "never existed");
	cr_assert_eq(journal_get(j, NODE, 0, 0, &got, &why), -ENOENT);
	cr_assert_eq(trimmed_of(j, 7), 0, "other origins are untouched");
	cr_assert_eq(oldest_of(j, 7), 1);
	cr_assert_eq(journal_get(j, 7, 1, 0, &got, &why), 0);
	event_free(&got);
	cr_assert_eq(oldest_of(j, 9), 0, "no events of an unknown origin");
	cr_assert_eq(journal_next_seq(j), 11, "trimming gives no numbers back");
	journal_close(j);
}

Test(journal, trimmed_mark_never_moves_back)
{
	struct journal *j = jopen(1);
	uint64_t n = 99;

	append_applied(j, 8);
	cr_assert_eq(journal_trim(j, NODE, 6, &n), 0);
	cr_assert_eq(n, 6);
	cr_assert_eq(journal_trim(j, NODE, 3, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(journal_trim(j, NODE, 6, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(trimmed_of(j, NODE), 6);
	cr_assert_eq(oldest_of(j, NODE), 7);
	cr_assert_eq(journal_trim(j, NODE, 8, NULL), 0);
	cr_assert_eq(trimmed_of(j, NODE), 8);
	cr_assert_eq(oldest_of(j, NODE), 0, "everything is trimmed");
	journal_close(j);
}

Test(journal, trim_above_applied_is_refused)
{
	struct journal *j = jopen(1);
	struct event got;
	uint64_t n = 99;

	append_applied(j, 5);
	append_small(j, NULL);
	cr_assert_eq(journal_trim(j, NODE, 6, &n), -EINVAL);
	cr_assert_eq(n, 0);
	cr_assert_eq(journal_trim(j, 0, 1, &n), -EINVAL);
	cr_assert_eq(journal_trim(j, 7, 1, &n), -EINVAL, "nothing of origin 7 is applied");
	cr_assert_eq(journal_trim(j, 7, 0, &n), 0);
	cr_assert_eq(trimmed_of(j, NODE), 0);
	cr_assert_eq(journal_get(j, NODE, 1, 0, &got, NULL), 0);
	event_free(&got);
	cr_assert_eq(journal_trim(j, NODE, 5, &n), 0);
	cr_assert_eq(n, 5);
	journal_close(j);
}

Test(journal, trim_goes_in_batches_and_tolerates_gaps)
{
	struct journal *j = jopen(1);
	uint64_t n = 0, total = 2 * JOURNAL_TRIM_BATCH + 500;
	struct journal_iter *it;
	uint64_t a, b;

	append_applied(j, (int)total);
	cr_assert_eq(journal_delete(j, NODE, 1500), 0);
	cr_assert_eq(journal_trim(j, NODE, total - 100, &n), 0);
	cr_assert_eq(n, total - 101, "every event up to the point but the missing one");
	cr_assert_eq(trimmed_of(j, NODE), total - 100);
	cr_assert_eq(oldest_of(j, NODE), total - 99);
	cr_assert_eq(journal_iter_new(j, JOURNAL_EVENTS, NODE, 0, &it), 0);
	cr_assert_eq(journal_iter_next(it, &a, &b, NULL, NULL, NULL, NULL), 1);
	cr_assert_eq(a, NODE);
	cr_assert_eq(b, total - 99, "iteration starts at the oldest retained event");
	journal_iter_free(it);
	journal_close(j);
}

Test(journal, trim_survives_reopen)
{
	struct journal *j = jopen(1);
	struct event ev = {.type = EV_MKDIR, .origin = 7, .seq = 2}, got;
	uint64_t seq;

	append_applied(j, 6);
	put_remote_mkdir(j, 7, 1);
	put_remote_mkdir(j, 7, 2);
	put_remote_mkdir(j, 7, 3);
	journal_mark_applied(j, 7, 3);
	cr_assert_eq(journal_trim(j, NODE, 4, NULL), 0);
	cr_assert_eq(journal_trim(j, 7, 2, NULL), 0);
	journal_close(j);

	j = jopen(0);
	cr_assert_eq(trimmed_of(j, NODE), 4);
	cr_assert_eq(trimmed_of(j, 7), 2);
	cr_assert_eq(oldest_of(j, NODE), 5);
	cr_assert_eq(oldest_of(j, 7), 3);
	cr_assert_eq(journal_get(j, NODE, 2, 0, &got, NULL), -ESTALE);
	cr_assert_eq(journal_get(j, 7, 3, 0, &got, NULL), 0);
	event_free(&got);
	cr_assert_eq(journal_applied(j, NODE), 6);
	cr_assert_eq(event_set_path(&ev, "again"), 0);
	cr_assert_eq(journal_put_remote(j, &ev), -EEXIST, "a trimmed event is not taken again");
	cr_assert_eq(journal_get(j, 7, 2, 0, &got, NULL), -ESTALE);
	event_free(&ev);
	append_small(j, &seq);
	cr_assert_eq(seq, 7);
	cr_assert_eq(journal_trim(j, NODE, 7, NULL), -EINVAL, "7 is not applied");
	journal_mark_applied(j, NODE, 7);
	cr_assert_eq(journal_trim(j, NODE, 7, NULL), 0);
	journal_close(j);
}

Test(journal, trim_marks_are_not_plain_metadata)
{
	struct journal *j = jopen(1);

	cr_assert_eq(journal_meta_put_u64(j, "trimmed/000000000000002a", 5, 0), -EPERM);
	cr_assert_eq(journal_meta_put_u64(j, "vseg/00000001", 5, 0), -EPERM);
	journal_close(j);
}

/*
 * Each open appends to a new segment, so three sessions make three: 1 holds
 * local 1-2 and remote 7:1, 2 holds local 3-4, 3 (appended to) local 5.
 */
Test(journal, value_log_segment_goes_once_nothing_references_it)
{
	struct journal *j = jopen(1);
	uint64_t ldb, vbytes, vbefore;
	struct event got;
	const char *why = NULL;

	cr_assert_eq(append_big(j), 1);
	cr_assert_eq(append_big(j), 1);
	put_remote_write(j, 7, 1, 64 << 10, 1);
	journal_close(j);
	j = jopen(0);
	cr_assert_eq(append_big(j), 2);
	cr_assert_eq(append_big(j), 2);
	journal_close(j);
	j = jopen(0);
	cr_assert_eq(append_big(j), 3);
	cr_assert(segment_exists(1) && segment_exists(2) && segment_exists(3));
	cr_assert_eq(journal_disk_usage(j, &ldb, &vbefore), 0);

	cr_assert_eq(journal_trim(j, NODE, 1, NULL), 0);
	cr_assert(segment_exists(1), "local 2 still references it");
	cr_assert_eq(journal_trim(j, NODE, 2, NULL), 0);
	cr_assert(segment_exists(1), "remote 7:1 still references it");
	cr_assert_eq(journal_trim(j, 7, 1, NULL), 0);
	cr_assert_not(segment_exists(1));
	cr_assert(segment_exists(2));
	cr_assert_eq(journal_disk_usage(j, &ldb, &vbytes), 0);
	cr_assert_lt(vbytes, vbefore);

	cr_assert_eq(journal_get(j, NODE, 3, 1, &got, &why), 0, "%s", why);
	cr_assert_eq(got.data_len, 64 << 10);
	event_free(&got);
	cr_assert_eq(journal_trim(j, NODE, 3, NULL), 0);
	cr_assert(segment_exists(2), "local 4 still references it");
	cr_assert_eq(journal_get(j, NODE, 4, 1, &got, &why), 0, "%s", why);
	event_free(&got);
	cr_assert_eq(journal_trim(j, NODE, 5, NULL), 0);
	cr_assert_not(segment_exists(2));
	cr_assert(segment_exists(3), "the segment appended to is never deleted");
	journal_close(j);

	/* Reopened, segment 3 is no longer appended to: the next trim takes it. */
	j = jopen(0);
	cr_assert(segment_exists(3));
	cr_assert_eq(journal_trim(j, NODE, 5, NULL), 0);
	cr_assert_not(segment_exists(3));
	cr_assert_eq(journal_disk_usage(j, &ldb, &vbytes), 0);
	cr_assert_eq(vbytes, 0);
	cr_assert_eq(append_big(j), 4, "segment numbers go on");
	journal_close(j);
}

Test(journal, void_and_delete_do_not_keep_a_segment_alive)
{
	struct journal *j = jopen(1);

	cr_assert_eq(append_big(j), 1);
	cr_assert_eq(append_big(j), 1);
	journal_close(j);
	j = jopen(0);
	append_applied(j, 1);
	cr_assert_eq(journal_void(j, NODE, 1), 0);
	cr_assert_eq(journal_delete(j, NODE, 2), 0);
	cr_assert_eq(journal_trim(j, NODE, 1, NULL), 0);
	cr_assert(segment_exists(1), "listed up to seq 2, which is not trimmed yet");
	cr_assert_eq(journal_trim(j, NODE, 2, NULL), 0);
	cr_assert_not(segment_exists(1));
	journal_close(j);
}

/* Two value-log writes into segment 1, trimmed while it is still appended to, then a crash. */
static int child_trim_then_crash(void)
{
	uint32_t len = 64 << 10;
	uint8_t *buf = malloc(len);
	struct journal *j = NULL;
	struct event ev;

	if (!buf || journal_open(jdir, 0, 0, &j, NULL) < 0)
		return 10;
	crashed = j;
	memset(buf, 1, len);
	for (int i = 0; i < 2; i++) {
		ev = write_event(buf, len, 0);
		if (journal_append(j, &ev) < 0 || ev.vref.segment != 1)
			return 11;
	}
	free(buf);
	journal_mark_applied(j, NODE, 2);
	if (journal_trim(j, NODE, 2, NULL) < 0)
		return 12;
	return segment_exists(1) ? 0 : 13;
}

/*
 * The state a crash leaves between a durable trim and the deletion of its
 * segment: the next trim finishes the job.
 */
Test(journal, segment_left_behind_goes_at_the_next_trim)
{
	struct journal *j = jopen(1);
	uint64_t n = 99;

	journal_close(j);
	cr_assert_eq(in_child(child_trim_then_crash), 0);
	j = jopen(0);
	cr_assert_eq(trimmed_of(j, NODE), 2);
	cr_assert(segment_exists(1), "opening deletes nothing");
	cr_assert_eq(journal_trim(j, NODE, 2, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_not(segment_exists(1));
	journal_close(j);
}

/* journal_trim_point() without an excess. */
static uint64_t trim_point(struct journal *j, uint64_t origin, uint64_t confirmed,
			   uint64_t retain_age_ms, uint64_t now_ms)
{
	uint64_t upto = 77;

	cr_assert_eq(journal_trim_point(j, origin, confirmed, retain_age_ms, now_ms, NULL, &upto),
		     0);
	return upto;
}

/* journal_trim_point() with the journal *excess bytes over its bound. */
static uint64_t trim_point_over(struct journal *j, uint64_t origin, uint64_t confirmed,
				uint64_t retain_age_ms, uint64_t now_ms, uint64_t *excess)
{
	uint64_t upto = 77;

	cr_assert_eq(journal_trim_point(j, origin, confirmed, retain_age_ms, now_ms, excess, &upto),
		     0);
	return upto;
}

Test(journal, trim_point_stays_within_confirmed_and_applied)
{
	struct journal *j = jopen(1);
	uint64_t excess = UINT64_MAX;

	append_applied(j, 10);
	append_small(j, NULL);
	cr_assert_eq(trim_point(j, NODE, 6, 0, 0), 6);
	cr_assert_eq(trim_point(j, NODE, 20, 0, 0), 10, "11 is not applied");
	cr_assert_eq(trim_point_over(j, NODE, 20, 0, 0, &excess), 10, "nor when over the bound");
	cr_assert_eq(trim_point(j, NODE, 0, 0, 0), 0);
	cr_assert_eq(trim_point(j, 7, 5, 0, 0), 0, "nothing of origin 7");
	cr_assert_eq(journal_trim(j, NODE, 4, NULL), 0);
	cr_assert_eq(trim_point(j, NODE, 3, 0, 0), 4, "nothing to do: the trimmed mark");
	cr_assert_eq(trim_point(j, NODE, 8, 0, 0), 8);
	journal_close(j);
}

/* Remote events 1-10 of origin 7 made at 1 s, 2 s, ... 10 s after the epoch. */
Test(journal, trim_point_keeps_events_younger_than_retain_age)
{
	struct journal *j = jopen(1);
	uint64_t excess = 0;

	for (uint64_t s = 1; s <= 10; s++)
		put_remote_write(j, 7, s, 100, (1000 * s) << 16 | 5);
	cr_assert_eq(trim_point(j, 7, 10, 5500, 10000), 4);
	cr_assert_eq(trim_point(j, 7, 10, 6000, 10000), 4, "4 s is exactly old enough");
	cr_assert_eq(trim_point(j, 7, 3, 5500, 10000), 3);
	cr_assert_eq(trim_point(j, 7, 10, 0, 10000), 10, "no age kept");
	cr_assert_eq(trim_point(j, 7, 10, 10000, 10000), 0);
	cr_assert_eq(trim_point(j, 7, 10, 20000, 10000), 0, "now is before the window");
	cr_assert_eq(trim_point(j, 7, 10, 1000, UINT64_MAX), 10);
	cr_assert_eq(trim_point_over(j, 7, 10, 5500, 10000, &excess), 4, "within the bound");
	cr_assert_eq(journal_trim(j, 7, 2, NULL), 0);
	cr_assert_eq(trim_point(j, 7, 10, 5500, 10000), 4, "the walk starts past the trim");
	cr_assert_eq(trim_point(j, 7, 10, 5500, 11000), 5);
	journal_close(j);
}

/*
 * Ten 1 MiB value-log payloads made at 1 s ... 10 s, all younger than a
 * 100 s retain_age: over the bound they go anyway, oldest first, until the
 * ones passed make up the excess, which is what the walk takes off it.
 */
Test(journal, trim_point_lets_young_events_go_while_over_the_bound)
{
	struct journal *j = jopen(1);
	uint64_t excess, mib = 1 << 20;

	for (uint64_t s = 1; s <= 10; s++)
		put_remote_write(j, 7, s, 1 << 20, (1000 * s) << 16);
	excess = 0;
	cr_assert_eq(trim_point_over(j, 7, 10, 100000, 10000, &excess), 0, "within the bound");
	excess = 7 * mib / 2;
	cr_assert_eq(trim_point_over(j, 7, 10, 100000, 10000, &excess), 4,
		     "three events leave half a MiB over, the fourth covers it");
	cr_assert_eq(excess, 0);
	excess = 1;
	cr_assert_eq(trim_point_over(j, 7, 10, 100000, 10000, &excess), 1);
	excess = 7 * mib / 2;
	cr_assert_eq(trim_point_over(j, 7, 2, 100000, 10000, &excess), 2, "only what is confirmed");
	cr_assert_gt(excess, mib, "what is left goes on to the next origin");
	cr_assert_lt(excess, 3 * mib / 2);
	excess = 100 * mib;
	cr_assert_eq(trim_point_over(j, 7, 10, 100000, 10000, &excess), 10);
	cr_assert_gt(excess, 89 * mib);
	cr_assert_lt(excess, 90 * mib, "each event counts its payload: %" PRIu64, excess);
	/* Events 1-3 are older than 7 s at 10 s, 4-10 younger. */
	excess = 1;
	cr_assert_eq(trim_point_over(j, 7, 10, 7000, 10000, &excess), 3, "old ones go regardless");
	excess = 9 * mib / 2;
	cr_assert_eq(trim_point_over(j, 7, 10, 7000, 10000, &excess), 5,
		     "old ones count against the excess too");
	journal_close(j);
}

/*
 * 40 MiB of 4 KiB events that do not compress, kept inline: once trimmed,
 * the journal counts their bytes as dead while LevelDB's files still hold
 * them, and compacting the trimmed range gives the space back at once
 * (LevelDB alone keeps it until its compactions get there).
 */
Test(journal, compacting_the_trimmed_events_gives_their_space_back)
{
	struct journal *j = jopen(1);
	uint64_t ldb, vbytes, before, dead, n = 10240;

	uint8_t buf[4096];
	unsigned seed = 1;
	struct event ev;

	for (uint64_t s = 1; s <= n; s++) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (uint8_t)rand_r(&seed);
		ev = write_event(buf, sizeof(buf), 0);
		ev.origin = 7;
		ev.seq = s;
		ev.hlc = s << 16;
		cr_assert_eq(journal_put_remote(j, &ev), 0);
		journal_mark_applied(j, 7, s);
	}
	append_applied(j, 10);
	cr_assert_eq(journal_disk_usage(j, &before, &vbytes), 0);
	cr_assert_eq(vbytes, 0, "the events are inline");
	cr_assert_gt(before, 30u << 20);
	cr_assert_eq(journal_dead_bytes(j), 0, "nothing trimmed yet");
	cr_assert_eq(journal_trim(j, 7, n - 100, NULL), 0);
	dead = journal_dead_bytes(j);
	/* The write buffer's last 8 MiB are not in a table file yet. */
	cr_assert_geq(dead, (n - 100) * 4096 - (10u << 20), "%" PRIu64, dead);
	cr_assert_leq(dead, before, "%" PRIu64 " of %" PRIu64, dead, before);
	journal_compact_events(j, 7, n - 100);
	cr_assert_eq(journal_disk_usage(j, &ldb, &vbytes), 0);
	cr_assert_lt(ldb, 4u << 20, "%" PRIu64 " bytes left of %" PRIu64, ldb, before);
	cr_assert_lt(journal_dead_bytes(j), 1u << 20, "%" PRIu64 " dead after the compaction",
		     journal_dead_bytes(j));
	cr_assert_eq(oldest_of(j, 7), n - 99);
	cr_assert_eq(oldest_of(j, NODE), 1, "other origins' events stay");
	journal_close(j);
}

/* A smaller segment size takes effect at the next append, however full the segment is. */
Test(journal, value_log_segments_roll_at_the_size_set)
{
	struct journal *j = jopen(1);

	for (int i = 0; i < 20; i++)
		cr_assert_eq(append_big(j), 1);
	journal_set_vlog_segment_max(j, 1);
	cr_assert_eq(append_big(j), 2, "past VLOG_SEGMENT_MIN: a new segment");
	for (int i = 0; i < 14; i++)
		cr_assert_eq(append_big(j), 2, "VLOG_SEGMENT_MIN holds 15 of them");
	cr_assert_eq(append_big(j), 3);
	journal_close(j);
}

Test(journal, trim_point_examines_a_bounded_number_of_events)
{
	struct journal *j = jopen(1);
	uint64_t upto;

	append_applied(j, JOURNAL_TRIM_SCAN_MAX + 10);
	upto = trim_point(j, NODE, UINT64_MAX, 1, UINT64_MAX);
	cr_assert_eq(upto, JOURNAL_TRIM_SCAN_MAX);
	cr_assert_eq(journal_trim(j, NODE, upto, NULL), 0);
	cr_assert_eq(trim_point(j, NODE, UINT64_MAX, 1, UINT64_MAX), JOURNAL_TRIM_SCAN_MAX + 10);
	journal_close(j);
}
