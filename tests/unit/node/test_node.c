/*
 * test_node.c - a node through node.h alone (node/node.c): local commits,
 * runs of remote events and their refusals, roles, terms and fences, and
 * what a close (or a kill) and a reopen keep.
 *
 * Each test makes a node as `ledgerctl init` does (node_create()) in its
 * own mkdtemp directory and opens it.  Remote events are built here as the
 * primary P, and after it Q, would ship them; the node's own id is drawn
 * at random by node_create().  Nothing here reads struct node's fields:
 * what a test observes it observes through node.h's functions, the
 * journal's (under the node lock) and the store directory itself; the
 * redo suite also checkpoint.h's.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/files.h"
#include "node/checkpoint.h"
#include "node/node.h"
#include "store/digest.h"
#include "tree.h"

#define P 0x5050ull /* primary of term 1 */
#define Q 0x7070ull /* a node promoted at term 2 */

static char tmp[64];
static char dir[128];
static char storedir[160];
static struct node *n;
static uint64_t self;

/* ---- making, opening and reopening the node ------------------------------ */

static void open_node(int flags)
{
	char err[512];

	cr_assert_eq(node_open(dir, flags, &n, err, sizeof(err)), 0, "node_open: %s", err);
}

static void make_node_peers(int primary, const uint64_t *peer_ids, unsigned npeers)
{
	struct config cfg;
	char err[512];
	unsigned i;

	strcpy(tmp, "/tmp/test_node.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(dir, sizeof(dir), "%s/node", tmp);
	snprintf(storedir, sizeof(storedir), "%s/%s", dir, NODE_STORE_DIR);
	config_defaults(&cfg);
	strcpy(cfg.name, "n1");
	for (i = 0; i < npeers; i++) {
		snprintf(cfg.peers[i].name, sizeof(cfg.peers[i].name), "peer%u", i);
		snprintf(cfg.peers[i].address, sizeof(cfg.peers[i].address), "127.0.0.1:%u", 1000 + i);
		cfg.peers[i].id = peer_ids[i];
	}
	cfg.npeers = npeers;
	cr_assert_eq(node_create(dir, &cfg, primary, err, sizeof(err)), 0, "node_create: %s", err);
	self = cfg.node_id;
	cr_assert_neq(self, 0);
	open_node(0);
}

static void make_node(int primary)
{
	make_node_peers(primary, NULL, 0);
}

static void setup_primary(void)
{
	make_node(1);
}

static void setup_replica(void)
{
	make_node(0);
}

static void teardown(void)
{
	node_close(n, 1);
	n = NULL;
	tree_remove(tmp);
}

static void reopen(int clean, int flags)
{
	node_close(n, clean);
	n = NULL;
	open_node(flags);
}

/* ---- the journal, read under the node lock -------------------------------- */

static uint64_t applied(uint64_t origin)
{
	uint64_t seq;

	node_lock(n);
	seq = journal_applied(node_journal(n), origin);
	node_unlock(n);
	return seq;
}

static uint64_t next_seq(void)
{
	uint64_t seq;

	node_lock(n);
	seq = journal_next_seq(node_journal(n));
	node_unlock(n);
	return seq;
}

/* journal_get() of (origin, seq) with its payload; ev is the caller's (event_free()). */
static int journaled(uint64_t origin, uint64_t seq, struct event *ev)
{
	const char *why = NULL;
	int r;

	node_lock(n);
	r = journal_get(node_journal(n), origin, seq, 1, ev, &why);
	node_unlock(n);
	cr_assert(r == 0 || r == -ENOENT, "journal_get %lx:%lu: %s: %s", (unsigned long)origin,
		  (unsigned long)seq, strerror(-r), why ? why : "");
	return r;
}

static int is_journaled(uint64_t origin, uint64_t seq)
{
	struct event ev;
	int r = journaled(origin, seq, &ev);

	if (r == 0)
		event_free(&ev);
	return r == 0;
}

static uint64_t meta_u64(const char *name)
{
	uint64_t v = 0;

	node_lock(n);
	cr_assert_eq(journal_meta_get_u64(node_journal(n), name, &v), 0, "meta %s", name);
	node_unlock(n);
	return v;
}

/* What a refusal must leave as it was: every record, the applied seqs, the next seq. */
struct journal_view {
	uint64_t records, next_seq, applied_p, applied_q, applied_self;
};

static void view_journal(struct journal_view *v)
{
	struct journal_iter *it = NULL;
	const uint8_t *val;
	uint64_t a, b;
	size_t len;

	memset(v, 0, sizeof(*v));
	node_lock(n);
	cr_assert_eq(journal_iter_new(node_journal(n), JOURNAL_EVENTS, 0, 0, &it), 0);
	while (journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0)
		v->records++;
	journal_iter_free(it);
	node_unlock(n);
	v->next_seq = next_seq();
	v->applied_p = applied(P);
	v->applied_q = applied(Q);
	v->applied_self = applied(self);
}

static void expect_same_journal(const struct journal_view *before)
{
	struct journal_view now;

	view_journal(&now);
	cr_expect_eq(now.records, before->records, "event records: %lu, were %lu",
		     (unsigned long)now.records, (unsigned long)before->records);
	cr_expect_eq(now.next_seq, before->next_seq);
	cr_expect_eq(now.applied_p, before->applied_p);
	cr_expect_eq(now.applied_q, before->applied_q);
	cr_expect_eq(now.applied_self, before->applied_self);
}

/* ---- the store, read from its directory ---------------------------------- */

/* The tree digest leaves ledgerfs's xattrs out: the versions of the root and of f are added. */
struct store_view {
	unsigned char digest[DIGEST_LEN];
	struct evid root_ver, f_ver;
	struct fid f_fid;
};

static void view_store(struct store_view *v)
{
	char p[PATH_MAX];
	int fd;

	memset(v, 0, sizeof(*v));
	cr_assert_eq(digest_tree(storedir, v->digest, NULL), 0);
	fd = open(storedir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(store_get_ver(fd, &v->root_ver), 0);
	close(fd);
	tree_at(p, storedir, "f");
	fd = open(p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		cr_assert_eq(store_get_ids(fd, &v->f_fid, &v->f_ver), 0);
		close(fd);
	}
}

static void expect_same_store(const struct store_view *before)
{
	struct store_view now;

	view_store(&now);
	cr_expect_eq(memcmp(now.digest, before->digest, DIGEST_LEN), 0, "store tree changed");
	cr_expect_eq(now.root_ver.origin, before->root_ver.origin, "root version changed");
	cr_expect_eq(now.root_ver.seq, before->root_ver.seq, "root version changed");
	cr_expect_eq(now.f_ver.seq, before->f_ver.seq, "version of f changed");
	cr_expect_eq(now.f_fid.counter, before->f_fid.counter, "fid of f changed");
}

static void read_store(const char *rel, char *buf, size_t len)
{
	char p[PATH_MAX];
	ssize_t r;
	int fd;

	tree_at(p, storedir, rel);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
	r = read(fd, buf, len - 1);
	close(fd);
	cr_assert_geq(r, 0);
	buf[r] = 0;
}

static int in_store(const char *rel)
{
	char p[PATH_MAX];
	struct stat st;

	tree_at(p, storedir, rel);
	return lstat(p, &st) == 0;
}

/* ---- local events --------------------------------------------------------- */

static int commit(struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int r;

	node_lock(n);
	r = node_commit_locked(n, ev, &ctx);
	node_unlock(n);
	return r;
}

static struct event local_create(const char *path)
{
	return (struct event){.type = EV_CREATE, .mode = S_IFREG | 0644, .path = (char *)path};
}

static struct event local_write(const char *path, struct fid fid, uint64_t off, const char *data)
{
	return (struct event){.type = EV_WRITE,
			      .fid = fid,
			      .path = (char *)path,
			      .offset = off,
			      .data = (uint8_t *)data,
			      .data_len = (uint32_t)strlen(data)};
}

/* ---- remote events -------------------------------------------------------- */

/* node_apply_remote() with a cache, as the receiver calls it. */
static int remote(const struct event *evs, size_t count, int *res, size_t *done, const char **why)
{
	struct apply_cache cache;
	int r;

	apply_cache_init(&cache);
	r = node_apply_remote(n, evs, count, &cache, res, done, why);
	apply_cache_release(&cache);
	return r;
}

/* One remote event, expected to be taken and applied. */
static void remote_ok(struct event ev)
{
	const char *why = NULL;
	size_t done = 99;
	int res = -1, r;

	r = remote(&ev, 1, &res, &done, &why);
	cr_assert_eq(r, 0, "%s %lx:%lu: %s: %s", event_type_name(ev.type), (unsigned long)ev.origin,
		     (unsigned long)ev.seq, strerror(-r), why ? why : "");
	cr_assert_eq(done, 1);
	cr_assert_eq(res, 0);
}

/* One remote event, expected to be refused with err and a why containing reason. */
static void remote_refused(struct event ev, int err, const char *reason)
{
	const char *why = NULL;
	size_t done = 99;
	int res = -1, r;

	r = remote(&ev, 1, &res, &done, &why);
	cr_assert_eq(r, err, "%s %lx:%lu: got %d (%s), want %d (%s)", event_type_name(ev.type),
		     (unsigned long)ev.origin, (unsigned long)ev.seq, r, strerror(-r), err,
		     strerror(-err));
	cr_assert_eq(done, 0);
	cr_assert_not_null(why, "a refusal names its reason");
	cr_assert_not_null(strstr(why, reason), "why is '%s', want '%s'", why, reason);
}

static struct event r_create(uint64_t origin, uint64_t seq, uint64_t term, const char *path)
{
	return (struct event){.type = EV_CREATE,
			      .origin = origin,
			      .seq = seq,
			      .hlc = (origin << 20) | seq,
			      .term = term,
			      .fid = {origin, seq},
			      .mode = S_IFREG | 0644,
			      .path = (char *)path};
}

static struct event r_write(uint64_t origin, uint64_t seq, uint64_t term, const char *path,
			    struct fid fid, struct evid base, uint64_t off, const char *data)
{
	return (struct event){.type = EV_WRITE,
			      .origin = origin,
			      .seq = seq,
			      .hlc = (origin << 20) | seq,
			      .term = term,
			      .fid = fid,
			      .base = base,
			      .path = (char *)path,
			      .offset = off,
			      .data = (uint8_t *)data,
			      .data_len = (uint32_t)strlen(data)};
}

#define F_FID ((struct fid){P, 1})

/* P's term-1 history: 1 creates f, 2 writes "hello" into it. */
static void take_p_history(void)
{
	struct event evs[2] = {
	    r_create(P, 1, 1, "f"),
	    r_write(P, 2, 1, "f", F_FID, (struct evid){P, 1}, 0, "hello"),
	};
	const char *why = NULL;
	size_t done = 0;
	int res[2] = {-1, -1}, r;
	char buf[32];

	r = remote(evs, 2, res, &done, &why);
	cr_assert_eq(r, 0, "P's history: %s: %s", strerror(-r), why ? why : "");
	cr_assert_eq(done, 2);
	cr_assert_eq(res[0], 0);
	cr_assert_eq(res[1], 0);
	cr_assert_eq(applied(P), 2);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello");
}

/* Q's promotion at term: seq 1 of Q, its data Q's applied vector {(P, p_seq)}. */
static struct event q_promotion(uint64_t seq, uint64_t term, uint8_t vec[16], uint64_t p_seq)
{
	put_le64(vec, P);
	put_le64(vec + 8, p_seq);
	return (struct event){.type = EV_ROLE,
			      .origin = Q,
			      .seq = seq,
			      .hlc = (Q << 20) | seq,
			      .term = term,
			      .op_flags = 1,
			      .data = vec,
			      .data_len = 16};
}

/* ---- local: a fresh node and its own events -------------------------------- */

TestSuite(local, .init = setup_primary, .fini = teardown);

Test(local, fresh_node_is_primary_of_term_1_with_an_empty_journal_and_store)
{
	struct journal_view jv;
	char p[PATH_MAX];

	cr_assert_eq(node_is_primary(n), 1);
	cr_assert_eq(node_term(n), 1);
	view_journal(&jv);
	cr_assert_eq(jv.records, 0);
	cr_assert_eq(jv.next_seq, 1);
	cr_assert_eq(jv.applied_self, 0);
	cr_assert_eq(dir_is_empty(storedir), 1);
	tree_at(p, dir, CONFIG_FILE);
	cr_assert_eq(access(p, R_OK), 0, "%s", p);
}

Test(local, commits_get_contiguous_seqs_and_read_back_as_made)
{
	struct event evs[4] = {
	    local_create("f"),
	    local_write("f", (struct fid){0}, 0, "hello"),
	    {.type = EV_MKDIR, .mode = S_IFDIR | 0755, .path = "d"},
	    local_create("d/g"),
	};
	char buf[32];
	uint64_t i;

	evs[1].fid = (struct fid){self, 1};
	for (i = 0; i < 4; i++) {
		cr_assert_eq(commit(&evs[i]), 0, "event %lu", (unsigned long)i);
		cr_assert_eq(evs[i].origin, self);
		cr_assert_eq(evs[i].seq, i + 1, "seq %lu for event %lu", (unsigned long)evs[i].seq,
			     (unsigned long)i);
		cr_assert_eq(evs[i].term, 1);
	}
	for (i = 0; i < 4; i++) {
		struct event ev;

		cr_assert_eq(journaled(self, i + 1, &ev), 0, "seq %lu", (unsigned long)i + 1);
		cr_expect_eq(ev.type, evs[i].type);
		cr_expect_eq(ev.origin, self);
		cr_expect_eq(ev.seq, i + 1);
		cr_expect_eq(ev.term, 1);
		cr_expect_str_eq(ev.path, evs[i].path);
		if (ev.type == EV_CREATE || ev.type == EV_MKDIR) {
			/* A new object's fid is the number of its creating event. */
			cr_expect_eq(ev.fid.origin, self);
			cr_expect_eq(ev.fid.counter, i + 1);
		}
		if (ev.type == EV_WRITE) {
			cr_expect_eq(ev.data_len, 5);
			cr_expect_eq(memcmp(ev.data, "hello", 5), 0);
		}
		event_free(&ev);
	}
	cr_assert_eq(is_journaled(self, 5), 0);
	cr_assert_eq(applied(self), 4);
	cr_assert_eq(next_seq(), 5);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello");
	cr_assert(in_store("d/g"));
}

Test(local, failed_apply_becomes_a_void_and_seqs_stay_contiguous)
{
	struct event bad = local_write("missing", (struct fid){self, 7}, 0, "x");
	struct event ok = local_create("f");
	struct event ev;

	cr_assert_eq(commit(&bad), -ENOENT);
	cr_assert_eq(bad.seq, 1);
	cr_assert_eq(journaled(self, 1, &ev), 0);
	cr_assert_eq(ev.type, EV_VOID, "a refused local event is journaled as %s",
		     event_type_name(ev.type));
	event_free(&ev);
	cr_assert_eq(applied(self), 1, "a void counts as applied");
	cr_assert(!in_store("missing"));
	cr_assert_eq(commit(&ok), 0);
	cr_assert_eq(ok.seq, 2);
	cr_assert_eq(applied(self), 2);
}

Test(local, commits_survive_reopen_and_seqs_go_on)
{
	struct event c = local_create("f");
	struct event w = local_write("f", (struct fid){0}, 0, "kept");
	struct event after = local_create("g");
	struct event ev;
	char buf[32];

	cr_assert_eq(commit(&c), 0);
	w.fid = c.fid;
	cr_assert_eq(commit(&w), 0);
	reopen(1, NODE_OPEN_REPLAY);
	cr_assert_eq(applied(self), 2);
	cr_assert_eq(next_seq(), 3);
	cr_assert_eq(journaled(self, 2, &ev), 0);
	cr_assert_eq(ev.type, EV_WRITE);
	cr_assert_eq(memcmp(ev.data, "kept", 4), 0);
	event_free(&ev);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "kept");
	cr_assert_eq(commit(&after), 0);
	cr_assert_eq(after.seq, 3);
}

/* ---- parallel writes (node_write_*) --------------------------------------- */

TestSuite(parallel, .init = setup_primary, .fini = teardown);

/* The applied mark without the node lock, which waits for parallel writes. */
static uint64_t applied_now(void)
{
	return journal_applied(node_journal(n), self);
}

/* Journal a data write to path (fid) in parallel mode; its apply is left to finish(). */
static void begin(struct event *ev, const char *path, struct fid fid, const char *data)
{
	*ev = local_write(path, fid, 0, data);
	node_write_lock(n);
	cr_assert_eq(node_write_begin_locked(n, ev), 0);
	node_write_unlock(n);
}

static int finish(struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;

	return node_write_finish(n, ev, &ctx);
}

static void two_files(struct fid *f, struct fid *g)
{
	struct event cf = local_create("f"), cg = local_create("g");

	cr_assert_eq(commit(&cf), 0);
	cr_assert_eq(commit(&cg), 0);
	*f = cf.fid;
	*g = cg.fid;
}

Test(parallel, writes_finish_out_of_order_and_the_applied_mark_waits_for_the_oldest)
{
	struct event w1, w2;
	struct fid f, g;
	char buf[32];

	two_files(&f, &g);
	begin(&w1, "f", f, "one");
	begin(&w2, "g", g, "two");
	cr_assert_eq(w1.seq, 3);
	cr_assert_eq(w2.seq, 4);
	cr_assert_eq(finish(&w2), 0);
	read_store("g", buf, sizeof(buf));
	cr_assert_str_eq(buf, "two");
	cr_assert_eq(applied_now(), 2, "seq 4 is applied but seq 3 is not: the mark stays at 2");
	cr_assert_eq(finish(&w1), 0);
	cr_assert_eq(applied_now(), 4);
	cr_assert_eq(node_sync(n), 0);
	cr_assert_eq(node_synced_seq(n), 4);
}

Test(parallel, synced_seq_stops_below_a_write_still_applying)
{
	struct event w1, w2;
	struct fid f, g;

	two_files(&f, &g);
	begin(&w1, "f", f, "one");
	begin(&w2, "g", g, "two");
	cr_assert_eq(finish(&w2), 0);
	cr_assert_eq(node_sync(n), 0);
	cr_assert_eq(node_synced_seq(n), 2, "shippers must not see seq 4 before seq 3 is applied");
	cr_assert_eq(finish(&w1), 0);
	cr_assert_eq(node_sync(n), 0);
	cr_assert_eq(node_synced_seq(n), 4);
}

Test(parallel, failed_write_becomes_a_void)
{
	struct event w;
	struct fid f, g;

	two_files(&f, &g);
	begin(&w, "missing", (struct fid){self, 9}, "x");
	cr_assert_eq(finish(&w), -ENOENT);
	cr_assert_eq(is_journaled(self, w.seq), 1);
	{
		struct event ev;

		cr_assert_eq(journaled(self, w.seq, &ev), 0);
		cr_assert_eq(ev.type, EV_VOID);
		event_free(&ev);
	}
	cr_assert_eq(applied_now(), 3);
	cr_assert_geq(node_synced_seq(n), w.seq,
		      "the void of a refused write is durable before the refusal is returned");
}

Test(parallel, only_data_writes_go_the_parallel_way)
{
	struct event c = local_create("h");

	node_write_lock(n);
	cr_assert_eq(node_write_begin_locked(n, &c), -EINVAL);
	node_write_unlock(n);
	cr_assert_eq(next_seq(), 1, "nothing journaled");
}

static int excl_taken;

static void *take_node_lock(void *arg)
{
	(void)arg;
	node_lock(n);
	__atomic_store_n(&excl_taken, 1, __ATOMIC_SEQ_CST);
	node_unlock(n);
	return NULL;
}

Test(parallel, node_lock_waits_until_no_write_is_applying)
{
	struct event w;
	struct fid f, g;
	pthread_t t;

	two_files(&f, &g);
	excl_taken = 0;
	begin(&w, "f", f, "one");
	cr_assert_eq(pthread_create(&t, NULL, take_node_lock, NULL), 0);
	usleep(100 * 1000);
	cr_assert_eq(__atomic_load_n(&excl_taken, __ATOMIC_SEQ_CST), 0,
		     "node_lock() was taken while a write was between append and apply");
	cr_assert_eq(finish(&w), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(excl_taken, 1);
}

Test(parallel, crash_with_a_later_write_applied_replays_the_earlier_and_skips_the_later)
{
	struct event w1, w2;
	struct fid f, g;
	char buf[32];
	uint64_t i;

	two_files(&f, &g);
	begin(&w1, "f", f, "one");
	begin(&w2, "g", g, "two");
	cr_assert_eq(finish(&w2), 0);
	/* A crash: seq 3 journaled, never applied; seq 4 applied; the mark at 2. */
	reopen(0, NODE_OPEN_REPLAY);
	cr_assert_eq(applied_now(), 4);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "one");
	read_store("g", buf, sizeof(buf));
	cr_assert_str_eq(buf, "two");
	for (i = 3; i <= 4; i++) {
		struct event ev;

		cr_assert_eq(journaled(self, i, &ev), 0);
		cr_assert_eq(ev.type, EV_WRITE, "seq %lu became %s", (unsigned long)i,
			     event_type_name(ev.type));
		event_free(&ev);
	}
}

/* ---- remote: runs of a peer's events and what is refused ------------------ */

static void setup_replica_with_p_history(void)
{
	make_node(0);
	take_p_history();
}

TestSuite(remote, .init = setup_replica_with_p_history, .fini = teardown);

Test(remote, run_is_journaled_as_shipped_and_applied_in_order)
{
	struct event evs[3] = {
	    r_write(P, 3, 1, "f", F_FID, (struct evid){P, 2}, 5, " world"),
	    r_create(P, 4, 1, "g"),
	    r_write(P, 5, 1, "g", (struct fid){P, 4}, (struct evid){P, 4}, 0, "gee"),
	};
	const char *why = NULL;
	size_t done = 0;
	int res[3] = {-1, -1, -1};
	struct store_view sv;
	struct event ev;
	char buf[32];

	cr_assert_eq(remote(evs, 3, res, &done, &why), 0, "%s", why ? why : "");
	cr_assert_eq(done, 3);
	cr_assert(res[0] == 0 && res[1] == 0 && res[2] == 0);
	cr_assert_eq(applied(P), 5);
	cr_assert_eq(next_seq(), 1, "remote events take no local seq");
	cr_assert_eq(journaled(P, 3, &ev), 0);
	cr_expect_eq(ev.hlc, evs[0].hlc, "origin's hlc kept");
	cr_expect_eq(ev.term, 1);
	cr_expect_eq(ev.offset, 5);
	event_free(&ev);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello world");
	read_store("g", buf, sizeof(buf));
	cr_assert_str_eq(buf, "gee");
	view_store(&sv);
	cr_assert_eq(sv.f_ver.origin, P);
	cr_assert_eq(sv.f_ver.seq, 3, "f carries the version of the last event that changed it");
}

Test(remote, seq_gap_is_refused_and_nothing_journaled)
{
	struct journal_view jv;
	struct store_view sv;

	view_journal(&jv);
	view_store(&sv);
	remote_refused(r_create(P, 4, 1, "g"), -EPROTO, "skip a seq");
	expect_same_journal(&jv);
	expect_same_store(&sv);
	cr_assert_eq(is_journaled(P, 4), 0);
	cr_assert(!in_store("g"));
}

Test(remote, gap_inside_a_run_takes_the_events_before_it)
{
	struct event evs[3] = {
	    r_create(P, 3, 1, "g"),
	    r_create(P, 5, 1, "h"),
	    r_create(P, 6, 1, "i"),
	};
	const char *why = NULL;
	size_t done = 0;
	int res[3] = {-1, -1, -1};

	cr_assert_eq(remote(evs, 3, res, &done, &why), -EPROTO);
	cr_assert_eq(done, 1, "taken before the gap: %zu", done);
	cr_assert_not_null(why);
	cr_assert_not_null(strstr(why, "skip a seq"), "%s", why);
	cr_assert_eq(applied(P), 3);
	cr_assert(is_journaled(P, 3));
	cr_assert(!is_journaled(P, 5));
	cr_assert(!is_journaled(P, 6));
	cr_assert(in_store("g"));
	cr_assert(!in_store("h"));
}

Test(remote, duplicate_is_passed_over_and_changes_nothing)
{
	/* Seq 2 again, but not as journaled: if it were taken, f or the journal would show it. */
	struct event dup = r_write(P, 2, 1, "f", F_FID, (struct evid){P, 1}, 0, "XXXXXXX");
	struct journal_view jv;
	struct store_view sv;
	const char *why = NULL;
	size_t done = 0;
	int res = -1;
	struct event ev;
	char buf[32];

	view_journal(&jv);
	view_store(&sv);
	cr_assert_eq(remote(&dup, 1, &res, &done, &why), 0);
	cr_assert_eq(done, 1);
	cr_assert_eq(res, 1, "an event applied already is res 1");
	cr_assert_null(why);
	expect_same_journal(&jv);
	expect_same_store(&sv);
	cr_assert_eq(journaled(P, 2, &ev), 0);
	cr_assert_eq(memcmp(ev.data, "hello", 5), 0, "journaled record replaced");
	event_free(&ev);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello");
}

Test(remote, duplicate_then_next_in_one_run)
{
	struct event evs[3] = {
	    r_create(P, 1, 1, "f"),
	    r_write(P, 2, 1, "f", F_FID, (struct evid){P, 1}, 0, "hello"),
	    r_write(P, 3, 1, "f", F_FID, (struct evid){P, 2}, 0, "HE"),
	};
	const char *why = NULL;
	size_t done = 0;
	int res[3] = {-1, -1, -1};
	char buf[32];

	cr_assert_eq(remote(evs, 3, res, &done, &why), 0, "%s", why ? why : "");
	cr_assert_eq(done, 3);
	cr_assert(res[0] == 1 && res[1] == 1 && res[2] == 0);
	cr_assert_eq(applied(P), 3);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "HEllo");
}

