/*
 * test_store.c - the apply engine (store/store.c), one precondition at a time.
 *
 * Every test gets its own stamped store under a fresh mkdtemp directory
 * (<tmp>/store) next to a directory the store must never reach
 * (<tmp>/outside), and builds its events by hand with borrowed strings.
 * Most events are applied with replay semantics (ctx.fresh = 0), so the
 * checks that recognise an event already applied, or a store that
 * contradicts the event, are exercised; a few use fresh = 1.
 *
 * Covered: creation events (create, mknod, mkdir, symlink), unlink/rmdir,
 * link, rename (plain, replace, noreplace, exchange), the data and
 * attribute events (write, truncate, fallocate, chmod, chown, utimens,
 * setxattr, removexattr), path validation, events that change nothing,
 * symlinks planted in the store, data events aimed at fifos and device
 * nodes, the replay of a whole tail of applied events (node_replay() replays
 * everything since the last sync, not just the last event), and the stamp
 * and id helpers.
 *
 * "Nothing changed" is checked with a snapshot of the whole temporary
 * tree (store and outside): per entry its type, mode, owner, inode, link
 * count, size, mtime, ctime, a hash of its contents, its symlink target and
 * all its xattrs, ledgerfs's own included.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "journal/event.h"
#include "store/path.h"
#include "store/store.h"

/* The origin of the events the tests build; fids of new objects are (ORIGIN, seq). */
#define ORIGIN 7

static const uint8_t cluster[16] = "cluster-apply-01";
static char tmp[64];
static struct store *store;
static uint64_t last_seq;
static const char *why;

static void setup(void)
{
	char p[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "/tmp/lfs-apply-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(p, sizeof(p), "%s/store", tmp);
	cr_assert_eq(mkdir(p, 0755), 0);
	cr_assert_eq(store_open(p, &store), 0);
	cr_assert_eq(store_stamp(store, cluster), 0);
	snprintf(p, sizeof(p), "%s/outside", tmp);
	cr_assert_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/outside/secret", tmp);
	cr_assert_eq(close(open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)), 0);
	last_seq = 0;
}

/* Buffers still held when an assertion ends a test early; teardown frees them. */
static char *held[8];

static void teardown(void)
{
	char cmd[128];

	for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
		free(held[i]);
	store_close(store);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(apply, .init = setup, .fini = teardown);

/* ---- helpers: paths, events, applying ---- */

static char *hold(char *p)
{
	for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
		if (!held[i]) {
			held[i] = p;
			return p;
		}
	}
	cr_assert_fail("too many buffers held");
	return NULL;
}

static void release(char *p)
{
	for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
		if (held[i] == p)
			held[i] = NULL;
	free(p);
}

/* Absolute path of rel under <tmp>/store; a few rotating buffers. */
static const char *sp(const char *rel)
{
	static char bufs[4][PATH_MAX];
	static int next;
	char *b = bufs[next++ % 4];

	snprintf(b, PATH_MAX, "%s/store/%s", tmp, rel);
	return b;
}

static const char *outside(const char *rel)
{
	static char b[PATH_MAX];

	snprintf(b, sizeof(b), "%s/outside/%s", tmp, rel);
	return b;
}

static struct fid fid_of(uint64_t seq)
{
	return (struct fid){ORIGIN, seq};
}

static struct evid evid_of(uint64_t seq)
{
	return (struct evid){ORIGIN, seq};
}

/* A blank event of type with the next seq; path is borrowed. */
static struct event ev_make(uint8_t type, const char *path)
{
	struct event ev = {
	    .type = type,
	    .origin = ORIGIN,
	    .seq = ++last_seq,
	    .hlc = last_seq << 16,
	    .term = 1,
	    .path = (char *)path,
	};

	return ev;
}

static int apply_with(const struct event *ev, struct apply_ctx *ctx)
{
	int r;

	why = NULL;
	r = apply_event(store, ev, ctx, &why);
	if (r < 0)
		cr_assert_not_null(why, "%s failed with %d without a reason",
				   event_type_name(ev->type), r);
	return r;
}

/* Apply with replay semantics (fresh = 0), no descriptor. */
static int apply(const struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;

	return apply_with(ev, &ctx);
}

static int apply_fresh(const struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;

	ctx.fresh = 1;
	return apply_with(ev, &ctx);
}

static void expect_apply(const struct event *ev, int want)
{
	int r = apply(ev);

	cr_assert_eq(r, want, "%s seq %llu on \"%s\": got %d (%s), want %d",
		     event_type_name(ev->type), (unsigned long long)ev->seq,
		     ev->path ? ev->path : "(null)", r, why ? why : "-", want);
}

/*
 * Give an event built before its test's fixtures a seq after theirs: the
 * engine relies on an origin's events reaching the store in seq order
 * (directory versions from later events prove earlier ones applied).
 */
static void renumber(struct event *ev)
{
	ev->seq = ++last_seq;
	ev->hlc = last_seq << 16;
}

static struct fid make_file(const char *rel)
{
	struct event ev = ev_make(EV_CREATE, rel);

	ev.mode = S_IFREG | 0644;
	ev.mtime_sec = 1000000000;
	expect_apply(&ev, 0);
	return fid_of(ev.seq);
}

static struct fid make_dir(const char *rel)
{
	struct event ev = ev_make(EV_MKDIR, rel);

	ev.mode = S_IFDIR | 0755;
	expect_apply(&ev, 0);
	return fid_of(ev.seq);
}

static struct fid make_symlink(const char *rel, const char *target)
{
	struct event ev = ev_make(EV_SYMLINK, rel);

	ev.data = (uint8_t *)target;
	ev.data_len = (uint32_t)strlen(target);
	expect_apply(&ev, 0);
	return fid_of(ev.seq);
}

