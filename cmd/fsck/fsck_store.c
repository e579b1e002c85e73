/*
 * fsck_store.c - the store checks of fsck.ledgerfs (checks 5 and 6).
 *
 * What the store must hold is what the journal says: so the journal is
 * replayed, through the same apply engine a mount uses, into an empty
 * reference directory under the private temp directory, and the store is
 * compared with it entry by entry.  Entries are compared on the lines of
 * the tree digest's --list (one hash over type, mode, owner, xattrs, link
 * target, size, contents and mtime, so fsck and `ledgerctl digest` agree
 * on what "equal" means), plus the fid xattr, which the digest leaves out.
 *
 * Under -n, or when the unapplied tail was not replayed, the reference
 * stops at each origin's applied mark: that is what the store should hold
 * now.  Kept-aside tails (rebuild.h) are left out of it once the store was
 * rebuilt without them, and kept in while the store still holds them.
 * Repairs copy from the reference; entries the journal does not know are
 * moved to lost+found, never deleted.  If some event does not apply to the
 * reference, the reference is not trusted and nothing is repaired.
 *
 * Both trees are sorted in walk order (a directory before what it holds),
 * so one merge finds every differing, missing and extra path, and repairs
 * made in that order always find their parent directory in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsck.h"
#include "node/node.h"
#include "store/path.h"
#include "node/replay.h"
#include "store/store.h"

static void fid_str(const struct fsck_entry *e, char *buf, size_t len)
{
	if (e->has_fid)
		snprintf(buf, len, "%016" PRIx64 ":%" PRIu64, e->fid.origin, e->fid.counter);
	else
		snprintf(buf, len, "none");
}

static void ref_forced(void *arg, const struct event *ev, const char *why)
{
	fsck_info(arg, "journal: event %016" PRIx64 ":%" PRIu64 " (%s %s): %s; applied anyway",
		  ev->origin, ev->seq, event_type_name(ev->type), ev->path ? ev->path : "", why);
}

/* Records that do not decode (type 0) were check 1's to report. */
static void ref_failed(void *arg, const struct event *ev, const char *why, int err)
{
	if (!ev->type)
		return;
	fsck_problem(arg, NULL,
		     "journal: event %016" PRIx64 ":%" PRIu64
		     " (%s %s) does not apply to a replay from empty (%s%s%s)",
		     ev->origin, ev->seq, event_type_name(ev->type), ev->path ? ev->path : "",
		     why ? why : "", why ? ": " : "", strerror(-err));
}

static void ref_progress(void *arg, uint64_t n)
{
	fsck_progress(arg, "replaying the journal into a reference: %" PRIu64 " events", n);
}

/*
 * Replay the journal, up to each origin's applied mark, into an empty
 * directory whose root starts with the store root's owner and mode (the
 * journal has no event that made the root).
 */
static int ref_build(struct fsck *f, struct fsck_tree *store, struct fsck_tree *ref, int *failed)
{
	struct replay_hooks hooks = {.arg = f,
				     .upto_applied = 1,
				     .forced = ref_forced,
				     .failed = ref_failed,
				     .progress = ref_progress};
	struct replay_tails tails = {0};
	uint64_t applied, nfailed;
	struct stat st;
	int r;

	if (asprintf(&ref->dir, "%s/reference", f->tmp) < 0) {
		ref->dir = NULL;
		return -ENOMEM;
	}
	if (mkdir(ref->dir, 0700) < 0 || fstat(store->store->root, &st) < 0)
		return -errno;
	r = store_open(ref->dir, &ref->store);
	if (r < 0)
		return r;
	if (fchownat(ref->store->root, "", st.st_uid, st.st_gid, AT_EMPTY_PATH) < 0)
		return -errno;
	r = path_fchmod(ref->store->root, st.st_mode);
	if (r < 0)
		return r;
	r = store_stamp(ref->store, f->cfg.cluster_id);
	if (r < 0) {
		fprintf(stderr,
			"fsck.ledgerfs: %s: cannot set trusted xattrs (%s); point TMPDIR at a "
			"filesystem that has them\n",
			ref->dir, strerror(-r));
		return r;
	}
	r = replay_tails_load(f->j, &tails);
	if (r < 0) {
		fprintf(stderr, "fsck.ledgerfs: %s: kept-aside tails unreadable: %s\n", f->dir,
			strerror(-r));
		return r;
	}
	if (!tails.in_store) {
		hooks.skip = replay_tails_skip;
		hooks.skip_arg = &tails;
	}
	r = replay_journal(f->j, ref->store, &hooks, &applied, &nfailed);
	replay_tails_free(&tails);
	fsck_progress_end(f);
	if (nfailed)
		*failed = 1;
	return r;
}