Test(remote, event_of_a_lower_term_is_held_back_until_its_promotion_is_known)
{
	struct journal_view jv;
	struct store_view sv;

	cr_assert_eq(node_see_term(n, 3, 0), 0);
	cr_assert_eq(node_term(n), 3);
	view_journal(&jv);
	view_store(&sv);
	remote_refused(r_write(P, 3, 1, "f", F_FID, (struct evid){P, 2}, 0, "late"), -EAGAIN,
		       "held back");
	expect_same_journal(&jv);
	expect_same_store(&sv);
	cr_assert(!is_journaled(P, 3));
}

Test(remote, event_claiming_to_be_this_nodes_own_is_refused)
{
	struct journal_view jv;

	view_journal(&jv);
	remote_refused(r_create(self, 1, 1, "mine"), -EPROTO, "never made it");
	expect_same_journal(&jv);
	cr_assert(!in_store("mine"));
}

Test(remote, escaping_path_is_refused_before_it_is_journaled)
{
	struct journal_view jv;

	view_journal(&jv);
	remote_refused(r_create(P, 3, 1, "../escape"), -EINVAL, "'..' path component");
	expect_same_journal(&jv);
	cr_assert(!is_journaled(P, 3));
}

/*
 * A store refusal of a remote event: documented to leave the event
 * journaled but unapplied (never voided: its origin applied it), the
 * store as it was, and the same refusal on a retry.
 */