/* Put contents into a store file behind the engine's back (no version change). */
static void put_contents(const char *rel, const char *data)
{
	int fd = open(sp(rel), O_WRONLY | O_TRUNC | O_CLOEXEC);

	cr_assert_geq(fd, 0, "open %s: %s", rel, strerror(errno));
	cr_assert_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

/* Whole contents of a store file, NUL-terminated; the caller frees. */
static char *contents(const char *rel, size_t *len)
{
	char *buf = hold(calloc(1, 1 << 16));
	int fd = open(sp(rel), O_RDONLY | O_CLOEXEC);
	ssize_t n;

	cr_assert_not_null(buf);
	cr_assert_geq(fd, 0, "open %s: %s", rel, strerror(errno));
	n = read(fd, buf, (1 << 16) - 1);
	cr_assert_geq(n, 0);
	close(fd);
	if (len)
		*len = (size_t)n;
	return buf;
}

static void expect_contents(const char *rel, const char *want, size_t want_len)
{
	size_t len;
	char *have = contents(rel, &len);

	cr_assert_eq(len, want_len, "%s: size %zu, want %zu", rel, len, want_len);
	cr_assert_eq(memcmp(have, want, want_len), 0, "%s: contents differ", rel);
	release(have);
}

static struct stat lstat_of(const char *rel)
{
	struct stat st;

	cr_assert_eq(lstat(sp(rel), &st), 0, "lstat %s: %s", rel, strerror(errno));
	return st;
}

static int exists(const char *rel)
{
	struct stat st;

	return lstat(sp(rel), &st) == 0;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* Read a 16-byte (a, b) xattr of a store object straight from the filesystem. */
static int raw_pair(const char *rel, const char *name, uint64_t *a, uint64_t *b)
{
	uint8_t buf[32];
	ssize_t n = lgetxattr(sp(rel), name, buf, sizeof(buf));

	if (n < 0)
		return -errno;
	cr_assert_eq(n, 16, "%s on %s is %zd bytes", name, rel, n);
	*a = le64(buf);
	*b = le64(buf + 8);
	return 0;
}

static void expect_fid(const char *rel, struct fid want)
{
	uint64_t a, b;

	cr_assert_eq(raw_pair(rel, STORE_XATTR_FID, &a, &b), 0, "%s has no fid", rel);
	cr_assert(a == want.origin && b == want.counter, "%s: fid (%llu, %llu), want (%llu, %llu)",
		  rel, (unsigned long long)a, (unsigned long long)b,
		  (unsigned long long)want.origin, (unsigned long long)want.counter);
}

/* rel carries no xattr name: a creation left to the cache's flush. */
static void expect_no_pair(const char *rel, const char *name)
{
	cr_assert_eq(getxattr(sp(rel), name, NULL, 0), -1, "%s has %s already", rel, name);
	cr_assert_eq(errno, ENODATA, "%s: getxattr %s: %s", rel, name, strerror(errno));
}

static void expect_ver(const char *rel, uint64_t seq)
{
	uint64_t a, b;

	cr_assert_eq(raw_pair(rel, STORE_XATTR_VER, &a, &b), 0, "%s has no version", rel);
	cr_assert(a == ORIGIN && b == seq, "%s: ver (%llu, %llu), want (%d, %llu)", rel,
		  (unsigned long long)a, (unsigned long long)b, ORIGIN, (unsigned long long)seq);
}

/* ---- helpers: snapshots of the whole temporary tree ---- */

static FILE *snap_out;
static size_t snap_skip;

static uint64_t hash_file(const char *path)
{
	uint64_t h = 1469598103934665603ull;
	uint8_t buf[4096];
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;

	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ buf[i]) * 1099511628211ull;
	close(fd);
	return h;
}

static void snap_xattrs(const char *path)
{
	char names[4096], value[4096];
	ssize_t n = llistxattr(path, names, sizeof(names));

	cr_assert_geq(n, 0, "llistxattr %s: %s", path, strerror(errno));
	for (char *name = names; name < names + n; name += strlen(name) + 1) {
		ssize_t v = lgetxattr(path, name, value, sizeof(value));

		cr_assert_geq(v, 0);
		fprintf(snap_out, " %s=", name);
		for (ssize_t i = 0; i < v; i++)
			fprintf(snap_out, "%02x", (uint8_t)value[i]);
	}
}

static int snap_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	fprintf(snap_out, "%s %o %u:%u ino=%llu", path + snap_skip, (unsigned)st->st_mode,
		(unsigned)st->st_uid, (unsigned)st->st_gid, (unsigned long long)st->st_ino);
	/* Directory times move when a failed create is rolled back; leave them out. */
	if (!S_ISDIR(st->st_mode))
		fprintf(snap_out, " nlink=%llu size=%lld blocks=%lld m=%lld.%09ld c=%lld.%09ld",
			(unsigned long long)st->st_nlink, (long long)st->st_size,
			(long long)st->st_blocks, (long long)st->st_mtim.tv_sec,
			st->st_mtim.tv_nsec, (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
	if (S_ISREG(st->st_mode))
		fprintf(snap_out, " data=%016llx", (unsigned long long)hash_file(path));
	if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(path, target, sizeof(target) - 1);

		cr_assert_geq(n, 0);
		fprintf(snap_out, " -> %.*s", (int)n, target);
	}
	snap_xattrs(path);
	fputc('\n', snap_out);
	return 0;
}

/* One line per entry below dir; the caller frees. */
static char *snapshot_of(const char *dir)
{
	char *text = NULL;
	size_t len = 0;

	snap_out = open_memstream(&text, &len);
	cr_assert_not_null(snap_out);
	snap_skip = strlen(tmp);
	cr_assert_eq(nftw(dir, snap_entry, 16, FTW_PHYS), 0);
	fclose(snap_out);
	return hold(text);
}

static char *snapshot(void)
{
	return snapshot_of(tmp);
}

/* Compare with a snapshot of the same directory taken before; frees before. */
static void expect_same(const char *dir, char *before, const char *what)
{
	char *after = snapshot_of(dir);

	cr_assert_str_eq(after, before, "%s changed the tree:\nbefore:\n%s\nafter:\n%s", what,
			 before, after);
	release(after);
	release(before);
}

static void expect_unchanged(char *before, const char *what)
{
	expect_same(tmp, before, what);
}

/* Apply ev, expect want, and expect the whole tree untouched. */
static void expect_refused(const struct event *ev, int want)
{
	char *before = snapshot();

	expect_apply(ev, want);
	expect_unchanged(before, event_type_name(ev->type));
}

/* Apply ev once (expect 0), then again: APPLY_SKIPPED and the tree untouched. */
static void expect_replay_skipped(const struct event *ev)
{
	expect_apply(ev, 0);
	expect_refused(ev, APPLY_SKIPPED);
}

/* ---- store_check_stamp, store_get_ids ---- */

Test(apply, stamp_marks_root_with_root_fid)
{
	expect_fid(".", STORE_ROOT_FID);
	cr_assert_eq(store_check_stamp(store, cluster), 0);
}

Test(apply, stamp_of_another_cluster_is_estale)
{
	uint8_t other[16];

	memcpy(other, cluster, sizeof(other));
	other[15] ^= 1;
	cr_assert_eq(store_check_stamp(store, other), -ESTALE);
}

Test(apply, unstamped_directory_is_enodata)
{
	struct store *plain;

	cr_assert_eq(store_open(outside(""), &plain), 0);
	cr_assert_eq(store_check_stamp(plain, cluster), -ENODATA);
	store_close(plain);
}

Test(apply, get_ids_without_fid_is_enodata)
{
	struct fid fid;
	struct evid ver;
	int fd = open(outside("secret"), O_PATH | O_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(store_get_ids(fd, &fid, &ver), -ENODATA);
	cr_assert_eq(store_get_ids(fd, &fid, NULL), -ENODATA);
	close(fd);
}

Test(apply, get_ids_reads_missing_version_as_zero)
{
	struct fid fid = {3, 4}, have;
	struct evid ver = {9, 9};
	int fd = open(outside("secret"), O_RDONLY | O_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(store_set_fid(fd, &fid), 0);
	cr_assert_eq(store_get_ids(fd, &have, &ver), 0);
	cr_assert(fid_eq(have, fid));
	cr_assert(ver.origin == 0 && ver.seq == 0);
	close(fd);
}

/* ---- creation events ---- */

Test(apply, create_sets_owner_exact_mode_ids_and_mtime)
{
	struct event ev = ev_make(EV_CREATE, "f");
	struct stat st;

	ev.mode = S_IFREG | 02755;
	ev.uid = 1234;
	ev.gid = 5678;
	ev.mtime_sec = 1500000000;
	ev.mtime_nsec = 123456789;
	expect_apply(&ev, 0);
	st = lstat_of("f");
	cr_assert(S_ISREG(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 02755, "mode %o", st.st_mode & 07777);
	cr_assert_eq(st.st_uid, 1234);
	cr_assert_eq(st.st_gid, 5678);
	cr_assert_eq(st.st_size, 0);
	cr_assert_eq(st.st_mtim.tv_sec, 1500000000);
	cr_assert_eq(st.st_mtim.tv_nsec, 123456789);
	expect_fid("f", fid_of(ev.seq));
	expect_ver("f", ev.seq);
}

Test(apply, create_uses_the_fid_the_event_carries)
{
	struct event ev = ev_make(EV_CREATE, "f");

	ev.mode = S_IFREG | 0600;
	ev.fid = (struct fid){42, 4242};
	expect_apply(&ev, 0);
	expect_fid("f", ev.fid);
	expect_ver("f", ev.seq);
}

Test(apply, create_in_subdirectory)
{
	make_dir("d");
	make_dir("d/e");
	make_file("d/e/f");
	cr_assert(S_ISREG(lstat_of("d/e/f").st_mode));
}

Test(apply, create_replay_is_skipped)
{
	struct event ev = ev_make(EV_CREATE, "f");

	ev.mode = S_IFREG | 0640;
	ev.mtime_sec = 1234;
	expect_apply(&ev, 0);
	put_contents("f", "written later");
	expect_refused(&ev, APPLY_SKIPPED);
}

Test(apply, create_on_name_taken_by_another_object_is_eexist)
{
	struct event ev = ev_make(EV_CREATE, "f");

	make_file("f");
	ev.mode = S_IFREG | 0644;
	renumber(&ev);
	expect_refused(&ev, -EEXIST);
}

Test(apply, create_on_name_without_fid_is_eexist)
{
	struct event ev = ev_make(EV_CREATE, "plain");

	cr_assert_eq(mkdir(sp("plain"), 0700), 0);
	ev.mode = S_IFREG | 0644;
	expect_refused(&ev, -EEXIST);
}

/* A crash between making an object and setting its fid (set last) leaves it without one. */
Test(apply, create_replay_adopts_half_made_file)
{
	struct event ev = ev_make(EV_CREATE, "f");
	struct stat st;

	cr_assert_eq(close(open(sp("f"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600)), 0);
	ev.mode = S_IFREG | 02750;
	ev.uid = 33;
	ev.gid = 44;
	ev.mtime_sec = 1400000000;
	expect_apply(&ev, 0);
	st = lstat_of("f");
	cr_assert_eq(st.st_mode & 07777, 02750, "mode %o", st.st_mode & 07777);
	cr_assert_eq(st.st_uid, 33);
	cr_assert_eq(st.st_mtim.tv_sec, 1400000000);
	expect_fid("f", fid_of(ev.seq));
	expect_ver("f", ev.seq);
}

Test(apply, mkdir_replay_adopts_half_made_directory)
{
	struct event ev = ev_make(EV_MKDIR, "d");

	cr_assert_eq(mkdir(sp("d"), 0700), 0);
	ev.mode = S_IFDIR | 01777;
	expect_apply(&ev, 0);
	cr_assert_eq(lstat_of("d").st_mode & 07777, 01777);
	expect_fid("d", fid_of(ev.seq));
}

Test(apply, symlink_replay_adopts_only_a_link_with_the_same_target)
{
	struct event same = ev_make(EV_SYMLINK, "same");
	struct event other = ev_make(EV_SYMLINK, "other");

	cr_assert_eq(symlink("target", sp("same")), 0);
	cr_assert_eq(symlink("elsewhere", sp("other")), 0);
	same.data = other.data = (uint8_t *)"target";
	same.data_len = other.data_len = 6;
	expect_apply(&same, 0);
	expect_fid("same", fid_of(same.seq));
	expect_refused(&other, -EEXIST);
}

Test(apply, mknod_replay_does_not_adopt_another_kind)
{
	struct event ev = ev_make(EV_MKNOD, "f");

	cr_assert_eq(close(open(sp("f"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600)), 0);
	ev.mode = S_IFIFO | 0600;
	expect_refused(&ev, -EEXIST);
}

Test(apply, create_with_missing_parent_is_enoent)
{
	struct event ev = ev_make(EV_CREATE, "nodir/f");

	ev.mode = S_IFREG | 0644;
	expect_refused(&ev, -ENOENT);
}

Test(apply, create_under_symlinked_parent_is_refused)
{
	static const uint8_t types[] = {EV_CREATE, EV_MKNOD, EV_MKDIR, EV_SYMLINK};

	cr_assert_eq(symlink(outside(""), sp("out")), 0);
	for (size_t i = 0; i < sizeof(types); i++) {
		struct event ev = ev_make(types[i], "out/evil");
		char *before = snapshot();
		int r;

		ev.mode = (types[i] == EV_MKDIR ? S_IFDIR : S_IFREG) | 0644;
		ev.data = (uint8_t *)"x";
		ev.data_len = 1;
		r = apply(&ev);
		cr_assert_lt(r, 0, "%s through a symlink returned %d", event_type_name(types[i]),
			     r);
		cr_assert_eq(access(outside("evil"), F_OK), -1);
		expect_unchanged(before, event_type_name(types[i]));
	}
}

Test(apply, create_of_the_root_is_refused)
{
	static const uint8_t types[] = {EV_CREATE, EV_MKNOD, EV_MKDIR, EV_SYMLINK};

	for (size_t i = 0; i < sizeof(types); i++) {
		struct event ev = ev_make(types[i], PATH_ROOT);
		char *before = snapshot();

		ev.mode = (types[i] == EV_MKDIR ? S_IFDIR : S_IFREG) | 0755;
		ev.data = (uint8_t *)"x";
		ev.data_len = 1;
		cr_assert_lt(apply(&ev), 0, "%s of the root applied", event_type_name(types[i]));
		expect_unchanged(before, event_type_name(types[i]));
	}
}

Test(apply, create_want_fd_hands_back_read_write_fd)
{
	struct event ev = ev_make(EV_CREATE, "f");
	struct apply_ctx ctx = APPLY_CTX_INIT;
	char buf[8] = {0};

	ev.mode = S_IFREG | 0444;
	ctx.want_fd = 1;
	cr_assert_eq(apply_with(&ev, &ctx), 0);
	cr_assert_geq(ctx.out_fd, 0);
	cr_assert_eq(fcntl(ctx.out_fd, F_GETFL) & O_ACCMODE, O_RDWR);
	cr_assert_eq(pwrite(ctx.out_fd, "hello", 5, 0), 5);
	cr_assert_eq(pread(ctx.out_fd, buf, sizeof(buf), 0), 5);
	cr_assert_str_eq(buf, "hello");
	close(ctx.out_fd);
	expect_contents("f", "hello", 5);
}

Test(apply, create_without_want_fd_leaves_out_fd_unset)
{
	struct event ev = ev_make(EV_CREATE, "f");
	struct apply_ctx ctx = APPLY_CTX_INIT;

	ev.mode = S_IFREG | 0644;
	ctx.out_fd = 12345;
	cr_assert_eq(apply_with(&ev, &ctx), 0);
	cr_assert_eq(ctx.out_fd, -1);
}

Test(apply, fresh_create_on_existing_name_fails_without_skip_check)
{
	struct event ev = ev_make(EV_CREATE, "f");
	char *before;

	ev.mode = S_IFREG | 0644;
	expect_apply(&ev, 0);
	before = snapshot();
	cr_assert_eq(apply_fresh(&ev), -EEXIST);
	expect_unchanged(before, "fresh create");
}

Test(apply, mknod_fifo_sets_owner_mode_and_ids)
{
	struct event ev = ev_make(EV_MKNOD, "fifo");
	struct stat st;

	ev.mode = S_IFIFO | 01640;
	ev.uid = 10;
	ev.gid = 20;
	expect_apply(&ev, 0);
	st = lstat_of("fifo");
	cr_assert(S_ISFIFO(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 01640, "mode %o", st.st_mode & 07777);
	cr_assert_eq(st.st_uid, 10);
	cr_assert_eq(st.st_gid, 20);
	expect_fid("fifo", fid_of(ev.seq));
	expect_ver("fifo", ev.seq);
}

Test(apply, mknod_regular_sets_setuid_mode_and_mtime)
{
	struct event ev = ev_make(EV_MKNOD, "reg");
	struct stat st;

	ev.mode = S_IFREG | 04755;
	ev.uid = 1000;
	ev.gid = 1000;
	ev.mtime_sec = 1600000000;
	ev.mtime_nsec = 5;
	expect_apply(&ev, 0);
	st = lstat_of("reg");
	cr_assert(S_ISREG(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 04755, "mode %o", st.st_mode & 07777);
	cr_assert_eq(st.st_uid, 1000);
	cr_assert_eq(st.st_mtim.tv_sec, 1600000000);
	cr_assert_eq(st.st_mtim.tv_nsec, 5);
	expect_fid("reg", fid_of(ev.seq));
	expect_ver("reg", ev.seq);
}

Test(apply, mknod_replay_is_skipped)
{
	struct event ev = ev_make(EV_MKNOD, "fifo");

	ev.mode = S_IFIFO | 0600;
	expect_replay_skipped(&ev);
}

Test(apply, mknod_on_name_taken_is_eexist)
{
	struct event ev = ev_make(EV_MKNOD, "f");

	make_file("f");
	ev.mode = S_IFIFO | 0600;
	renumber(&ev);
	expect_refused(&ev, -EEXIST);
}

Test(apply, mkdir_sets_sticky_and_setgid_bits_and_owner)
{
	struct event ev = ev_make(EV_MKDIR, "d");
	struct stat st;

	ev.mode = S_IFDIR | 03775;
	ev.uid = 500;
	ev.gid = 600;
	expect_apply(&ev, 0);
	st = lstat_of("d");
	cr_assert(S_ISDIR(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 03775, "mode %o", st.st_mode & 07777);
	cr_assert_eq(st.st_uid, 500);
	cr_assert_eq(st.st_gid, 600);
	expect_fid("d", fid_of(ev.seq));
	expect_ver("d", ev.seq);
}

Test(apply, mkdir_replay_is_skipped)
{
	struct event ev = ev_make(EV_MKDIR, "d");

	ev.mode = S_IFDIR | 0700;
	expect_apply(&ev, 0);
	make_file("d/inside");
	expect_refused(&ev, APPLY_SKIPPED);
}

Test(apply, mkdir_on_name_taken_is_eexist)
{
	struct event ev = ev_make(EV_MKDIR, "d");

	make_dir("d");
	ev.mode = S_IFDIR | 0700;
	renumber(&ev);
	expect_refused(&ev, -EEXIST);
}

Test(apply, mkdir_with_missing_parent_is_enoent)
{
	struct event ev = ev_make(EV_MKDIR, "a/b");

	ev.mode = S_IFDIR | 0700;
	expect_refused(&ev, -ENOENT);
}

Test(apply, symlink_stores_target_owner_and_ids)
{
	struct event ev = ev_make(EV_SYMLINK, "l");
	char target[64] = {0};
	struct stat st;

	ev.data = (uint8_t *)"../somewhere/else";
	ev.data_len = (uint32_t)strlen("../somewhere/else");
	ev.uid = 77;
	ev.gid = 88;
	expect_apply(&ev, 0);
	st = lstat_of("l");
	cr_assert(S_ISLNK(st.st_mode));
	cr_assert_eq(st.st_uid, 77);
	cr_assert_eq(st.st_gid, 88);
	cr_assert_eq(readlink(sp("l"), target, sizeof(target) - 1), 17);
	cr_assert_str_eq(target, "../somewhere/else");
	expect_fid("l", fid_of(ev.seq));
	expect_ver("l", ev.seq);
}

Test(apply, symlink_replay_is_skipped)
{
	struct event ev = ev_make(EV_SYMLINK, "l");

	ev.data = (uint8_t *)"target";
	ev.data_len = 6;
	expect_replay_skipped(&ev);
}

Test(apply, symlink_on_name_taken_is_eexist)
{
	struct event ev = ev_make(EV_SYMLINK, "l");

	make_symlink("l", "one");
	ev.data = (uint8_t *)"two";
	ev.data_len = 3;
	renumber(&ev);
	expect_refused(&ev, -EEXIST);
}

Test(apply, symlink_with_empty_or_nul_target_is_einval)
{
	struct event ev = ev_make(EV_SYMLINK, "l");

	ev.data = (uint8_t *)"";
	ev.data_len = 0;
	expect_refused(&ev, -EINVAL);
	ev.data = (uint8_t *)"a\0b";
	ev.data_len = 3;
	expect_refused(&ev, -EINVAL);
}

/* ---- unlink, rmdir ---- */

Test(apply, unlink_removes_the_name)
{
	struct event ev = ev_make(EV_UNLINK, "f");

	ev.fid = make_file("f");
	renumber(&ev);
	expect_apply(&ev, 0);
	cr_assert(!exists("f"));
}

Test(apply, unlink_replay_when_name_gone_is_skipped)
{
	struct event ev = ev_make(EV_UNLINK, "f");

	ev.fid = make_file("f");
	renumber(&ev);
	expect_replay_skipped(&ev);
}

/* Replays one event of a tail "remove d/f, rmdir d" that already reached the store. */
Test(apply, unlink_replay_after_parent_removed_is_skipped)
{
	struct fid d = make_dir("d");
	struct fid f = make_file("d/f");
	struct event un = ev_make(EV_UNLINK, "d/f");
	struct event rm = ev_make(EV_RMDIR, "d");

	un.fid = f;
	rm.fid = d;
	expect_apply(&un, 0);
	expect_apply(&rm, 0);
	expect_refused(&un, APPLY_SKIPPED);
}

Test(apply, unlink_of_name_holding_another_fid_is_estale)
{
	struct event ev = ev_make(EV_UNLINK, "f");

	make_file("f");
	ev.fid = fid_of(999);
	renumber(&ev);
	expect_refused(&ev, -ESTALE);
	cr_assert(exists("f"));
}

Test(apply, unlink_of_name_without_fid_is_estale)
{
	struct event ev = ev_make(EV_UNLINK, "plain");

	cr_assert_eq(close(open(sp("plain"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644)), 0);
	ev.fid = fid_of(999);
	expect_refused(&ev, -ESTALE);
}

Test(apply, fresh_unlink_skips_the_fid_check)
{
	struct event ev = ev_make(EV_UNLINK, "f");

	make_file("f");
	ev.fid = fid_of(999);
	cr_assert_eq(apply_fresh(&ev), 0);
	cr_assert(!exists("f"));
}

Test(apply, unlink_and_rmdir_of_the_root_are_refused)
{
	struct event un = ev_make(EV_UNLINK, PATH_ROOT);
	struct event rm = ev_make(EV_RMDIR, PATH_ROOT);
	char *before = snapshot();

	un.fid = rm.fid = STORE_ROOT_FID;
	cr_assert_lt(apply(&un), 0);
	cr_assert_lt(apply(&rm), 0);
	cr_assert_lt(apply_fresh(&rm), 0);
	expect_unchanged(before, "removing the root");
}

Test(apply, rmdir_removes_empty_directory)
{
	struct event ev = ev_make(EV_RMDIR, "d");

	ev.fid = make_dir("d");
	renumber(&ev);
	expect_apply(&ev, 0);
	cr_assert(!exists("d"));
}

Test(apply, rmdir_replay_when_name_gone_is_skipped)
{
	struct event ev = ev_make(EV_RMDIR, "d");

	ev.fid = make_dir("d");
	renumber(&ev);
	expect_replay_skipped(&ev);
}

Test(apply, rmdir_of_non_empty_directory_is_enotempty)
{
	struct event ev = ev_make(EV_RMDIR, "d");

	ev.fid = make_dir("d");
	make_file("d/f");
	renumber(&ev);
	expect_refused(&ev, -ENOTEMPTY);
}

Test(apply, rmdir_of_name_holding_another_fid_is_estale)
{
	struct event ev = ev_make(EV_RMDIR, "d");

	make_dir("d");
	ev.fid = fid_of(999);
	renumber(&ev);
	expect_refused(&ev, -ESTALE);
}

Test(apply, rmdir_of_a_file_is_enotdir)
{
	struct event ev = ev_make(EV_RMDIR, "f");

	ev.fid = make_file("f");
	renumber(&ev);
	expect_refused(&ev, -ENOTDIR);
}

Test(apply, unlink_through_symlinked_parent_is_refused)
{
	struct event ev = ev_make(EV_UNLINK, "out/secret");

	cr_assert_eq(symlink(outside(""), sp("out")), 0);
	cr_assert_lt(apply_fresh(&ev), 0);
	cr_assert_eq(access(outside("secret"), F_OK), 0);
}

/* ---- link ---- */

static struct event link_event(const char *from, const char *to, struct fid fid)
{
	struct event ev = ev_make(EV_LINK, from);

	ev.path2 = (char *)to;
	ev.fid = fid;
	return ev;
}

Test(apply, link_adds_a_name_for_the_same_inode)
{
	struct fid fid = make_file("f");
	struct event ev = link_event("f", "g", fid);
	struct stat a, b;

	expect_apply(&ev, 0);
	a = lstat_of("f");
	b = lstat_of("g");
	cr_assert_eq(a.st_ino, b.st_ino);
	cr_assert_eq(a.st_nlink, 2);
	expect_fid("g", fid);
}

Test(apply, link_replay_is_skipped)
{
	struct fid fid = make_file("f");
	struct event ev = link_event("f", "g", fid);

	expect_replay_skipped(&ev);
}

Test(apply, link_replay_after_source_unlinked_is_skipped)
{
	struct fid fid = make_file("f");
	struct event ln = link_event("f", "g", fid);
	struct event un = ev_make(EV_UNLINK, "f");

	un.fid = fid;
	expect_apply(&ln, 0);
	expect_apply(&un, 0);
	expect_refused(&ln, APPLY_SKIPPED);
}

/* Replays one event of a tail "link d/f -> g, unlink d/f, rmdir d" already applied. */
Test(apply, link_replay_after_source_parent_removed_is_skipped)
{
	struct fid d = make_dir("d");
	struct fid fid = make_file("d/f");
	struct event ln = link_event("d/f", "g", fid);
	struct event un = ev_make(EV_UNLINK, "d/f");
	struct event rm = ev_make(EV_RMDIR, "d");

	un.fid = fid;
	rm.fid = d;
	expect_apply(&ln, 0);
	expect_apply(&un, 0);
	expect_apply(&rm, 0);
	expect_refused(&ln, APPLY_SKIPPED);
}

Test(apply, link_onto_name_taken_is_eexist)
{
	struct fid fid = make_file("f");
	struct event ev = link_event("f", "g", fid);

	make_file("g");
	renumber(&ev);
	expect_refused(&ev, -EEXIST);
}

Test(apply, link_from_source_holding_another_fid_is_estale)
{
	struct event ev;

	make_file("f");
	ev = link_event("f", "g", fid_of(999));
	expect_refused(&ev, -ESTALE);
	cr_assert(!exists("g"));
}

Test(apply, link_into_symlinked_directory_is_refused)
{
	struct fid fid = make_file("f");
	struct event ev = link_event("f", "out/f", fid);

	cr_assert_eq(symlink(outside(""), sp("out")), 0);
	cr_assert_lt(apply(&ev), 0);
	cr_assert_eq(access(outside("f"), F_OK), -1);
}

/* ---- rename ---- */

static struct event rename_event(const char *from, const char *to, struct fid fid, struct fid fid2,
				 unsigned flags)
{
	struct event ev = ev_make(EV_RENAME, from);

	ev.path2 = (char *)to;
	ev.fid = fid;
	ev.fid2 = fid2;
	ev.op_flags = flags;
	return ev;
}

static const struct fid no_fid;

Test(apply, rename_moves_the_object)
{
	struct fid fid = make_file("f");
	struct stat before = lstat_of("f");
	struct event ev = rename_event("f", "g", fid, no_fid, 0);

	expect_apply(&ev, 0);
	cr_assert(!exists("f"));
	cr_assert_eq(lstat_of("g").st_ino, before.st_ino);
	expect_fid("g", fid);
}

Test(apply, rename_replay_is_skipped)
{
	struct event ev = rename_event("f", "g", make_file("f"), no_fid, 0);

	expect_replay_skipped(&ev);
}

Test(apply, rename_replacing_target_applies)
{
	struct fid src = make_file("f");
	struct fid dst = make_file("g");
	struct stat st = lstat_of("f");
	struct event ev = rename_event("f", "g", src, dst, 0);

	expect_apply(&ev, 0);
	cr_assert(!exists("f"));
	cr_assert_eq(lstat_of("g").st_ino, st.st_ino);
	expect_fid("g", src);
}

Test(apply, rename_replacing_target_replay_is_skipped)
{
	struct fid src = make_file("f");
	struct event ev = rename_event("f", "g", src, make_file("g"), 0);

	expect_replay_skipped(&ev);
}

Test(apply, rename_noreplace_onto_free_name_applies_and_replays)
{
	struct event ev = rename_event("f", "g", make_file("f"), no_fid, RENAME_NOREPLACE);

	expect_replay_skipped(&ev);
	cr_assert(exists("g"));
}

Test(apply, rename_noreplace_onto_existing_name_fails_unchanged)
{
	struct fid src = make_file("f");
	struct fid dst = make_file("g");
	struct event ev = rename_event("f", "g", src, no_fid, RENAME_NOREPLACE);
	struct event with_fid2 = rename_event("f", "g", src, dst, RENAME_NOREPLACE);
	char *before;

	expect_refused(&ev, -EEXIST);
	before = snapshot();
	cr_assert_eq(apply_fresh(&ev), -EEXIST);
	cr_assert_lt(apply(&with_fid2), 0);
	expect_unchanged(before, "rename noreplace");
}

Test(apply, rename_exchange_swaps_both_objects)
{
	struct fid a = make_file("a");
	struct fid b = make_dir("b");
	struct stat sa = lstat_of("a"), sb = lstat_of("b");
	struct event ev = rename_event("a", "b", a, b, RENAME_EXCHANGE);

	expect_apply(&ev, 0);
	expect_fid("a", b);
	expect_fid("b", a);
	cr_assert_eq(lstat_of("a").st_ino, sb.st_ino);
	cr_assert_eq(lstat_of("b").st_ino, sa.st_ino);
	cr_assert(S_ISDIR(lstat_of("a").st_mode));
}

Test(apply, rename_exchange_replay_is_skipped)
{
	struct fid a = make_file("a");
	struct event ev = rename_event("a", "b", a, make_file("b"), RENAME_EXCHANGE);

	expect_replay_skipped(&ev);
	expect_fid("b", a);
}

/* Replays one event of a tail "rename d/f -> g, rmdir d" that already reached the store. */
Test(apply, rename_replay_after_source_parent_removed_is_skipped)
{
	struct fid d = make_dir("d");
	struct event ev = rename_event("d/f", "g", make_file("d/f"), no_fid, 0);
	struct event rm = ev_make(EV_RMDIR, "d");

	rm.fid = d;
	expect_apply(&ev, 0);
	expect_apply(&rm, 0);
	expect_refused(&ev, APPLY_SKIPPED);
}

Test(apply, rename_from_source_holding_another_fid_is_estale)
{
	struct event ev;

	make_file("f");
	ev = rename_event("f", "g", fid_of(999), no_fid, 0);
	expect_refused(&ev, -ESTALE);
}

Test(apply, rename_from_missing_source_is_estale)
{
	struct event ev = rename_event("f", "g", fid_of(999), no_fid, 0);

	expect_refused(&ev, -ESTALE);
}

Test(apply, rename_onto_target_holding_another_than_fid2_is_estale)
{
	struct fid src = make_file("f");
	struct event ev;

	make_file("g");
	ev = rename_event("f", "g", src, fid_of(999), 0);
	expect_refused(&ev, -ESTALE);
}

Test(apply, rename_with_fid2_onto_missing_target_is_estale)
{
	struct event ev = rename_event("f", "g", make_file("f"), fid_of(999), 0);

	expect_refused(&ev, -ESTALE);
}

Test(apply, rename_without_fid2_onto_target_that_appeared_is_eexist)
{
	struct fid src = make_file("f");
	struct event ev;

	make_file("g");
	ev = rename_event("f", "g", src, no_fid, 0);
	expect_refused(&ev, -EEXIST);
}

Test(apply, rename_exchange_with_wrong_fid2_is_estale)
{
	struct fid a = make_file("a");
	struct event ev;

	make_file("b");
	ev = rename_event("a", "b", a, fid_of(999), RENAME_EXCHANGE);
	expect_refused(&ev, -ESTALE);
}

Test(apply, rename_moves_a_directory_with_its_contents)
{
	struct fid d = make_dir("d");
	struct fid f;
	struct event ev;

	make_dir("d/sub");
	f = make_file("d/sub/f");
	put_contents("d/sub/f", "payload");
	make_dir("other");
	ev = rename_event("d", "other/moved", d, no_fid, 0);
	expect_replay_skipped(&ev);
	cr_assert(!exists("d"));
	expect_fid("other/moved", d);
	expect_fid("other/moved/sub/f", f);
	expect_contents("other/moved/sub/f", "payload", 7);
}

Test(apply, rename_of_directory_into_itself_is_refused)
{
	struct fid d = make_dir("d");
	struct event ev;

	make_dir("d/sub");
	ev = rename_event("d", "d/sub/d", d, no_fid, 0);
	expect_refused(&ev, -EINVAL);
}

Test(apply, rename_of_or_onto_the_root_is_refused)
{
	struct fid f = make_file("f");
	struct event from_root = rename_event(PATH_ROOT, "g", STORE_ROOT_FID, no_fid, 0);
	struct event onto_root = rename_event("f", PATH_ROOT, f, STORE_ROOT_FID, 0);
	char *before = snapshot();

	cr_assert_lt(apply(&from_root), 0);
	cr_assert_lt(apply_fresh(&from_root), 0);
	cr_assert_lt(apply(&onto_root), 0);
	cr_assert_lt(apply_fresh(&onto_root), 0);
	expect_unchanged(before, "renaming the root");
}

Test(apply, rename_into_symlinked_directory_is_refused)
{
	struct fid f = make_file("f");
	struct event ev = rename_event("f", "out/f", f, no_fid, 0);

	cr_assert_eq(symlink(outside(""), sp("out")), 0);
	cr_assert_lt(apply_fresh(&ev), 0);
	cr_assert(exists("f"));
	cr_assert_eq(access(outside("f"), F_OK), -1);
}

/* ---- data and attribute events ---- */

static const uint8_t change_types[] = {
    EV_WRITE, EV_TRUNCATE, EV_FALLOCATE, EV_CHMOD,
    EV_CHOWN, EV_UTIMENS,  EV_SETXATTR,	 EV_REMOVEXATTR,
};

/*
 * A plausible event of a data or attribute type on (path, fid): each has a
 * visible effect on the file make_target() makes.
 */
static struct event change_event(uint8_t type, const char *path, struct fid fid)
{
	struct event ev = ev_make(type, path);

	ev.fid = fid;
	ev.mtime_sec = 1700000000;
	ev.mtime_nsec = 42;
	switch (type) {
	case EV_WRITE:
		ev.offset = 2;
		ev.data = (uint8_t *)"XYZ";
		ev.data_len = 3;
		break;
	case EV_TRUNCATE:
		ev.length = 3;
		break;
	case EV_FALLOCATE:
		ev.op_flags = FALLOC_FL_KEEP_SIZE;
		ev.offset = 0;
		ev.length = 1 << 20;
		break;
	case EV_CHMOD:
		ev.mode = S_IFREG | 0604;
		break;
	case EV_CHOWN:
		ev.uid = 4321;
		ev.gid = 8765;
		ev.mode = S_IFREG | 0644;
		break;
	case EV_UTIMENS:
		ev.atime_sec = 1100000000;
		ev.atime_nsec = 7;
		break;
	case EV_SETXATTR:
		ev.name = "user.added";
		ev.data = (uint8_t *)"value";
		ev.data_len = 5;
		ev.op_flags = XATTR_CREATE;
		break;
	case EV_REMOVEXATTR:
		ev.name = "user.keep";
		break;
	}
	return ev;
}

/* A regular file with ten bytes of data and a user.keep xattr. */
static struct fid make_target(const char *rel)
{
	struct fid fid = make_file(rel);

	put_contents(rel, "0123456789");
	cr_assert_eq(lsetxattr(sp(rel), "user.keep", "k", 1, 0), 0);
	return fid;
}

Test(apply, changes_set_the_version_to_the_event)
{
	struct fid fid = make_target("f");

	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "f", fid);

		expect_apply(&ev, 0);
		expect_ver("f", ev.seq);
		expect_fid("f", fid);
	}
}

Test(apply, change_replay_is_skipped_without_a_second_effect)
{
	for (size_t i = 0; i < sizeof(change_types); i++) {
		char name[16];
		struct event ev;

		snprintf(name, sizeof(name), "f%zu", i);
		ev = change_event(change_types[i], name, make_target(name));
		expect_replay_skipped(&ev);
	}
}

Test(apply, change_on_file_holding_another_fid_is_estale)
{
	make_target("f");
	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "f", fid_of(999));

		expect_refused(&ev, -ESTALE);
	}
}

Test(apply, change_with_stale_base_version_is_estale)
{
	struct fid fid = make_target("f");

	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "f", fid);

		ev.base = evid_of(999);
		expect_refused(&ev, -ESTALE);
	}
}

Test(apply, change_with_matching_base_version_applies)
{
	struct fid fid = make_target("f");
	uint64_t ver = fid.counter;

	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "f", fid);

		ev.base = evid_of(ver);
		expect_apply(&ev, 0);
		ver = ev.seq;
	}
	expect_ver("f", ver);
}

Test(apply, change_with_zero_base_version_is_unchecked)
{
	struct fid fid = make_target("f");
	struct event first = change_event(EV_CHMOD, "f", fid);

	expect_apply(&first, 0);
	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "f", fid);

		expect_apply(&ev, 0);
	}
}