/* Set e's fid from the reference's entry r. */
static int fid_fix(struct fsck_tree *store, struct fsck_entry *e, const struct fsck_entry *r)
{
	int fd = -1, ret;

	ret = path_open(store->store->root, e->path, O_PATH, 0, &fd);
	if (ret < 0)
		return ret;
	ret = store_set_fid(fd, &r->fid);
	close(fd);
	if (ret == 0) {
		e->fid = r->fid;
		e->has_fid = 1;
	}
	return ret;
}

/* Replace store path e by a hard link to keep (both named in the store). */
static int link_fix(struct fsck *f, struct fsck_tree *store, const char *keep, const char *e)
{
	struct path_at from = {.dirfd = -1}, to = {.dirfd = -1};
	int r;

	r = fsck_move_lost(f, store->store->root, e);
	if (r == 0)
		r = path_at_open(store->store->root, keep, &from);
	if (r == 0)
		r = path_at_open(store->store->root, e, &to);
	if (r == 0 && linkat(from.dirfd, from.base, to.dirfd, to.base, 0) < 0)
		r = -errno;
	path_at_release(&to);
	path_at_release(&from);
	return r;
}

static int fid_order(const void *a, const void *b)
{
	const struct fsck_entry *x = *(const struct fsck_entry *const *)a,
				*y = *(const struct fsck_entry *const *)b;

	if (x->fid.origin != y->fid.origin)
		return x->fid.origin < y->fid.origin ? -1 : 1;
	if (x->fid.counter != y->fid.counter)
		return x->fid.counter < y->fid.counter ? -1 : 1;
	return fsck_path_cmp(x->path, y->path);
}

static int same_inode(const struct fsck_entry *a, const struct fsck_entry *b)
{
	return a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino;
}

/*
 * One group of store entries sharing a fid, from group[0] to group[n-1].
 * An entry whose reference counterpart has another fid takes that one; if
 * several different files keep the fid, the reference holds them as hard
 * links of one file, and so must the store.
 */
static void check_fid_group(struct fsck *f, struct fsck_tree *store, struct fsck_tree *ref, int fix,
			    struct fsck_entry **group, size_t n)
{
	const struct fsck_entry *keep = NULL;
	char have[48], want[48];
	size_t i;

	for (i = 1; i < n && same_inode(group[i], group[0]); i++)
		;
	if (i == n)
		return;
	fid_str(group[0], have, sizeof(have));
	for (i = 0; i < n; i++) {
		struct fsck_entry *e = group[i], *r = fsck_tree_find(ref, e->path);

		if (!r || (r->st.st_mode & S_IFMT) != (e->st.st_mode & S_IFMT))
			continue;
		if (fid_eq(r->fid, e->fid)) {
			if (!keep) {
				keep = e;
			} else if (!same_inode(keep, e)) {
				e->fid_reported = 1;
				if (fsck_problem(
					f,
					fix ? "make it a hard link of that file again, moving this "
					      "copy to lost+found"
					    : NULL,
					"store: %s: shares fid %s with %s but is another file",
					e->esc, have, keep->esc))
					fsck_fix_done(f, link_fix(f, store, keep->path, e->path));
			}
			continue;
		}
		e->fid_reported = 1;
		fid_str(r, want, sizeof(want));
		if (fsck_problem(
			f, fix ? "set it from the journal" : NULL,
			"store: %s: fid %s is also held by another file (the journal says %s)",
			e->esc, have, want))
			fsck_fix_done(f, fid_fix(store, e, r));
	}
}

/*
 * Check 5: every object has a fid, no two files share one.  Entries the
 * reference does not have are left to check 6, which moves them aside.
 */