static void store_refuses(struct event ev, int err, const char *reason)
{
	struct journal_view jv;
	struct store_view sv;
	struct event got;

	view_journal(&jv);
	view_store(&sv);
	remote_refused(ev, err, reason);
	expect_same_store(&sv);
	cr_assert_eq(applied(P), jv.applied_p, "a refused event must not count as applied");
	cr_assert_eq(journaled(P, ev.seq, &got), 0, "journaled before its apply");
	cr_assert_eq(got.type, ev.type, "kept as shipped, not voided: %s",
		     event_type_name(got.type));
	event_free(&got);
	/* A retry journals nothing twice and is refused the same way. */
	jv.records++;
	remote_refused(ev, err, reason);
	expect_same_journal(&jv);
	expect_same_store(&sv);
}

Test(remote, base_version_mismatch_is_refused_and_left_unapplied)
{
	store_refuses(r_write(P, 3, 1, "f", F_FID, (struct evid){P, 1}, 0, "stale"), -ESTALE,
		      "base version mismatch");
}

Test(remote, fid_mismatch_is_refused_and_left_unapplied)
{
	store_refuses(r_write(P, 3, 1, "f", (struct fid){P, 9}, (struct evid){P, 2}, 0, "other"),
		      -ESTALE, "does not hold the fid");
}