/* Events of one origin apply in seq order: a later version of it means this one is done. */
Test(apply, change_replay_after_later_version_of_same_origin_is_skipped)
{
	struct fid fid = make_target("f");

	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "f", fid);
		struct event later = change_event(EV_CHMOD, "f", fid);

		expect_apply(&later, 0);
		expect_refused(&ev, APPLY_SKIPPED);
	}
}

Test(apply, version_from_another_origin_does_not_count_as_applied)
{
	struct fid fid = make_target("f");
	struct event other = change_event(EV_CHMOD, "f", fid);
	struct event ev = change_event(EV_WRITE, "f", fid);

	other.origin = ORIGIN + 1;
	other.seq = 1000;
	expect_apply(&other, 0);
	expect_apply(&ev, 0);
	expect_ver("f", ev.seq);
}

Test(apply, change_without_path_or_descriptor_is_skipped)
{
	struct fid fid = make_target("f");

	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], NULL, fid);

		expect_refused(&ev, APPLY_SKIPPED);
	}
}

Test(apply, change_through_descriptor_of_unlinked_file_applies)
{
	struct event cr = ev_make(EV_CREATE, "f");
	struct event un = ev_make(EV_UNLINK, "f");
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int fd;

	cr.mode = S_IFREG | 0644;
	ctx.want_fd = 1;
	cr_assert_eq(apply_with(&cr, &ctx), 0);
	fd = ctx.out_fd;
	cr_assert_eq(pwrite(fd, "0123456789", 10, 0), 10);
	cr_assert_eq(fsetxattr(fd, "user.keep", "k", 1, 0), 0);
	un.fid = fid_of(cr.seq);
	expect_apply(&un, 0);
	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], NULL, fid_of(cr.seq));
		struct apply_ctx with_fd = APPLY_CTX_INIT;
		struct fid fid;
		struct evid ver;
		int r;

		with_fd.fd = fd;
		r = apply_with(&ev, &with_fd);
		cr_assert_eq(r, 0, "%s through fd: %d (%s)", event_type_name(ev.type), r, why);
		cr_assert_eq(store_get_ids(fd, &fid, &ver), 0);
		cr_assert(ver.origin == ORIGIN && ver.seq == ev.seq);
	}
	close(fd);
}