static int check_fids(struct fsck *f, struct fsck_tree *store, struct fsck_tree *ref, int fix)
{
	struct fsck_entry **byfid = calloc(store->n ? store->n : 1, sizeof(*byfid));
	char want[48];
	size_t n = 0, i, j;

	if (!byfid)
		return -ENOMEM;
	for (i = 0; i < store->n; i++) {
		struct fsck_entry *e = &store->v[i], *r;

		if (e->has_fid) {
			byfid[n++] = e;
			continue;
		}
		r = fsck_tree_find(ref, e->path);
		if (!r || !r->has_fid || (r->st.st_mode & S_IFMT) != (e->st.st_mode & S_IFMT))
			continue;
		e->fid_reported = 1;
		fid_str(r, want, sizeof(want));
		if (fsck_problem(f, fix ? "set it from the journal" : NULL,
				 "store: %s: has no fid (the journal says %s)", e->esc, want))
			fsck_fix_done(f, fid_fix(store, e, r));
	}
	qsort(byfid, n, sizeof(*byfid), fid_order);
	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && fid_eq(byfid[j]->fid, byfid[i]->fid); j++)
			;
		if (j - i > 1)
			check_fid_group(f, store, ref, fix, &byfid[i], j - i);
	}
	free(byfid);
	return 0;
}

/* What differs between two listing lines, for the report. */
static void describe(const struct fsck_entry *s, const struct fsck_entry *r, int fid, char *buf,
		     size_t len)
{
	static const char *const field[] = {"hash", "type", "mode", "owner", "size", "mtime"};
	const char *a = s->attrs, *b = r->attrs;
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < 6; i++) {
		size_t la = strcspn(a, " "), lb = strcspn(b, " ");

		if (i > 0 && (la != lb || memcmp(a, b, la) != 0))
			used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s%s",
						 used ? ", " : "", field[i]);
		a += la + (a[la] == ' ');
		b += lb + (b[lb] == ' ');
	}
	if (!used && strcmp(s->attrs, r->attrs) != 0)
		used += (size_t)snprintf(buf, len, "contents, xattrs or link target");
	if (fid)
		snprintf(buf + used, used < len ? len - used : 0, "%sfid", used ? ", " : "");
}

/* Is path below (not at) prefix? */
static int below(const char *path, const char *prefix)
{
	size_t n = prefix ? strlen(prefix) : 0;

	if (!prefix)
		return 0;
	if (!strcmp(prefix, "."))
		return strcmp(path, ".") != 0;
	return !strncmp(path, prefix, n) && path[n] == '/';
}

/* The merge's memory: subtrees that a move or a copy of their top deals with as a whole. */
struct merge {
	const char *gone;   /* a store subtree moved aside (or to be): skip what is below it */
	const char *copied; /* a reference subtree being copied in: copy what is below it */
	int copy_ok;	    /* the top of copied was made */
};

/* Copy reference entry r into the store where it is absent, as a hard link where it is one. */
static int copy_in(struct fsck_tree *store, struct fsck_tree *ref, const struct fsck_entry *r)
{
	struct path_at src = {.dirfd = -1}, dst = {.dirfd = -1}, other = {.dirfd = -1};
	int ret;

	ret = path_at_open(ref->store->root, r->path, &src);
	if (ret == 0)
		ret = path_at_open(store->store->root, r->path, &dst);
	if (ret < 0)
		goto out;
	if (S_ISREG(r->st.st_mode) && r->st.st_nlink > 1) {
		for (size_t i = 0; i < ref->n; i++) {
			const struct fsck_entry *o = &ref->v[i];
			struct fsck_entry tmp = {.path = o->path};

			if (o == r || !same_inode(o, r))
				continue;
			/* Another name of the same file, in the store already: link to it. */
			if (fsck_entry_load(store, &tmp) < 0 || !tmp.has_fid ||
			    !fid_eq(tmp.fid, r->fid) || !S_ISREG(tmp.st.st_mode) ||
			    path_at_open(store->store->root, o->path, &other) < 0)
				continue;
			if (linkat(other.dirfd, other.base, dst.dirfd, dst.base, 0) == 0) {
				path_at_release(&other);
				goto out;
			}
			path_at_release(&other);
		}
	}
	ret = fsck_copy_new(src.dirfd, src.base, &r->st, dst.dirfd, dst.base);
out:
	path_at_release(&dst);
	path_at_release(&src);
	return ret;
}