Test(remote, missing_name_is_refused_and_left_unapplied)
{
	store_refuses(r_write(P, 3, 1, "nope", F_FID, (struct evid){P, 2}, 0, "x"), -ENOENT,
		      "open target");
	cr_assert(!in_store("nope"));
}

Test(remote, taken_name_is_refused_and_left_unapplied)
{
	store_refuses(r_create(P, 3, 1, "f"), -EEXIST, "name taken by another object");
}

/* A parent that is missing when the event comes and is there later (a repair). */
static void refused_for_a_missing_parent(void)
{
	store_refuses(r_create(P, 3, 1, "d/x"), -ENOENT, "resolve parent");
	tree_make_dir(storedir, "d", 0755);
}

Test(remote, unapplied_event_is_taken_up_by_a_retry)
{
	refused_for_a_missing_parent();
	remote_ok(r_create(P, 3, 1, "d/x"));
	cr_assert_eq(applied(P), 3);
	cr_assert(in_store("d/x"));
}

Test(remote, unapplied_event_is_taken_up_by_the_replay_at_the_next_open)
{
	refused_for_a_missing_parent();
	reopen(0, NODE_OPEN_REPLAY);
	cr_assert_eq(applied(P), 3);
	cr_assert(in_store("d/x"));
}

/* ---- roles: terms, promotion, demotion and fences ------------------------- */