Test(apply, write_through_descriptor_reaches_the_open_file)
{
	struct event cr = ev_make(EV_CREATE, "f");
	struct event wr;
	struct apply_ctx ctx = APPLY_CTX_INIT;
	char buf[8] = {0};

	cr.mode = S_IFREG | 0644;
	ctx.want_fd = 1;
	cr_assert_eq(apply_with(&cr, &ctx), 0);
	wr = change_event(EV_WRITE, "f", fid_of(cr.seq));
	wr.offset = 0;
	ctx.fd = ctx.out_fd;
	cr_assert_eq(apply_with(&wr, &ctx), 0);
	cr_assert_eq(pread(ctx.fd, buf, sizeof(buf), 0), 3);
	cr_assert_str_eq(buf, "XYZ");
	close(ctx.fd);
	expect_contents("f", "XYZ", 3);
}

/* Apply with replay semantics through cache. */
static void expect_cached(const struct event *ev, struct apply_cache *c, int want)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int r;

	ctx.cache = c;
	r = apply_with(ev, &ctx);
	cr_assert_eq(r, want, "%s seq %llu on \"%s\" through the cache: got %d (%s)",
		     event_type_name(ev->type), (unsigned long long)ev->seq, ev->path, r,
		     why ? why : "-");
}

Test(apply, cache_keeps_the_directory_and_the_created_file_for_the_next_events)
{
	struct event d = ev_make(EV_MKDIR, "d");
	struct event cr = ev_make(EV_CREATE, "d/f");
	struct event wr, ut;
	struct apply_cache c;

	apply_cache_init(&c);
	d.mode = S_IFDIR | 0755;
	expect_cached(&d, &c, 0);
	cr.mode = S_IFREG | 0644;
	expect_cached(&cr, &c, 0);
	cr_assert_geq(c.dirfd, 0);
	cr_assert_str_eq(c.dir, "d");
	cr_assert_geq(c.fd, 0);
	cr_assert_str_eq(c.obj, "d/f");
	wr = change_event(EV_WRITE, "d/f", fid_of(cr.seq));
	wr.offset = 0;
	expect_cached(&wr, &c, 0);
	ut = change_event(EV_UTIMENS, "d/f", fid_of(cr.seq));
	expect_cached(&ut, &c, 0);
	expect_contents("d/f", "XYZ", 3);
	cr_assert_eq(apply_cache_flush(&c), 0);
	cr_assert_eq(lstat_of("d/f").st_mtim.tv_sec, ut.mtime_sec);
	/* Applied before: recognised through the cached descriptor too. */
	expect_cached(&wr, &c, APPLY_SKIPPED);
	apply_cache_release(&c);
	cr_assert_eq(c.dirfd, -1);
	cr_assert_eq(c.fd, -1);
}