/* Make store entry s equal to reference entry r, in place where the type allows. */
static int replace(struct fsck *f, struct fsck_tree *store, struct fsck_tree *ref,
		   const struct fsck_entry *s, const struct fsck_entry *r)
{
	struct path_at src = {.dirfd = -1}, dst = {.dirfd = -1};
	mode_t type = s->st.st_mode & S_IFMT;
	int ret;

	if (type != (r->st.st_mode & S_IFMT) || (type != S_IFREG && type != S_IFDIR)) {
		ret = fsck_move_lost(f, store->store->root, s->path);
		return ret < 0 ? ret : copy_in(store, ref, r);
	}
	/* The store's version may be the only copy of something: keep it. */
	ret = type == S_IFREG ? fsck_save_lost(f, store->store->root, s->path) : 0;
	if (ret == 0)
		ret = path_at_open(ref->store->root, r->path, &src);
	if (ret == 0)
		ret = path_at_open(store->store->root, s->path, &dst);
	if (ret == 0)
		ret = fsck_copy_over(src.dirfd, src.base, &r->st, dst.dirfd, dst.base);
	path_at_release(&dst);
	path_at_release(&src);
	return ret;
}

static void merge_extra(struct fsck *f, struct fsck_tree *store, struct merge *m,
			const struct fsck_entry *s, int fix)
{
	if (below(s->path, m->gone))
		return;
	m->gone = s->path;
	if (fsck_problem(f, fix ? "move it to " FSCK_LOST_FOUND : NULL,
			 "store: %s: not in the journal%s", s->esc,
			 S_ISDIR(s->st.st_mode) ? " (nor anything below it)" : ""))
		fsck_fix_done(f, fsck_move_lost(f, store->store->root, s->path));
}

static void merge_missing(struct fsck *f, struct fsck_tree *store, struct fsck_tree *ref,
			  struct merge *m, const struct fsck_entry *r, int fix)
{
	int ret;

	if (below(r->path, m->copied)) {
		if (!m->copy_ok)
			return;
		ret = copy_in(store, ref, r);
		if (ret < 0)
			fsck_problem(f, NULL, "store: %s: cannot be copied from the journal: %s",
				     r->esc, strerror(-ret));
		return;
	}
	m->copied = r->path;
	m->copy_ok = 0;
	if (fsck_problem(f, fix ? "copy it from the journal" : NULL, "store: %s: missing%s", r->esc,
			 S_ISDIR(r->st.st_mode) ? " (with everything below it)" : "")) {
		ret = copy_in(store, ref, r);
		m->copy_ok = ret == 0;
		fsck_fix_done(f, ret);
	}
}

static void merge_both(struct fsck *f, struct fsck_tree *store, struct fsck_tree *ref,
		       struct merge *m, struct fsck_entry *s, const struct fsck_entry *r, int fix)
{
	int fid = !s->fid_reported && (s->has_fid != r->has_fid || !fid_eq(s->fid, r->fid));
	char what[128];
	int ret;

	if (!fid && !strcmp(s->attrs, r->attrs))
		return;
	describe(s, r, fid, what, sizeof(what));
	if (!fsck_problem(
		f,
		fix ? "replace it with the journal's version (a regular file's old version is "
		      "kept in " FSCK_LOST_FOUND ")"
		    : NULL,
		"store: %s: differs from the journal (%s)", s->esc, what))
		return;
	ret = replace(f, store, ref, s, r);
	if ((s->st.st_mode & S_IFMT) != (r->st.st_mode & S_IFMT) ||
	    (!S_ISREG(s->st.st_mode) && !S_ISDIR(s->st.st_mode))) {
		/* Moved aside and copied in anew: both subtrees are dealt with as wholes. */
		m->gone = s->path;
		m->copied = r->path;
		m->copy_ok = ret == 0;
	}
	fsck_fix_done(f, ret);
}