TestSuite(roles, .fini = teardown);

Test(roles, replica_refuses_local_changes_but_journals_node_state, .init = setup_replica)
{
	struct event c = local_create("f");
	struct event outage = {.type = EV_OUTAGE};

	cr_assert_eq(node_is_primary(n), 0);
	cr_assert_eq(commit(&c), -EROFS);
	cr_assert_eq(next_seq(), 1, "a refused change takes no seq");
	cr_assert(!is_journaled(self, 1));
	cr_assert(!in_store("f"));
	cr_assert_eq(commit(&outage), 0);
	cr_assert_eq(outage.seq, 1);
}

Test(roles, promotion_raises_the_term_and_journals_the_applied_vector,
     .init = setup_replica_with_p_history)
{
	struct event c = local_create("mine");
	uint64_t term = 0, seq;
	struct event ev;
	uint32_t i;
	int found = 0;

	seq = next_seq();
	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(term, 2);
	cr_assert_eq(node_term(n), 2);
	cr_assert_eq(node_is_primary(n), 1);
	cr_assert_eq(meta_u64(JOURNAL_META_TERM), 2);
	cr_assert_eq(meta_u64(JOURNAL_META_ROLE), 1);
	cr_assert_eq(journaled(self, seq, &ev), 0, "the promotion is an event of this node");
	cr_assert_eq(ev.type, EV_ROLE);
	cr_assert_eq(ev.op_flags & 1, 1);
	cr_assert_eq(ev.term, 2);
	cr_assert_eq(ev.data_len % 16, 0);
	for (i = 0; i < ev.data_len; i += 16)
		if (get_le64(ev.data + i) == P) {
			cr_expect_eq(get_le64(ev.data + i + 8), 2, "P's applied seq");
			found = 1;
		}
	event_free(&ev);
	cr_assert(found, "P is in the promotion's vector");
	cr_assert_eq(commit(&c), 0);
	cr_assert_eq(c.term, 2, "local events carry the new term");
	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(term, 3, "each promotion raises the term again");
}