/* Through a fresh cache c: mkdir d (made into *d), then create d/f (*cr). */
static void cached_dir_and_file(struct apply_cache *c, struct event *d, struct event *cr)
{
	apply_cache_init(c);
	*d = ev_make(EV_MKDIR, "d");
	*cr = ev_make(EV_CREATE, "d/f");
	d->mode = S_IFDIR | 0755;
	cr->mode = S_IFREG | 0644;
	expect_cached(d, c, 0);
	expect_cached(cr, c, 0);
}

Test(apply, cache_is_emptied_when_a_name_moves_and_follows_the_new_tree)
{
	struct event d, cr, mv, d2, cr2, wr;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	/* d becomes e and a new d takes its place: "d" must not reach the old one. */
	mv = rename_event("d", "e", fid_of(d.seq), no_fid, 0);
	expect_cached(&mv, &c, 0);
	cr_assert_eq(c.dirfd, -1);
	cr_assert_eq(c.fd, -1);
	d2 = ev_make(EV_MKDIR, "d");
	d2.mode = S_IFDIR | 0755;
	expect_cached(&d2, &c, 0);
	cr2 = ev_make(EV_CREATE, "d/f");
	cr2.mode = S_IFREG | 0644;
	expect_cached(&cr2, &c, 0);
	wr = change_event(EV_WRITE, "d/f", fid_of(cr2.seq));
	wr.offset = 0;
	expect_cached(&wr, &c, 0);
	expect_contents("d/f", "XYZ", 3);
	expect_contents("e/f", "", 0);
	apply_cache_release(&c);
}

Test(apply, cache_knows_the_created_files_ids_until_another_name_changes_it)
{
	struct event d, cr, wr, ln, ut, wr2;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	cr_assert(c.ids);
	wr = change_event(EV_WRITE, "d/f", fid_of(cr.seq));
	wr.base = evid_of(cr.seq);
	expect_cached(&wr, &c, 0);
	cr_assert(c.ids);
	cr_assert_eq(c.ver.seq, wr.seq);
	/* Deferred until the next event through another name, the fid too. */
	expect_no_pair("d/f", STORE_XATTR_VER);
	expect_no_pair("d/f", STORE_XATTR_FID);
	/* Through another name of the file, its version moves behind c.fd. */
	ln = link_event("d/f", "d/g", fid_of(cr.seq));
	expect_cached(&ln, &c, 0);
	expect_fid("d/f", fid_of(cr.seq));
	expect_ver("d/f", wr.seq);
	ut = change_event(EV_UTIMENS, "d/g", fid_of(cr.seq));
	expect_cached(&ut, &c, 0);
	cr_assert_not(c.ids);
	/* The base is what the store holds, not what the cache last knew. */
	wr2 = change_event(EV_WRITE, "d/f", fid_of(cr.seq));
	wr2.base = evid_of(ut.seq);
	expect_cached(&wr2, &c, 0);
	expect_ver("d/f", wr2.seq);
	apply_cache_release(&c);
	cr_assert_not(c.ids);
}

/* Drop what c holds without writing what it deferred, as a kill -9 would. */
static void crash_cache(struct apply_cache *c)
{
	close(c->fd);
	close(c->dirfd);
	apply_cache_init(c);
}

