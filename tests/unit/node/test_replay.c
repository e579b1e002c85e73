/*
 * test_replay.c - replaying a whole journal into an empty store
 * (node/replay.c).
 *
 * Each test builds a journal by hand in its own mkdtemp directory: events
 * of two origins journaled as a third node receives them, so their
 * origin, seq and term are exactly as written here.  Origin B sorts before
 * origin A but is the primary of the later term, so key order and history
 * order differ: B's changes only apply on top of A's.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/journal.h"
#include "node/replay.h"
#include "store/store.h"
#include "tree.h"

#define SELF	 0x300 /* the node whose journal this is */
#define ORIGIN_A 0x200 /* primary of term 1 */
#define ORIGIN_B 0x100 /* primary of term 2: sorts first */

static const uint8_t cluster[16] = "cluster-replay01";
static char tmp[64];
static struct journal *jrn;
static struct store *store;

static void setup(void)
{
	char p[128];
	const char *why = NULL;

	strcpy(tmp, "/tmp/test_replay.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(p, sizeof(p), "%s/journal", tmp);
	cr_assert_eq(journal_open(p, 1, SELF, &jrn, &why), 0, "journal_open: %s", why);
	snprintf(p, sizeof(p), "%s/store", tmp);
	cr_assert_eq(mkdir(p, 0755), 0);
	cr_assert_eq(store_open(p, &store), 0);
	cr_assert_eq(store_stamp(store, cluster), 0);
}

static void teardown(void)
{
	store_close(store);
	journal_close(jrn);
	tree_remove(tmp);
}

TestSuite(replay, .init = setup, .fini = teardown);

/* Journal ev as received from its origin and, with applied set, mark it applied. */
static void journal_event(struct event ev, int applied)
{
	ev.hlc = (ev.origin << 16) | ev.seq;
	cr_assert_eq(journal_put_remote(jrn, &ev), 0, "put %lx:%lu", (unsigned long)ev.origin,
		     (unsigned long)ev.seq);
	if (applied)
		journal_mark_applied(jrn, ev.origin, ev.seq);
}

static void put(struct event ev)
{
	journal_event(ev, 1);
}

static void put_create(uint64_t origin, uint64_t seq, uint64_t term, const char *path)
{
	put((struct event){.type = EV_CREATE,
			   .origin = origin,
			   .seq = seq,
			   .term = term,
			   .fid = {origin, seq},
			   .mode = S_IFREG | 0644,
			   .path = (char *)path});
}

static void put_write(uint64_t origin, uint64_t seq, uint64_t term, const char *path,
		      struct fid fid, struct evid base, uint64_t off, const char *data)
{
	put((struct event){.type = EV_WRITE,
			   .origin = origin,
			   .seq = seq,
			   .term = term,
			   .fid = fid,
			   .base = base,
			   .path = (char *)path,
			   .offset = off,
			   .data = (uint8_t *)data,
			   .data_len = (uint32_t)strlen(data)});
}

/*
 * A's term-1 history: create f, write it, make directory d.  B's term-2
 * history (after its promotion): append to f, move it into d, create d/h.
 */
static void two_terms(void)
{
	struct fid f = {ORIGIN_A, 1};

	put_create(ORIGIN_A, 1, 1, "f");
	put_write(ORIGIN_A, 2, 1, "f", f, (struct evid){ORIGIN_A, 1}, 0, "hello");
	put((struct event){.type = EV_MKDIR,
			   .origin = ORIGIN_A,
			   .seq = 3,
			   .term = 1,
			   .fid = {ORIGIN_A, 3},
			   .mode = S_IFDIR | 0755,
			   .path = "d"});
	put((struct event){
	    .type = EV_ROLE, .origin = ORIGIN_B, .seq = 1, .term = 2, .op_flags = 1});
	put_write(ORIGIN_B, 2, 2, "f", f, (struct evid){ORIGIN_A, 2}, 5, " world");
	put((struct event){.type = EV_RENAME,
			   .origin = ORIGIN_B,
			   .seq = 3,
			   .term = 2,
			   .fid = f,
			   .path = "f",
			   .path2 = "d/g"});
	put_create(ORIGIN_B, 4, 2, "d/h");
}

static void read_file(const char *rel, char *buf, size_t len)
{
	int fd = openat(store->root, rel, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	cr_assert_geq(fd, 0, "%s: %s", rel, strerror(errno));
	n = read(fd, buf, len - 1);
	close(fd);
	cr_assert_geq(n, 0);
	buf[n] = 0;
}

static int exists(const char *rel)
{
	struct stat st;

	return fstatat(store->root, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int forced_calls, failed_calls;

static void count_forced(void *arg, const struct event *ev, const char *why)
{
	(void)arg;
	(void)ev;
	(void)why;
	forced_calls++;
}

static void count_failed(void *arg, const struct event *ev, const char *why, int err)
{
	(void)arg;
	cr_log_warn("event %lx:%lu failed: %s: %s", (unsigned long)ev->origin,
		    (unsigned long)ev->seq, why ? why : "", strerror(-err));
	failed_calls++;
}

Test(replay, later_term_of_lower_origin_applies_after_earlier_term)
{
	struct replay_hooks h = {.forced = count_forced, .failed = count_failed};
	uint64_t applied, failed;
	char buf[64];

	forced_calls = failed_calls = 0;
	two_terms();
	cr_assert_eq(replay_journal(jrn, store, &h, &applied, &failed), 0);
	cr_assert_eq(failed, 0);
	cr_assert_eq(failed_calls, 0);
	cr_assert_eq(forced_calls, 0, "events applied out of history order need forcing");
	cr_assert_eq(applied, 7);
	read_file("d/g", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello world");
	cr_assert(exists("d/h"));
	cr_assert(!exists("f"));
}

static int skip_a_tail(void *arg, uint64_t origin, uint64_t seq)
{
	(void)arg;
	return origin == ORIGIN_A && seq >= 4 && seq <= 5;
}

Test(replay, skip_keeps_a_range_out_as_voids)
{
	struct replay_hooks h = {.skip = skip_a_tail, .failed = count_failed};
	uint64_t applied, failed;
	char buf[64];

	failed_calls = 0;
	two_terms();
	/* A's unreplicated tail of term 1, made after B's promotion: kept aside. */
	put_create(ORIGIN_A, 4, 1, "tail");
	put_write(ORIGIN_A, 5, 1, "tail", (struct fid){ORIGIN_A, 4}, (struct evid){ORIGIN_A, 4}, 0,
		  "lost");
	put_create(ORIGIN_A, 6, 3, "after");
	cr_assert_eq(replay_journal(jrn, store, &h, &applied, &failed), 0);
	cr_assert_eq(failed, 0);
	cr_assert_eq(applied, 10, "skipped events count as applied");
	cr_assert(!exists("tail"));
	cr_assert(exists("after"));
	read_file("d/g", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello world");
}

Test(replay, upto_applied_stops_at_each_origins_mark)
{
	struct replay_hooks h = {.upto_applied = 1, .failed = count_failed};
	uint64_t applied, failed;

	failed_calls = 0;
	two_terms();
	journal_event((struct event){.type = EV_CREATE,
				     .origin = ORIGIN_A,
				     .seq = 4,
				     .term = 3,
				     .fid = {ORIGIN_A, 4},
				     .mode = S_IFREG | 0644,
				     .path = "unapplied"},
		      0);
	cr_assert_eq(replay_journal(jrn, store, &h, &applied, &failed), 0);
	cr_assert_eq(failed, 0);
	cr_assert_eq(applied, 7);
	cr_assert(!exists("unapplied"));
	cr_assert(exists("d/h"));
}

Test(replay, tails_load_reads_the_journal_meta)
{
	struct replay_tails t;
	uint8_t rec[64] = {0};

	cr_assert_eq(replay_tails_load(jrn, &t), 0);
	cr_assert_eq(t.n, 0);
	cr_assert_eq(t.in_store, 0);
	/* Two entries: (A, 4..5, term 2) and (B, 9..9, term 3), little-endian. */
	rec[0] = 0x00, rec[1] = 0x02, rec[8] = 4, rec[16] = 5, rec[24] = 2;
	rec[32] = 0x00, rec[33] = 0x01, rec[40] = 9, rec[48] = 9, rec[56] = 3;
	cr_assert_eq(journal_meta_put(jrn, JOURNAL_META_TAILS, rec, sizeof(rec), 0), 0);
	cr_assert_eq(journal_meta_put_u64(jrn, JOURNAL_META_REBUILD, 1, 0), 0);
	cr_assert_eq(replay_tails_load(jrn, &t), 0);
	cr_assert_eq(t.n, 2);
	cr_assert_eq(t.in_store, 1);
	cr_assert_eq(t.v[0].origin, ORIGIN_A);
	cr_assert_eq(t.v[1].term, 3);
	cr_assert(replay_tails_skip(&t, ORIGIN_A, 4));
	cr_assert(replay_tails_skip(&t, ORIGIN_A, 5));
	cr_assert(!replay_tails_skip(&t, ORIGIN_A, 6));
	cr_assert(replay_tails_skip(&t, ORIGIN_B, 9));
	cr_assert(!replay_tails_skip(&t, ORIGIN_B, 8));
	replay_tails_free(&t);
	cr_assert_eq(journal_meta_put(jrn, JOURNAL_META_TAILS, rec, 33, 0), 0);
	cr_assert_eq(replay_tails_load(jrn, &t), -EBADMSG);
	cr_assert_null(t.v);
}