Test(roles, demoted_node_refuses_local_changes, .init = setup_primary)
{
	struct event before = local_create("before");
	struct event after = local_create("after");
	struct event ev;
	uint64_t seq;

	cr_assert_eq(commit(&before), 0);
	seq = next_seq();
	cr_assert_eq(node_demote(n, "unit test"), 0);
	cr_assert_eq(node_is_primary(n), 0);
	cr_assert_eq(node_term(n), 1, "a demotion keeps the term");
	cr_assert_eq(meta_u64(JOURNAL_META_ROLE), 0);
	cr_assert_eq(journaled(self, seq, &ev), 0);
	cr_assert_eq(ev.type, EV_ROLE);
	cr_assert_eq(ev.op_flags & 1, 0);
	event_free(&ev);
	cr_assert_eq(commit(&after), -EROFS);
	cr_assert_eq(next_seq(), seq + 1);
	cr_assert(!in_store("after"));
	cr_assert(in_store("before"));
}

Test(roles, promoted_node_refuses_the_old_primarys_later_events,
     .init = setup_replica_with_p_history)
{
	struct journal_view jv;
	struct store_view sv;
	uint64_t term;

	cr_assert_eq(node_promote(n, &term), 0);
	view_journal(&jv);
	view_store(&sv);
	/* P went on at term 1 after the promotion cut it at seq 2. */
	remote_refused(r_write(P, 3, 1, "f", F_FID, (struct evid){P, 2}, 0, "old"), -EPERM,
		       "beyond the promotion");
	/* Nor may P make changes at the new primary's term. */
	remote_refused(r_write(P, 3, 2, "f", F_FID, (struct evid){P, 2}, 0, "old"), -EPERM,
		       "at this primary's term");
	expect_same_journal(&jv);
	expect_same_store(&sv);
	cr_assert(!is_journaled(P, 3));
}

Test(roles, replica_fences_the_old_primary_on_a_peers_promotion,
     .init = setup_replica_with_p_history)
{
	uint8_t vec[16];
	struct journal_view jv;
	struct store_view sv;
	uint64_t tterm = 0;
	char buf[32];

	remote_ok(q_promotion(1, 2, vec, 2));
	cr_assert_eq(node_term(n), 2);
	cr_assert_eq(node_is_primary(n), 0);
	view_journal(&jv);
	view_store(&sv);
	remote_refused(r_write(P, 3, 1, "f", F_FID, (struct evid){P, 2}, 0, "old"), -EPERM,
		       "beyond the promotion");
	/* Only the primary of a term makes changes at it. */
	remote_refused(r_write(P, 3, 2, "f", F_FID, (struct evid){P, 2}, 0, "old"), -EPERM,
		       "not the primary of their term");
	expect_same_journal(&jv);
	expect_same_store(&sv);
	node_lock(n);
	cr_assert_eq(node_in_tail_locked(n, P, 2, &tterm), 0, "nothing was beyond the fence");
	node_unlock(n);
	/* The new primary's changes go on from P's history. */
	remote_ok(r_write(Q, 2, 2, "f", F_FID, (struct evid){P, 2}, 5, " from Q"));
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello from Q");
}

/* A node that kept P's tail aside ships its numbers as voids of the promotion's term. */
Test(roles, void_of_the_promotions_term_passes_the_fence, .init = setup_replica_with_p_history)
{
	uint8_t vec[16];
	struct store_view sv;

	remote_ok(q_promotion(1, 2, vec, 2));
	view_store(&sv);
	remote_ok((struct event){.type = EV_VOID, .origin = P, .seq = 3, .term = 2});
	cr_assert_eq(applied(P), 3);
	expect_same_store(&sv);
	remote_refused(r_create(P, 4, 1, "old"), -EPERM, "beyond the promotion");
}

Test(roles, events_held_beyond_a_peers_promotion_are_kept_aside,
     .init = setup_replica_with_p_history)
{
	uint8_t vec[16];
	uint64_t term = 0;
	int in2, in3, in4;

	/* This node took P's seq 3 and 4; Q was promoted having seen P up to seq 2. */
	remote_ok(r_write(P, 3, 1, "f", F_FID, (struct evid){P, 2}, 5, "!"));
	remote_ok(r_create(P, 4, 1, "late"));
	remote_ok(q_promotion(1, 2, vec, 2));
	node_lock(n);
	in2 = node_in_tail_locked(n, P, 2, &term);
	in3 = node_in_tail_locked(n, P, 3, &term);
	in4 = node_in_tail_locked(n, P, 4, &term);
	node_unlock(n);
	cr_assert_eq(in2, 0, "seq 2 is before the fence");
	cr_assert_eq(in3, 1, "seq 3 is beyond the fence");
	cr_assert_eq(in4, 1, "seq 4 is beyond the fence");
	cr_assert_eq(term, 2);
	cr_assert_eq(meta_u64(JOURNAL_META_REBUILD), 1, "the store must be rebuilt without them");
	remote_refused(r_create(P, 5, 1, "later"), -EPERM, "beyond the promotion");
}

Test(roles, primary_steps_down_on_a_peers_promotion, .init = setup_primary)
{
	struct event c = local_create("f");
	uint8_t vec[16];

	remote_ok(q_promotion(1, 2, vec, 0));
	cr_assert_eq(node_is_primary(n), 0);
	cr_assert_eq(node_term(n), 2);
	cr_assert_eq(meta_u64(JOURNAL_META_ROLE), 0);
	cr_assert_eq(commit(&c), -EROFS);
	cr_assert(!in_store("f"));
}