/* Check 6: one merge of the two sorted listings. */
static void check_tree(struct fsck *f, struct fsck_tree *store, struct fsck_tree *ref, int fix)
{
	struct merge m = {0};
	size_t i = 0, k = 0;

	while (i < store->n || k < ref->n) {
		int c = i == store->n ? 1
			: k == ref->n ? -1
				      : fsck_path_cmp(store->v[i].path, ref->v[k].path);

		if (c < 0)
			merge_extra(f, store, &m, &store->v[i++], fix);
		else if (c > 0)
			merge_missing(f, store, ref, &m, &ref->v[k++], fix);
		else
			merge_both(f, store, ref, &m, &store->v[i++], &ref->v[k++], fix);
	}
}

/* The store must be this cluster's before anything in it is compared, let alone changed. */
static int check_stamp(struct fsck *f, struct fsck_tree *store)
{
	int r;

	r = store_check_stamp(store->store, f->cfg.cluster_id);
	if (r == -ENODATA)
		fsck_problem(f, NULL,
			     "store: %s has no ledgerfs stamp; is its disk mounted? "
			     "not checking it",
			     store->dir);
	else if (r == -ESTALE)
		fsck_problem(f, NULL, "store: %s belongs to another cluster; not checking it",
			     store->dir);
	else if (r < 0)
		fprintf(stderr, "fsck.ledgerfs: %s: cannot read the store stamp: %s\n", store->dir,
			strerror(-r));
	return r;
}

/* Has any origin a trimmed prefix? */
static int journal_trimmed_any(struct fsck *f)
{
	struct journal_iter *it = NULL;
	uint64_t a, b, seq = 0;
	const uint8_t *val;
	size_t len;
	int any = 0;

	if (journal_iter_new(f->j, JOURNAL_APPLIED, 0, 0, &it) < 0)
		return 0;
	while (!any && journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0)
		any = journal_trimmed(f->j, a, &seq) == 0 && seq > 0;
	journal_iter_free(it);
	return any;
}

int fsck_check_store(struct fsck *f)
{
	struct fsck_tree store = {0}, ref = {0};
	unsigned long fixed;
	int failed = 0, fix, r;

	if (asprintf(&store.dir, "%s/%s", f->real, NODE_STORE_DIR) < 0) {
		store.dir = NULL;
		return -ENOMEM;
	}
	r = store_open(store.dir, &store.store);
	if (r < 0) {
		fprintf(stderr, "fsck.ledgerfs: %s: %s\n", store.dir, strerror(-r));
		goto out;
	}
	r = check_stamp(f, &store);
	if (r == -ENODATA || r == -ESTALE) {
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	if (journal_trimmed_any(f)) {
		printf("note: the journal no longer holds the events trimmed after every member "
		       "confirmed them, so the store cannot be compared with a replay of it; only "
		       "its stamp was checked\n");
		goto out;
	}
	r = ref_build(f, &store, &ref, &failed);
	if (r < 0) {
		fprintf(stderr, "fsck.ledgerfs: building the reference store in %s failed: %s\n",
			ref.dir ? ref.dir : f->tmp, strerror(-r));
		goto out;
	}
	if (f->tail_left)
		printf("note: the unapplied events are not replayed, so the store is compared with "
		       "the journal up to its applied marks; the store may hold some of those "
		       "events already\n");
	if (failed)
		printf(
		    "note: the journal does not replay cleanly, so the store is compared with an "
		    "incomplete reference and nothing in it is repaired\n");
	r = fsck_tree_load(f, &store);
	if (r == 0)
		r = fsck_tree_load(f, &ref);
	fsck_progress_end(f);
	if (r < 0)
		goto out;
	fsck_info(f, "store: %zu entries, reference: %zu entries", store.n, ref.n);
	fix = !failed;
	fixed = f->fixed;
	r = check_fids(f, &store, &ref, fix);
	if (r == 0)
		check_tree(f, &store, &ref, fix);
	/*
	 * A repair can make two copies of one hard-linked file share its fid:
	 * a name whose fid was set, or whose contents were copied over, apart
	 * from the file's other names.  After repairs, the fids are looked at
	 * once more on the repaired store, which links such copies again.
	 */
	if (r == 0 && fix && f->fixed > fixed) {
		fsck_tree_unload(&store);
		r = fsck_tree_load(f, &store);
		fsck_progress_end(f);
		if (r == 0)
			r = check_fids(f, &store, &ref, fix);
	}
out:
	fsck_tree_free(&ref);
	fsck_tree_free(&store);
	return r;
}