Test(apply, cache_defers_a_files_times_and_version_and_replay_redoes_what_a_crash_lost)
{
	struct event d, cr, wr, ut, ch;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	wr = change_event(EV_WRITE, "d/f", fid_of(cr.seq));
	wr.base = evid_of(cr.seq);
	ut = change_event(EV_UTIMENS, "d/f", fid_of(cr.seq));
	ut.base = evid_of(wr.seq);
	ut.mtime_sec = 1600000000;
	ch = change_event(EV_CHMOD, "d/f", fid_of(cr.seq));
	ch.base = evid_of(ut.seq);
	ch.mode = S_IFREG | 0600;
	expect_cached(&wr, &c, 0);
	expect_cached(&ut, &c, 0);
	expect_cached(&ch, &c, 0);
	/* The changes are in the store; their evidence is not yet, nor the creation's. */
	expect_contents("d/f", "\0\0XYZ", 5);
	cr_assert_eq(lstat_of("d/f").st_mode & 07777, 0600);
	expect_no_pair("d/f", STORE_XATTR_VER);
	expect_no_pair("d/f", STORE_XATTR_FID);
	cr_assert_neq(lstat_of("d/f").st_mtim.tv_sec, ut.mtime_sec);
	crash_cache(&c);
	/*
	 * Replay finishes the creation (a file without a fid is adopted), then
	 * takes the three up again, each base matching, and ends where they did.
	 */
	expect_apply(&cr, 0);
	expect_fid("d/f", fid_of(cr.seq));
	expect_ver("d/f", cr.seq);
	expect_apply(&wr, 0);
	expect_apply(&ut, 0);
	expect_apply(&ch, 0);
	expect_contents("d/f", "\0\0XYZ", 5);
	expect_ver("d/f", ch.seq);
	cr_assert_eq(lstat_of("d/f").st_mtim.tv_sec, ut.mtime_sec);
	cr_assert_eq(lstat_of("d/f").st_mode & 07777, 0600);
}

Test(apply, cache_flush_sets_the_last_times_after_the_data_then_the_version)
{
	struct event d, cr, ut, wr;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	ut = change_event(EV_UTIMENS, "d/f", fid_of(cr.seq));
	ut.atime_sec = 1500000000;
	ut.mtime_sec = 1500000000;
	expect_cached(&ut, &c, 0);
	/* A later write moves mtime (its own), not the atime utimens set. */
	wr = change_event(EV_WRITE, "d/f", fid_of(cr.seq));
	wr.mtime_sec = 1700000001;
	expect_cached(&wr, &c, 0);
	cr_assert_eq(apply_cache_flush(&c), 0);
	cr_assert_eq(lstat_of("d/f").st_atim.tv_sec, ut.atime_sec);
	cr_assert_eq(lstat_of("d/f").st_mtim.tv_sec, wr.mtime_sec);
	expect_ver("d/f", wr.seq);
	apply_cache_release(&c);
}

Test(apply, cache_writes_deferred_state_before_an_event_that_must_not_be_redone)
{
	struct event d, cr, wr, fa;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	wr = change_event(EV_WRITE, "d/f", fid_of(cr.seq));
	expect_cached(&wr, &c, 0);
	expect_no_pair("d/f", STORE_XATTR_VER);
	/* A fallocate is not redone on replay: its version is written at once, the fid before. */
	fa = change_event(EV_FALLOCATE, "d/f", fid_of(cr.seq));
	fa.op_flags = 0;
	fa.offset = 0;
	fa.length = 4096;
	fa.mtime_sec = 1700000002;
	expect_cached(&fa, &c, 0);
	expect_fid("d/f", fid_of(cr.seq));
	expect_ver("d/f", fa.seq);
	cr_assert_eq(lstat_of("d/f").st_mtim.tv_sec, fa.mtime_sec);
	apply_cache_release(&c);
}

Test(apply, cache_defers_the_directory_stamp_of_creates_and_writes_it_before_other_events)
{
	struct event d, cr, cr2, ut;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	cr2 = ev_make(EV_CREATE, "d/g");
	cr2.mode = S_IFREG | 0644;
	expect_cached(&cr2, &c, 0);
	expect_ver("d", d.seq);
	/* Replayed through the cache, the create is known applied without a read. */
	expect_cached(&cr2, &c, APPLY_SKIPPED);
	/* An event on d itself writes the stamp first and then its own version. */
	ut = change_event(EV_UTIMENS, "d", fid_of(d.seq));
	expect_cached(&ut, &c, 0);
	expect_ver("d", ut.seq);
	apply_cache_release(&c);
	expect_ver("d", ut.seq);
}

Test(apply, cache_create_gets_the_events_owner_and_mode_whatever_the_directory_gives)
{
	/* POSIX ACL xattr, version 2: user rw-, group ---, other ---. */
	static const uint8_t acl[] = {2,    0,	  0, 0, 1,    0,    6,	  0,	0xff, 0xff,
				      0xff, 0xff, 4, 0, 0,    0,    0xff, 0xff, 0xff, 0xff,
				      0x20, 0,	  0, 0, 0xff, 0xff, 0xff, 0xff};
	struct {
		const char *dir;
		mode_t dmode;
		uint32_t dgid, uid, gid;
		int acl;
		mode_t mode;
	} cases[] = {
	    {"plain", 0755, 0, 0, 0, 0, 0644},	   {"owner", 0755, 0, 1234, 1234, 0, 0644},
	    {"setgid", 02775, 777, 0, 0, 0, 0644}, {"group", 0775, 777, 0, 0, 0, 0644},
	    {"acl", 0755, 0, 0, 0, 1, 0644},	   {"umask", 0755, 0, 0, 0, 0, 0666},
	    {"setuid", 0755, 0, 0, 0, 0, 04755},
	};
	mode_t old = umask(022);

	store->umask = 022;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct event d = ev_make(EV_MKDIR, cases[i].dir), cr, wr;
		struct apply_cache c;
		char path[64];
		struct stat st;

		apply_cache_init(&c);
		d.mode = S_IFDIR | cases[i].dmode;
		d.gid = cases[i].dgid;
		expect_cached(&d, &c, 0);
		if (cases[i].acl && setxattr(sp(cases[i].dir), "system.posix_acl_default", acl,
					     sizeof(acl), 0) < 0) {
			cr_assert_eq(errno, EOPNOTSUPP, "setfacl %s: %s", cases[i].dir,
				     strerror(errno));
			apply_cache_release(&c);
			continue;
		}
		snprintf(path, sizeof(path), "%s/f", cases[i].dir);
		cr = ev_make(EV_CREATE, hold(strdup(path)));
		cr.mode = S_IFREG | cases[i].mode;
		cr.uid = cases[i].uid;
		cr.gid = cases[i].gid;
		expect_cached(&cr, &c, 0);
		wr = change_event(EV_WRITE, cr.path, fid_of(cr.seq));
		expect_cached(&wr, &c, 0);
		apply_cache_release(&c);
		st = lstat_of(cr.path);
		cr_assert_eq(st.st_mode & 07777, cases[i].mode, "%s: mode %o, want %o", cr.path,
			     st.st_mode & 07777, cases[i].mode);
		cr_assert(st.st_uid == cases[i].uid && st.st_gid == cases[i].gid,
			  "%s: owner %u:%u, want %u:%u", cr.path, st.st_uid, st.st_gid,
			  cases[i].uid, cases[i].gid);
		expect_fid(cr.path, fid_of(cr.seq));
		expect_ver(cr.path, wr.seq);
	}
	umask(old);
}

Test(apply, cache_create_outside_its_directory_is_complete_at_once)
{
	struct event cr = ev_make(EV_CREATE, "f"), wr;
	struct apply_cache c;

	/* The root's stamp is written at once, so the fid must be there before it. */
	apply_cache_init(&c);
	cr.mode = S_IFREG | 0644;
	expect_cached(&cr, &c, 0);
	expect_fid("f", fid_of(cr.seq));
	expect_ver("", cr.seq);
	wr = change_event(EV_WRITE, "f", fid_of(cr.seq));
	wr.base = evid_of(cr.seq);
	expect_cached(&wr, &c, 0);
	apply_cache_release(&c);
	expect_ver("f", wr.seq);
}

Test(apply, cache_release_writes_the_directory_stamp)
{
	struct event d, cr;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	expect_ver("d", d.seq);
	apply_cache_release(&c);
	expect_ver("d", cr.seq);
}

Test(apply, cache_is_emptied_by_an_apply_made_without_it)
{
	struct event d, cr, mv, d2, cr2;
	struct apply_cache c;

	cached_dir_and_file(&c, &d, &cr);
	/* Another caller (a local write) moves d away behind the cache's back. */
	mv = rename_event("d", "e", fid_of(d.seq), no_fid, 0);
	expect_apply(&mv, 0);
	d2 = ev_make(EV_MKDIR, "d");
	d2.mode = S_IFDIR | 0755;
	expect_apply(&d2, 0);
	cr2 = ev_make(EV_CREATE, "d/g");
	cr2.mode = S_IFREG | 0644;
	expect_cached(&cr2, &c, 0);
	cr_assert_eq(lstat_of("d/g").st_mode & S_IFMT, S_IFREG);
	cr_assert_eq(lstat(sp("e/g"), &(struct stat){0}), -1);
	apply_cache_release(&c);
}

Test(apply, fresh_change_skips_the_version_and_fid_checks)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_SETXATTR, "f", fid);

	expect_apply(&ev, 0);
	ev.op_flags = 0;
	ev.fid = fid_of(999);
	ev.base = evid_of(999);
	cr_assert_eq(apply_fresh(&ev), 0);
}

Test(apply, write_stores_data_and_mtime)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_WRITE, "f", fid);
	struct stat st;

	ev.offset = 8;
	expect_apply(&ev, 0);
	expect_contents("f", "01234567XYZ", 11);
	st = lstat_of("f");
	cr_assert_eq(st.st_mtim.tv_sec, 1700000000);
	cr_assert_eq(st.st_mtim.tv_nsec, 42);
}

Test(apply, write_replay_does_not_overwrite_later_data)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_WRITE, "f", fid);

	expect_apply(&ev, 0);
	put_contents("f", "later data");
	expect_apply(&ev, APPLY_SKIPPED);
	expect_contents("f", "later data", 10);
}

Test(apply, write_to_a_directory_is_refused)
{
	struct event ev = change_event(EV_WRITE, "d", make_dir("d"));

	expect_refused(&ev, -EISDIR);
}

/* apply_in_child() result when the engine had not returned in time. */
#define APPLY_BLOCKED INT_MIN

/*
 * Apply ev (replay semantics) in a child process and give up after a few
 * seconds, so an engine that blocks fails the test instead of hanging it.
 */