/*
 * A primary of term 3 that never applied an event of Q (so no applied mark
 * fenced Q) must not take Q's promotion of term 2 as current, nor Q's
 * term-2 changes: events of a lower term than a node has seen are refused
 * (DESIGN section 7).
 */
Test(roles, older_promotion_neither_demotes_a_newer_primary_nor_lets_its_changes_in,
     .init = setup_replica)
{
	uint8_t vec[16];
	struct event promo = q_promotion(1, 2, vec, 0), change = r_create(Q, 2, 2, "from_q");
	const char *why = NULL;
	size_t done = 0;
	uint64_t term;
	int res = -1;

	cr_assert_eq(node_see_term(n, 2, 0), 0);
	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(term, 3);
	remote(&promo, 1, &res, &done, &why);
	cr_expect_eq(node_is_primary(n), 1, "demoted by a promotion of an older term");
	cr_expect_eq(node_term(n), 3);
	why = NULL;
	remote(&change, 1, &res, &done, &why);
	cr_expect(!in_store("from_q"), "a change of term 2 reached the store of term 3's primary");
}

static void setup_replica_with_member_q(void)
{
	const uint64_t ids[] = {Q};

	make_node_peers(0, ids, 1);
}

/*
 * A member this node has applied nothing of is fenced at seq 0 by its
 * promotion, in the EV_ROLE its replicas take, so that they keep aside that
 * member's older-term events instead of waiting for a fence forever.
 */
Test(roles, promotion_fences_members_it_has_nothing_of_at_zero,
     .init = setup_replica_with_member_q)
{
	uint64_t term = 0, seq = next_seq();
	struct event ev, change = r_create(Q, 1, 1, "old_q");
	const char *why = NULL;
	size_t done = 0;
	int res = -1, found = 0;
	uint32_t i;

	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(journaled(self, seq, &ev), 0);
	cr_assert_eq(ev.type, EV_ROLE);
	for (i = 0; i < event_fence_count(&ev); i++)
		if (event_fence(&ev, i).origin == Q) {
			cr_expect_eq(event_fence(&ev, i).seq, 0);
			found = 1;
		}
	event_free(&ev);
	cr_expect(found, "member Q fenced by the promotion");
	remote(&change, 1, &res, &done, &why);
	cr_expect(!in_store("old_q"), "an older-term change of Q reached the new primary's store");
}

Test(roles, primary_steps_down_when_a_peer_has_seen_a_higher_term, .init = setup_primary)
{
	struct event c = local_create("f");

	cr_assert_eq(node_see_term(n, 5, Q), 0);
	cr_assert_eq(node_is_primary(n), 0);
	cr_assert_eq(node_term(n), 5);
	cr_assert_eq(meta_u64(JOURNAL_META_TERM), 5);
	cr_assert_eq(commit(&c), -EROFS);
}

Test(roles, lower_term_seen_changes_nothing, .init = setup_replica)
{
	uint64_t term;

	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(term, 2);
	cr_assert_eq(node_see_term(n, 1, P), 0);
	cr_assert_eq(node_is_primary(n), 1);
	cr_assert_eq(node_term(n), 2);
}

Test(roles, two_primaries_of_one_term_are_refused, .init = setup_replica)
{
	cr_assert_eq(node_see_term(n, 2, Q), 0);
	cr_assert_eq(node_see_term(n, 2, Q), 0, "the same primary again is fine");
	cr_assert_eq(node_see_term(n, 2, P), -EPERM);
	cr_assert_eq(node_see_term(n, 3, P), 0, "a later term may have another primary");
}

Test(roles, primary_refuses_a_second_primary_of_its_term, .init = setup_replica)
{
	uint64_t term;

	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(node_see_term(n, term, Q), -EPERM);
	cr_assert_eq(node_is_primary(n), 1);
}

/* ---- reopen: what a close, or a kill, and a reopen keep ------------------- */

TestSuite(reopen, .fini = teardown);

Test(reopen, term_and_role_survive_reopen, .init = setup_replica)
{
	uint64_t term;

	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(term, 3);
	reopen(1, 0);
	cr_assert_eq(node_term(n), 3);
	cr_assert_eq(node_is_primary(n), 1);
	cr_assert_eq(node_demote(n, "unit test"), 0);
	reopen(0, 0);
	cr_assert_eq(node_term(n), 3);
	cr_assert_eq(node_is_primary(n), 0);
	cr_assert_eq(node_promote(n, &term), 0);
	cr_assert_eq(term, 4, "the next promotion goes on from the term kept");
}

Test(reopen, seen_term_survives_reopen, .init = setup_replica)
{
	cr_assert_eq(node_see_term(n, 7, 0), 0);
	reopen(0, 0);
	cr_assert_eq(node_term(n), 7);
}

Test(reopen, fences_survive_reopen, .init = setup_replica_with_p_history)
{
	uint64_t term;

	cr_assert_eq(node_promote(n, &term), 0);
	reopen(1, NODE_OPEN_REPLAY);
	remote_refused(r_write(P, 3, 1, "f", F_FID, (struct evid){P, 2}, 0, "old"), -EPERM,
		       "beyond the promotion");
	cr_assert(!is_journaled(P, 3));
}

Test(reopen, kept_aside_tail_survives_reopen, .init = setup_replica_with_p_history)
{
	uint8_t vec[16];
	uint64_t term = 0;
	int in;

	remote_ok(r_create(P, 3, 1, "late"));
	remote_ok(q_promotion(1, 2, vec, 2));
	reopen(1, 0);
	node_lock(n);
	in = node_in_tail_locked(n, P, 3, &term);
	node_unlock(n);
	cr_assert_eq(in, 1);
	cr_assert_eq(term, 2);
	cr_assert_eq(node_term(n), 2);
}

Test(reopen, applied_vector_and_checkpoints_survive_an_unclean_close,
     .init = setup_replica_with_p_history)
{
	uint64_t cp = 0;

	remote_ok(r_create(Q, 1, 1, "q"));
	node_lock(n);
	cr_assert_eq(journal_checkpoint_put(node_journal(n), 0x99, P, 2), 0);
	cr_assert_eq(journal_checkpoint_put(node_journal(n), 0x99, Q, 1), 0);
	node_unlock(n);
	reopen(0, 0);
	cr_assert_eq(applied(P), 2);
	cr_assert_eq(applied(Q), 1);
	node_lock(n);
	cr_assert_eq(journal_checkpoint_get(node_journal(n), 0x99, P, &cp), 0);
	cr_assert_eq(cp, 2);
	cr_assert_eq(journal_checkpoint_get(node_journal(n), 0x99, Q, &cp), 0);
	cr_assert_eq(cp, 1);
	node_unlock(n);
	/* And the next event of each origin is the one expected. */
	remote_ok(r_create(P, 3, 1, "p3"));
	remote_ok(r_create(Q, 2, 1, "q2"));
}

Test(reopen, clean_flag_follows_mount_and_close, .init = setup_primary)
{
	cr_assert_eq(meta_u64(JOURNAL_META_CLEAN), 1, "a new node counts as cleanly stopped");
	reopen(1, NODE_OPEN_MOUNT);
	cr_assert_eq(meta_u64(JOURNAL_META_CLEAN), 0, "mounted: not clean until closed so");
	reopen(0, 0);
	cr_assert_eq(meta_u64(JOURNAL_META_CLEAN), 0, "an unclean close leaves it unclean");
	reopen(1, 0);
	cr_assert_eq(meta_u64(JOURNAL_META_CLEAN), 1);
}

/*
 * A node killed (SIGKILL) right after committing: its last applied mark
 * was still in memory.  The reopen finds the applied seq behind the
 * journal, and its replay recognises the event in the store as applied.
 */
Test(reopen, kill_after_commit_is_caught_up_by_replay, .init = setup_primary)
{
	char err[512], buf[32];
	struct journal_view jv;
	int status;
	pid_t pid;

	node_close(n, 1);
	n = NULL;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct event c = local_create("f");
		struct event w = local_write("f", (struct fid){0}, 0, "hello");

		if (node_open(dir, NODE_OPEN_MOUNT, &n, err, sizeof(err)) < 0 || commit(&c) < 0)
			_exit(1);
		w.fid = c.fid;
		if (commit(&w) < 0)
			_exit(1);
		raise(SIGKILL);
		_exit(2);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %#x", status);
	open_node(0);
	cr_assert_eq(meta_u64(JOURNAL_META_CLEAN), 0, "the kill left the node unclean");
	view_journal(&jv);
	cr_assert_eq(jv.records, 2, "both events were journaled");
	cr_assert_eq(jv.next_seq, 3);
	cr_assert_eq(jv.applied_self, 1, "the last applied mark rides on a later write");
	reopen(0, NODE_OPEN_REPLAY | NODE_OPEN_MOUNT);
	cr_assert_eq(applied(self), 2);
	cr_assert_eq(next_seq(), 3);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "hello");
}

/* ---- the redo of data events above the store checkpoint (checkpoint.c) ---- */

TestSuite(redo, .init = setup_primary, .fini = teardown);

/* What a power loss can leave: the file's stamps and times, but bytes of before. */
static void lose_bytes(const char *rel, const char *old, struct stat *st)
{
	char p[PATH_MAX];
	struct timespec ts[2];
	int fd;

	tree_at(p, storedir, rel);
	cr_assert_eq(stat(p, st), 0);
	fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
	cr_assert_eq(write(fd, old, strlen(old)), (ssize_t)strlen(old));
	ts[0] = st->st_atim;
	ts[1] = st->st_mtim;
	cr_assert_eq(futimens(fd, ts), 0);
	close(fd);
}

static void expect_times(const char *rel, const struct stat *before)
{
	char p[PATH_MAX];
	struct stat st;

	tree_at(p, storedir, rel);
	cr_assert_eq(stat(p, &st), 0);
	cr_expect_eq(st.st_mtim.tv_sec, before->st_mtim.tv_sec);
	cr_expect_eq(st.st_mtim.tv_nsec, before->st_mtim.tv_nsec);
}

Test(redo, data_above_the_checkpoint_is_written_again_and_below_it_is_not)
{
	struct event c = local_create("f"), w1, w2;
	struct stat before;
	char buf[32];

	cr_assert_eq(commit(&c), 0);
	w1 = local_write("f", c.fid, 0, "hello");
	cr_assert_eq(commit(&w1), 0);
	cr_assert_eq(node_checkpoint(n, NODE_CKPT_SYNC), 0);
	w2 = local_write("f", c.fid, 5, " world");
	cr_assert_eq(commit(&w2), 0);
	/* Upper case: what the checkpoint covers is not written again. */
	lose_bytes("f", "HELLO", &before);
	reopen(0, NODE_OPEN_REPLAY);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "HELLO world");
	expect_times("f", &before);
}

Test(redo, a_file_renamed_since_is_found_by_its_fid)
{
	struct event c = local_create("f"), w, t, mv;
	struct event d = {.type = EV_MKDIR, .mode = S_IFDIR | 0755, .path = "d"};
	struct stat before;
	char buf[32];

	cr_assert_eq(commit(&c), 0);
	cr_assert_eq(commit(&d), 0);
	cr_assert_eq(node_checkpoint(n, NODE_CKPT_SYNC), 0);
	w = local_write("f", c.fid, 0, "0123456789");
	cr_assert_eq(commit(&w), 0);
	t = (struct event){.type = EV_TRUNCATE, .fid = c.fid, .path = "f", .length = 4};
	cr_assert_eq(commit(&t), 0);
	mv = (struct event){.type = EV_RENAME, .fid = c.fid, .path = "f", .path2 = "d/g"};
	cr_assert_eq(commit(&mv), 0);
	lose_bytes("d/g", "", &before);
	reopen(0, NODE_OPEN_REPLAY);
	read_store("d/g", buf, sizeof(buf));
	cr_assert_str_eq(buf, "0123", "the write and the truncate, in order");
	expect_times("d/g", &before);
}

Test(redo, a_node_that_never_checkpointed_writes_nothing_again)
{
	struct event c = local_create("f"), w;
	struct stat before;
	char buf[32];

	cr_assert_eq(commit(&c), 0);
	w = local_write("f", c.fid, 0, "hello");
	cr_assert_eq(commit(&w), 0);
	lose_bytes("f", "HELLO", &before);
	reopen(0, NODE_OPEN_REPLAY);
	read_store("f", buf, sizeof(buf));
	cr_assert_str_eq(buf, "HELLO", "no position recorded: its store counts as durable");
}