static int apply_in_child(const struct event *ev)
{
	struct pollfd pfd = {.events = POLLIN};
	int pipefd[2], r = APPLY_BLOCKED;
	pid_t pid;

	cr_assert_eq(pipe(pipefd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct apply_ctx ctx = APPLY_CTX_INIT;

		close(pipefd[0]);
		r = apply_event(store, ev, &ctx, NULL);
		_exit(write(pipefd[1], &r, sizeof(r)) == sizeof(r) ? 0 : 1);
	}
	close(pipefd[1]);
	pfd.fd = pipefd[0];
	if (poll(&pfd, 1, 3000) == 1) {
		cr_assert_eq(read(pipefd[0], &r, sizeof(r)), (ssize_t)sizeof(r));
	} else {
		kill(pid, SIGKILL);
	}
	waitpid(pid, NULL, 0);
	close(pipefd[0]);
	return r;
}

Test(apply, write_to_a_fifo_is_refused_without_blocking)
{
	struct event mk = ev_make(EV_MKNOD, "fifo");
	struct event wr;
	int r;

	mk.mode = S_IFIFO | 0600;
	expect_apply(&mk, 0);
	wr = change_event(EV_WRITE, "fifo", fid_of(mk.seq));
	r = apply_in_child(&wr);
	cr_assert_neq(r, APPLY_BLOCKED, "a write event on a fifo blocked the engine");
	cr_assert_lt(r, 0);
	wr = change_event(EV_TRUNCATE, "fifo", fid_of(999));
	r = apply_in_child(&wr);
	cr_assert_neq(r, APPLY_BLOCKED, "a truncate event on a fifo blocked the engine");
	cr_assert_lt(r, 0);
}

Test(apply, write_to_a_device_node_is_refused)
{
	struct event mk = ev_make(EV_MKNOD, "null");
	struct event wr;

	mk.mode = S_IFCHR | 0666;
	mk.rdev = makedev(1, 3);
	expect_apply(&mk, 0);
	wr = change_event(EV_WRITE, "null", fid_of(mk.seq));
	cr_assert_lt(apply(&wr), 0, "a write event reached a device node");
}

Test(apply, truncate_sets_size_and_mtime)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_TRUNCATE, "f", fid);
	struct stat st;

	expect_apply(&ev, 0);
	expect_contents("f", "012", 3);
	st = lstat_of("f");
	cr_assert_eq(st.st_mtim.tv_sec, 1700000000);
	ev = change_event(EV_TRUNCATE, "f", fid);
	ev.length = 6;
	expect_apply(&ev, 0);
	expect_contents("f", "012\0\0\0", 6);
}

Test(apply, truncate_replay_does_not_cut_later_data)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_TRUNCATE, "f", fid);

	expect_apply(&ev, 0);
	put_contents("f", "grown again");
	expect_apply(&ev, APPLY_SKIPPED);
	expect_contents("f", "grown again", 11);
}

Test(apply, fallocate_keep_size_allocates_without_growing)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_FALLOCATE, "f", fid);
	struct stat st;

	expect_apply(&ev, 0);
	st = lstat_of("f");
	cr_assert_eq(st.st_size, 10);
	cr_assert_geq(st.st_blocks * 512, 1 << 20, "blocks %lld", (long long)st.st_blocks);
	cr_assert_eq(st.st_mtim.tv_sec, 1700000000);
}

Test(apply, fallocate_punch_hole_zeroes_range_and_keeps_size)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_FALLOCATE, "f", fid);

	ev.op_flags = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	ev.offset = 2;
	ev.length = 5;
	expect_apply(&ev, 0);
	expect_contents("f",
			"01\0\0\0\0\0"
			"789",
			10);
	expect_ver("f", ev.seq);
}

Test(apply, fallocate_zero_range_zeroes_range)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_FALLOCATE, "f", fid);

	ev.op_flags = FALLOC_FL_ZERO_RANGE;
	ev.offset = 6;
	ev.length = 6;
	expect_apply(&ev, 0);
	expect_contents("f", "012345\0\0\0\0\0\0", 12);
}

Test(apply, fallocate_with_bad_mode_fails_unchanged)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_FALLOCATE, "f", fid);

	ev.op_flags = FALLOC_FL_PUNCH_HOLE; /* punching needs KEEP_SIZE */
	expect_refused(&ev, -EOPNOTSUPP);
}

Test(apply, chmod_sets_the_exact_mode)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_CHMOD, "f", fid);

	ev.mode = S_IFREG | 06711;
	expect_apply(&ev, 0);
	cr_assert_eq(lstat_of("f").st_mode & 07777, 06711);
	ev = change_event(EV_CHMOD, "f", fid);
	ev.mode = S_IFREG | 0;
	expect_apply(&ev, 0);
	cr_assert_eq(lstat_of("f").st_mode & 07777, 0);
}

Test(apply, chmod_of_directory_keeps_sticky_bit)
{
	struct fid d = make_dir("d");
	struct event ev = change_event(EV_CHMOD, "d", d);

	ev.mode = S_IFDIR | 01777;
	expect_apply(&ev, 0);
	cr_assert_eq(lstat_of("d").st_mode & 07777, 01777);
}

Test(apply, chown_applies_owner_and_the_mode_after_the_change)
{
	struct fid fid = make_target("f");
	struct event ch = change_event(EV_CHMOD, "f", fid);
	struct event ev;
	struct stat st;

	ch.mode = S_IFREG | 06755;
	expect_apply(&ch, 0);
	ev = change_event(EV_CHOWN, "f", fid);
	ev.mode = S_IFREG | 0755; /* setuid and setgid cleared by the chown */
	expect_apply(&ev, 0);
	st = lstat_of("f");
	cr_assert_eq(st.st_uid, 4321);
	cr_assert_eq(st.st_gid, 8765);
	cr_assert_eq(st.st_mode & 07777, 0755, "mode %o", st.st_mode & 07777);
}

Test(apply, chown_keeps_setid_bits_the_event_keeps)
{
	struct fid fid = make_target("f");
	struct event ch = change_event(EV_CHMOD, "f", fid);
	struct event ev;

	ch.mode = S_IFREG | 06755;
	expect_apply(&ch, 0);
	ev = change_event(EV_CHOWN, "f", fid);
	ev.mode = S_IFREG | 06755;
	expect_apply(&ev, 0);
	cr_assert_eq(lstat_of("f").st_mode & 07777, 06755);
	cr_assert_eq(lstat_of("f").st_uid, 4321);
}

Test(apply, chown_of_a_symlink_changes_the_link_itself)
{
	struct fid l = make_symlink("l", "f");
	struct fid f = make_target("f");
	struct event ev = change_event(EV_CHOWN, "l", l);

	ev.mode = S_IFLNK | 0777;
	expect_apply(&ev, 0);
	cr_assert_eq(lstat_of("l").st_uid, 4321);
	cr_assert_eq(lstat_of("f").st_uid, 0);
	expect_ver("f", f.counter);
}

Test(apply, utimens_sets_both_times)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_UTIMENS, "f", fid);
	struct stat st;

	expect_apply(&ev, 0);
	st = lstat_of("f");
	cr_assert_eq(st.st_atim.tv_sec, 1100000000);
	cr_assert_eq(st.st_atim.tv_nsec, 7);
	cr_assert_eq(st.st_mtim.tv_sec, 1700000000);
	cr_assert_eq(st.st_mtim.tv_nsec, 42);
}

Test(apply, utimens_omit_leaves_that_time_alone)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_UTIMENS, "f", fid);
	struct stat before, st;

	expect_apply(&ev, 0);
	before = lstat_of("f");
	ev = change_event(EV_UTIMENS, "f", fid);
	ev.atime_nsec = UTIME_OMIT;
	ev.mtime_sec = 1800000000;
	ev.mtime_nsec = 1;
	expect_apply(&ev, 0);
	st = lstat_of("f");
	cr_assert_eq(st.st_atim.tv_sec, before.st_atim.tv_sec);
	cr_assert_eq(st.st_atim.tv_nsec, before.st_atim.tv_nsec);
	cr_assert_eq(st.st_mtim.tv_sec, 1800000000);
	ev = change_event(EV_UTIMENS, "f", fid);
	ev.atime_sec = 1200000000;
	ev.atime_nsec = 0;
	ev.mtime_nsec = UTIME_OMIT;
	expect_apply(&ev, 0);
	st = lstat_of("f");
	cr_assert_eq(st.st_atim.tv_sec, 1200000000);
	cr_assert_eq(st.st_mtim.tv_sec, 1800000000);
	cr_assert_eq(st.st_mtim.tv_nsec, 1);
}

Test(apply, setxattr_stores_the_value)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_SETXATTR, "f", fid);
	char value[16] = {0};

	expect_apply(&ev, 0);
	cr_assert_eq(lgetxattr(sp("f"), "user.added", value, sizeof(value)), 5);
	cr_assert_str_eq(value, "value");
	ev = change_event(EV_SETXATTR, "f", fid);
	ev.name = "user.added";
	ev.data = (uint8_t *)"x";
	ev.data_len = 1;
	ev.op_flags = XATTR_REPLACE;
	expect_apply(&ev, 0);
	cr_assert_eq(lgetxattr(sp("f"), "user.added", value, sizeof(value)), 1);
}

Test(apply, setxattr_with_create_flag_on_existing_name_fails_unchanged)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_SETXATTR, "f", fid);

	ev.name = "user.keep";
	expect_refused(&ev, -EEXIST);
}

Test(apply, removexattr_removes_the_name)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_REMOVEXATTR, "f", fid);
	char value[4];

	expect_apply(&ev, 0);
	cr_assert_eq(lgetxattr(sp("f"), "user.keep", value, sizeof(value)), -1);
	cr_assert_eq(errno, ENODATA);
}

Test(apply, removexattr_of_missing_name_fails_unchanged)
{
	struct fid fid = make_target("f");
	struct event ev = change_event(EV_REMOVEXATTR, "f", fid);

	ev.name = "user.never";
	expect_refused(&ev, -ENODATA);
}

Test(apply, reserved_xattr_names_are_eperm)
{
	static const char *const names[] = {
	    STORE_XATTR_FID,
	    STORE_XATTR_VER,
	    STORE_XATTR_NODE,
	    "trusted.ledgerfs.other",
	};
	struct fid fid = make_target("f");

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct event set = change_event(EV_SETXATTR, "f", fid);
		struct event rm = change_event(EV_REMOVEXATTR, "f", fid);
		struct event root = change_event(EV_REMOVEXATTR, PATH_ROOT, STORE_ROOT_FID);

		set.name = rm.name = root.name = (char *)names[i];
		set.op_flags = 0;
		expect_refused(&set, -EPERM);
		expect_refused(&rm, -EPERM);
		expect_refused(&root, -EPERM);
		cr_assert_eq(apply_fresh(&set), -EPERM);
	}
	expect_fid("f", fid);
	expect_fid(".", STORE_ROOT_FID);
}

Test(apply, change_on_planted_symlink_never_reaches_its_target)
{
	cr_assert_eq(symlink(outside("secret"), sp("evil")), 0);
	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "evil", fid_of(1));
		char *secret = snapshot_of(outside(""));

		/* The planted link has no fid: a replayed event cannot match it. */
		cr_assert_lt(apply(&ev), 0, "%s through a planted symlink applied",
			     event_type_name(ev.type));
		/* A fresh event may touch the link itself, never what it points at. */
		apply_fresh(&ev);
		expect_same(outside(""), secret, event_type_name(ev.type));
	}
}

Test(apply, change_on_store_symlink_never_reaches_its_target)
{
	struct fid l = make_symlink("l", outside("secret"));

	cr_assert_eq(setxattr(outside("secret"), "user.keep", "k", 1, 0), 0);
	for (size_t i = 0; i < sizeof(change_types); i++) {
		struct event ev = change_event(change_types[i], "l", l);
		char *secret = snapshot_of(outside(""));

		apply(&ev);
		expect_same(outside(""), secret, event_type_name(ev.type));
	}
}

/* ---- replay of a whole tail ---- */

/*
 * Apply a tail of events, then replay all of it as node_replay() does after
 * a crash (the applied marks are only persisted at sync): each event must
 * be recognised as applied and the store must not move.
 */
static void expect_tail_replay_skipped(const struct event *evs, size_t n)
{
	char *before;

	for (size_t i = 0; i < n; i++)
		expect_apply(&evs[i], 0);
	before = snapshot();
	for (size_t i = 0; i < n; i++)
		expect_apply(&evs[i], APPLY_SKIPPED);
	expect_unchanged(before, "replay of the tail");
}

Test(apply, tail_of_changes_to_one_file_replays_as_skipped)
{
	struct event evs[3];
	struct fid f;

	evs[0] = ev_make(EV_CREATE, "f");
	evs[0].mode = S_IFREG | 0644;
	f = fid_of(evs[0].seq);
	/* Bases as the FUSE layer sets them: the version the file had. */
	evs[1] = change_event(EV_WRITE, "f", f);
	evs[1].base = evid_of(evs[0].seq);
	evs[2] = change_event(EV_CHMOD, "f", f);
	evs[2].base = evid_of(evs[1].seq);
	expect_tail_replay_skipped(evs, 3);
}

Test(apply, tail_of_create_then_rename_replays_as_skipped)
{
	struct event evs[2];

	evs[0] = ev_make(EV_CREATE, "f");
	evs[0].mode = S_IFREG | 0644;
	evs[1] = rename_event("f", "g", fid_of(evs[0].seq), no_fid, 0);
	expect_tail_replay_skipped(evs, 2);
}

/* ---- path validation ---- */

struct bad_path {
	const char *path;
	int err;
};

static void expect_bad_path_refused(const struct bad_path *bad, struct fid file)
{
	struct event cr = ev_make(EV_CREATE, bad->path);
	struct event md = ev_make(EV_MKDIR, bad->path);
	struct event un = ev_make(EV_UNLINK, bad->path);
	struct event wr = change_event(EV_WRITE, bad->path, file);
	struct event rn_from = rename_event(bad->path, "g", file, no_fid, 0);
	struct event rn_to = rename_event("f", bad->path, file, no_fid, 0);
	struct event ln = link_event("f", bad->path, file);
	const struct event *evs[] = {&cr, &md, &un, &wr, &rn_from, &rn_to, &ln};

	cr.mode = S_IFREG | 0644;
	md.mode = S_IFDIR | 0755;
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
		expect_refused(evs[i], bad->err);
		cr_assert_eq(apply_fresh(evs[i]), bad->err);
	}
}

Test(apply, malformed_paths_are_rejected_with_a_reason)
{
	char long_name[NAME_MAX + 2];
	char long_path[NAME_MAX + 8];
	struct bad_path bad[] = {
	    {"/etc/passwd", -EINVAL},
	    {"..", -EINVAL},
	    {"../x", -EINVAL},
	    {"a/../b", -EINVAL},
	    {"d/..", -EINVAL},
	    {"./f", -EINVAL},
	    {"d//f", -EINVAL},
	    {"d/", -EINVAL},
	    {"", -EINVAL},
	    {long_name, -ENAMETOOLONG},
	    {long_path, -ENAMETOOLONG},
	};
	struct fid file;

	memset(long_name, 'n', NAME_MAX + 1);
	long_name[NAME_MAX + 1] = '\0';
	snprintf(long_path, sizeof(long_path), "d/%s", long_name);
	make_dir("d");
	file = make_target("f");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_bad_path_refused(&bad[i], file);
}

Test(apply, name_of_exactly_name_max_bytes_is_accepted)
{
	char name[NAME_MAX + 1];

	memset(name, 'n', NAME_MAX);
	name[NAME_MAX] = '\0';
	make_file(name);
	cr_assert(exists(name));
}

/* ---- events that change nothing ---- */

Test(apply, void_and_node_state_events_change_nothing)
{
	static const uint8_t types[] = {EV_VOID, EV_OUTAGE, EV_RECOVERED, EV_ROLE};
	struct fid fid = make_target("f");

	for (size_t i = 0; i < sizeof(types); i++) {
		struct event ev = change_event(EV_WRITE, "f", fid);
		struct event bogus = ev_make(types[i], "../escape");

		ev.type = types[i];
		expect_refused(&ev, 0);
		expect_refused(&bogus, 0);
		cr_assert_null(why);
	}
}

/* ---- replay of a run that already reached the store ---- */

Test(apply, replay_of_a_run_whose_later_events_moved_its_targets_skips_it)
{
	struct event mk = ev_make(EV_MKDIR, "d"), cr, wr, mv, mvd;

	mk.mode = S_IFDIR | 0755;
	cr = ev_make(EV_CREATE, "d/f");
	cr.mode = S_IFREG | 0644;
	wr = change_event(EV_WRITE, "d/f", fid_of(cr.seq));
	mv = rename_event("d/f", "d/g", fid_of(cr.seq), no_fid, 0);
	mvd = rename_event("d", "e", fid_of(mk.seq), no_fid, 0);
	expect_apply(&mk, 0);
	expect_apply(&cr, 0);
	expect_apply(&wr, 0);
	expect_apply(&mv, 0);
	expect_apply(&mvd, 0);
	char *before = snapshot();

	/* A crash left the run applied but unmarked: replay takes it all up again. */
	expect_apply(&mk, APPLY_SKIPPED);
	expect_apply(&cr, APPLY_SKIPPED);
	expect_apply(&wr, APPLY_SKIPPED);
	expect_apply(&mv, APPLY_SKIPPED);
	expect_apply(&mvd, APPLY_SKIPPED);
	expect_same(tmp, before, "replaying the run");
}

/* ---- paths deeper than PATH_MAX ---- */

/* Stat of the store object at rel, however long, reached beneath the root. */
static struct stat deep_stat(const char *rel)
{
	struct stat st;
	int fd = -1;

	cr_assert_eq(path_open(store->root, rel, O_PATH, 0, &fd), 0, "open %.40s...: %s", rel,
		     strerror(errno));
	cr_assert_eq(fstat(fd, &st), 0);
	close(fd);
	return st;
}

/* rel + "/" + name into a held buffer. */
static char *deep_join(const char *rel, const char *name)
{
	char *p = hold(malloc(strlen(rel) + strlen(name) + 2));

	cr_assert_not_null(p);
	sprintf(p, "%s/%s", rel, name);
	return p;
}

Test(apply, events_reach_objects_deeper_than_path_max)
{
	char name[201], *deep = hold(calloc(1, 45 * 201)), *f, *g, *l;
	struct event ev;
	struct apply_cache c;
	struct fid file;

	memset(name, 'd', 200);
	name[200] = '\0';
	for (int i = 0; i < 45; i++) {
		if (i)
			strcat(deep, "/");
		strcat(deep, name);
		make_dir(deep);
	}
	cr_assert_gt(strlen(deep), 2 * PATH_MAX);
	f = deep_join(deep, "f");
	g = deep_join(deep, "g");
	l = deep_join(deep, "l");
	/* Through a cache, which cannot keep a parent path this long: it must do without. */
	apply_cache_init(&c);
	ev = ev_make(EV_CREATE, f);
	ev.mode = S_IFREG | 0644;
	expect_cached(&ev, &c, 0);
	file = fid_of(ev.seq);
	expect_cached(&ev, &c, APPLY_SKIPPED);
	ev = change_event(EV_WRITE, f, file);
	expect_cached(&ev, &c, 0);
	cr_assert_eq(apply_cache_flush(&c), 0);
	apply_cache_release(&c);
	cr_assert_eq(deep_stat(f).st_size, 5);
	ev = change_event(EV_CHMOD, f, file);
	expect_apply(&ev, 0);
	cr_assert_eq(deep_stat(f).st_mode & 07777, 0604);
	ev = change_event(EV_TRUNCATE, f, file);
	expect_apply(&ev, 0);
	cr_assert_eq(deep_stat(f).st_size, 3);
	ev = ev_make(EV_SETXATTR, f);
	ev.fid = file;
	ev.name = "user.deep";
	ev.data = (uint8_t *)"v";
	ev.data_len = 1;
	expect_apply(&ev, 0);
	ev = ev_make(EV_LINK, f);
	ev.path2 = l;
	ev.fid = file;
	expect_apply(&ev, 0);
	cr_assert_eq(deep_stat(l).st_ino, deep_stat(f).st_ino);
	ev = ev_make(EV_RENAME, f);
	ev.path2 = g;
	ev.fid = file;
	expect_apply(&ev, 0);
	cr_assert_eq(deep_stat(g).st_nlink, 2);
	/* Replayed after the parent is gone: the nearest ancestor's stamp says it was applied. */
	ev = ev_make(EV_UNLINK, g);
	ev.fid = file;
	expect_apply(&ev, 0);
	ev = ev_make(EV_UNLINK, l);
	ev.fid = file;
	expect_apply(&ev, 0);
	ev = ev_make(EV_RMDIR, deep);
	ev.fid = fid_of(45);
	expect_apply(&ev, 0);
	ev = change_event(EV_CHMOD, f, file);
	ev.seq = 47;
	expect_apply(&ev, APPLY_SKIPPED);
}

Test(apply, path_over_the_hard_bound_is_refused)
{
	char *p = hold(malloc(PATH_REL_MAX + 2));
	struct event ev;

	for (int i = 0; i < PATH_REL_MAX + 1; i += 2) {
		p[i] = 'a';
		p[i + 1] = '/';
	}
	p[PATH_REL_MAX] = 'a';
	p[PATH_REL_MAX + 1] = '\0';
	ev = ev_make(EV_CREATE, p);
	ev.mode = S_IFREG | 0644;
	expect_apply(&ev, -ENAMETOOLONG);
	cr_assert_str_eq(why, "path longer than 65535 bytes");
}
