/*
 * checkpoint.c - the journal as the store's write-ahead log: checkpoints,
 * and the redo of data events at start.
 *
 * fsync(2) on the mount makes the journal durable and nothing more: one disk
 * flush, not a journal flush and a store-file flush.  The store is made
 * durable in checkpoints instead.  A checkpoint copies the applied marks
 * (every event up to them is in the store, in the page cache at least),
 * flushes the store's filesystem with syncfs(2), and only then records those
 * marks as the store's durable position (JOURNAL_META_STORED).  A checkpoint
 * runs every `checkpoint` seconds (ledgerfs.conf, 30 by default, the age at
 * which the kernel writes dirty pages back anyway) while events are applied,
 * at a clean stop, and after every change of the store that is not an event
 * applied in order (a snapshot install, a heal), so that the redo below never
 * replays an event over a state it did not build on.
 *
 * A power loss may keep less of the store than the journal shows applied.
 * A journaling filesystem (ext4, XFS) keeps its metadata in the order it was
 * made, so names, modes, xattrs and the version stamps the replay reads are
 * as of some moment, and the replay from the applied marks finishes them as
 * after a kill -9.  File data has no such order: a write whose version stamp
 * survived may have lost its bytes.  So every data event (write, truncate,
 * fallocate) above the store's durable position is written again, in history
 * order (term, origin, seq, as replay.h has it), to the file that holds its
 * fid now (found by its path, or else by a walk of the store), and the
 * file's times are put back as they were.  Writing a run of data events
 * again, in order, ends in the same bytes whatever part of them the store
 * already had.  The redo runs at every start; after a clean stop it finds
 * nothing to do.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/grow.h"
#include "lib/log.h"
#include "lib/treewalk.h"
#include "node/checkpoint.h"
#include "node/node_int.h"
#include "store/path.h"

#define STORED_ENTRY 16 /* u64 origin, u64 seq, little-endian */

int node_stored_load(struct node *n)
{
	uint8_t *val = NULL;
	size_t len = 0, i;
	int r;

	r = journal_meta_get(n->journal, JOURNAL_META_STORED, (void **)&val, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (len % STORED_ENTRY) {
		free(val);
		return -EBADMSG;
	}
	n->stored = malloc(len ? len / STORED_ENTRY * sizeof(*n->stored) : 1);
	if (!n->stored) {
		free(val);
		return -ENOMEM;
	}
	for (i = 0; i < len / STORED_ENTRY; i++)
		n->stored[i] = (struct evid){get_le64(val + i * STORED_ENTRY),
					     get_le64(val + i * STORED_ENTRY + 8)};
	n->nstored = len / STORED_ENTRY;
	n->stored_known = 1;
	free(val);
	return 0;
}

/* The store's durable position for origin; 0 if none.  Under stored_lock. */
static uint64_t stored_seq_locked(struct node *n, uint64_t origin)
{
	uint64_t seq = 0;

	for (size_t i = 0; i < n->nstored; i++)
		if (n->stored[i].origin == origin)
			seq = n->stored[i].seq;
	return seq;
}

static uint64_t stored_seq(struct node *n, uint64_t origin)
{
	uint64_t seq;

	pthread_mutex_lock(&n->stored_lock);
	seq = stored_seq_locked(n, origin);
	pthread_mutex_unlock(&n->stored_lock);
	return seq;
}

uint64_t node_stored_floor(struct node *n, uint64_t origin, uint64_t bound)
{
	uint64_t seq;
	int known;

	pthread_mutex_lock(&n->stored_lock);
	known = n->stored_known;
	seq = stored_seq_locked(n, origin);
	pthread_mutex_unlock(&n->stored_lock);
	return known && seq < bound ? seq : bound;
}

/* Are the marks v[0..k-1] those of the last checkpoint? */
static int stored_same(struct node *n, const struct evid *v, size_t k)
{
	int same;

	pthread_mutex_lock(&n->stored_lock);
	same = n->stored_known && n->nstored == k;
	for (size_t i = 0; same && i < k; i++)
		same = n->stored[i].origin == v[i].origin && n->stored[i].seq == v[i].seq;
	pthread_mutex_unlock(&n->stored_lock);
	return same;
}

/* Record v[0..k-1] as the store's durable position; takes v (malloc'd). */
static int stored_put(struct node *n, struct evid *v, size_t k, int sync)
{
	uint8_t *val = malloc(k ? k * STORED_ENTRY : 1);
	int r;

	if (!val) {
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < k; i++) {
		put_le64(val + i * STORED_ENTRY, v[i].origin);
		put_le64(val + i * STORED_ENTRY + 8, v[i].seq);
	}
	r = journal_meta_put(n->journal, JOURNAL_META_STORED, val, k * STORED_ENTRY, sync);
	free(val);
	if (r < 0) {
		free(v);
		return r;
	}
	pthread_mutex_lock(&n->stored_lock);
	free(n->stored);
	n->stored = v;
	n->nstored = k;
	n->stored_known = 1;
	pthread_mutex_unlock(&n->stored_lock);
	return 0;
}

/* syncfs(2) of the store's filesystem (the root descriptor is O_PATH). */
static int sync_store(struct node *n)
{
	int fd = openat(n->store->root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (syncfs(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int node_checkpoint(struct node *n, int flags)
{
	struct evid *v = NULL;
	size_t k = 0;
	int r;

	pthread_mutex_lock(&n->ckpt_lock);
	r = journal_applied_marks(n->journal, &v, &k);
	if (r == 0 && (flags & NODE_CKPT_IF_MOVED) && stored_same(n, v, k))
		goto out;
	if (r == 0)
		r = sync_store(n);
	if (r == 0) {
		r = stored_put(n, v, k, flags & NODE_CKPT_SYNC);
		v = NULL;
	}
	if (r < 0)
		log_err("%s: store checkpoint failed: %s", n->dir, strerror(-r));
out:
	pthread_mutex_unlock(&n->ckpt_lock);
	free(v);
	return r;
}

static void *checkpointer(void *arg)
{
	struct node *n = arg;
	struct timespec at;

	pthread_mutex_lock(&n->ckpt_stop_lock);
	while (!n->ckpt_stop) {
		clock_gettime(CLOCK_MONOTONIC, &at);
		at.tv_sec += (time_t)n->cfg.checkpoint_sec;
		while (!n->ckpt_stop && !n->ckpt_soon &&
		       pthread_cond_timedwait(&n->ckpt_cv, &n->ckpt_stop_lock, &at) == 0)
			;
		if (n->ckpt_stop)
			break;
		n->ckpt_soon = 0;
		pthread_mutex_unlock(&n->ckpt_stop_lock);
		(void)node_checkpoint(n, NODE_CKPT_IF_MOVED);
		pthread_mutex_lock(&n->ckpt_stop_lock);
	}
	pthread_mutex_unlock(&n->ckpt_stop_lock);
	return NULL;
}

int node_checkpoint_first(struct node *n)
{
	struct evid *v = NULL;
	size_t k = 0;
	int r, known;

	pthread_mutex_lock(&n->stored_lock);
	known = n->stored_known;
	pthread_mutex_unlock(&n->stored_lock);
	if (known)
		return 0;
	r = journal_applied_marks(n->journal, &v, &k);
	return r < 0 ? r : stored_put(n, v, k, 1);
}

int node_checkpointer_start(struct node *n)
{
	pthread_condattr_t ca;
	int r;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->ckpt_cv, &ca);
	pthread_condattr_destroy(&ca);
	n->ckpt_cv_init = 1;
	r = -pthread_create(&n->ckpt_thread, NULL, checkpointer, n);
	if (r == 0)
		n->ckpt_running = 1;
	return r;
}

void node_checkpoint_soon(struct node *n)
{
	if (!n->ckpt_running)
		return;
	pthread_mutex_lock(&n->ckpt_stop_lock);
	n->ckpt_soon = 1;
	pthread_cond_signal(&n->ckpt_cv);
	pthread_mutex_unlock(&n->ckpt_stop_lock);
}

void node_checkpointer_stop(struct node *n)
{
	if (n->ckpt_running) {
		pthread_mutex_lock(&n->ckpt_stop_lock);
		n->ckpt_stop = 1;
		pthread_cond_signal(&n->ckpt_cv);
		pthread_mutex_unlock(&n->ckpt_stop_lock);
		pthread_join(n->ckpt_thread, NULL);
		n->ckpt_running = 0;
	}
	if (n->ckpt_cv_init) {
		pthread_cond_destroy(&n->ckpt_cv);
		n->ckpt_cv_init = 0;
	}
}

/* The redo: one data event to write again, and the files they go to. */
struct redo_event {
	uint64_t term, origin, seq;
	struct fid fid;
	char *path; /* where it was written then; NULL for an unlinked file */
};

struct redo_file {
	struct fid fid;
	int fd; /* -1 while not found */
	struct timespec times[2];
};

struct redo {
	struct node *n;
	struct redo_event *ev;
	size_t nev, ev_cap;
	struct redo_file *f; /* sorted by fid */
	size_t nf, missing;
};

static int fid_cmp(struct fid a, struct fid b)
{
	if (a.origin != b.origin)
		return a.origin < b.origin ? -1 : 1;
	if (a.counter != b.counter)
		return a.counter < b.counter ? -1 : 1;
	return 0;
}

static int file_cmp(const void *a, const void *b)
{
	return fid_cmp(((const struct redo_file *)a)->fid, ((const struct redo_file *)b)->fid);
}

static struct redo_file *file_find(struct redo *rd, struct fid fid)
{
	struct redo_file key = {.fid = fid};

	return bsearch(&key, rd->f, rd->nf, sizeof(*rd->f), file_cmp);
}

static int is_data(uint8_t type)
{
	return type == EV_WRITE || type == EV_TRUNCATE || type == EV_FALLOCATE;
}

/* List the data events of origin above its durable position, up to applied. */
static int collect_origin(struct redo *rd, uint64_t origin, uint64_t applied)
{
	struct node *n = rd->n;
	uint64_t seq = stored_seq(n, origin), trimmed = 0, term;
	int r = journal_trimmed(n->journal, origin, &trimmed);

	if (r < 0)
		return r;
	if (seq < trimmed)
		seq = trimmed;
	for (seq++; seq <= applied; seq++) {
		struct event ev;
		const char *why = NULL;

		if (node_in_tail_locked(n, origin, seq, &term))
			continue;
		r = journal_get(n->journal, origin, seq, 0, &ev, &why);
		if (r == -ENOENT)
			continue;
		if (r < 0) {
			log_err("redo: event %016" PRIx64 ":%" PRIu64 " unreadable: %s", origin,
				seq, why ? why : strerror(-r));
			return r;
		}
		if (is_data(ev.type) && ev.path) {
			if (grow_array(&rd->ev, &rd->ev_cap, rd->nev + 1) < 0 ||
			    !(rd->ev[rd->nev].path = strdup(ev.path))) {
				event_free(&ev);
				return -ENOMEM;
			}
			rd->ev[rd->nev].term = ev.term;
			rd->ev[rd->nev].origin = origin;
			rd->ev[rd->nev].seq = seq;
			rd->ev[rd->nev].fid = ev.fid;
			rd->nev++;
		}
		event_free(&ev);
	}
	return 0;
}

/* History order, as replay.h has it: by term, then origin, then seq. */
static int event_cmp(const void *a, const void *b)
{
	const struct redo_event *x = a, *y = b;

	if (x->term != y->term)
		return x->term < y->term ? -1 : 1;
	if (x->origin != y->origin)
		return x->origin < y->origin ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Open rel for the redo if it holds fid: 0 with *fd, or -ENOENT. */
static int open_holding(int root, int dirfd, const char *rel, struct fid fid, int *fd)
{
	struct fid got;
	struct stat st;
	int r = dirfd >= 0 ? 0 : path_open(root, rel, O_RDWR | O_CLOEXEC | O_NONBLOCK, 0, fd);

	if (dirfd >= 0) {
		*fd = openat(dirfd, rel, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		r = *fd < 0 ? -errno : 0;
	}
	if (r < 0)
		return -ENOENT;
	if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode) || store_get_ids(*fd, &got, NULL) < 0 ||
	    !fid_eq(got, fid)) {
		close(*fd);
		*fd = -1;
		return -ENOENT;
	}
	return 0;
}

static int found(struct redo_file *f)
{
	struct stat st;

	if (fstat(f->fd, &st) < 0)
		return -errno;
	f->times[0] = st.st_atim;
	f->times[1] = st.st_mtim;
	return 0;
}

/* The walk that finds files no event's path leads to any more. */
static int walk_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		      size_t index, size_t count, void *dir, void **sub)
{
	struct redo *rd = tw->arg;
	struct redo_file *f;
	struct fid fid;
	int fd, r;

	(void)index;
	(void)count;
	(void)dir;
	(void)sub;
	if (S_ISDIR(st->st_mode))
		return TREEWALK_DESCEND;
	if (!S_ISREG(st->st_mode))
		return 0;
	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return 0;
	r = store_get_ids(fd, &fid, NULL);
	close(fd);
	if (r < 0 || !(f = file_find(rd, fid)) || f->fd >= 0)
		return 0;
	if (open_holding(-1, dfd, name, fid, &f->fd) == 0 && found(f) == 0)
		rd->missing--;
	return rd->missing ? 0 : -ECANCELED;
}

static int walk_fail(struct treewalk *tw, int err, const char *why)
{
	log_warn("redo: walking the store at %s: %s%s%s", relpath_str(&tw->path), why ? why : "",
		 why ? ": " : "", strerror(-err));
	return 0;
}

static int find_missing(struct redo *rd)
{
	const struct treewalk_ops ops = {.entry = walk_entry, .fail = walk_fail};
	struct treewalk tw = {0};
	int r = treewalk_open(&tw, rd->n->store->root, ".", O_NOFOLLOW);

	if (r == 0)
		r = treewalk_run(&tw, &ops, rd, NULL);
	treewalk_close(&tw);
	return r == -ECANCELED ? 0 : r;
}

/* Find each file: by the path of its latest event, else of earlier ones, else by a walk. */
static int find_files(struct redo *rd)
{
	int root = rd->n->store->root, r;
	size_t i, k;

	rd->f = calloc(rd->nev, sizeof(*rd->f));
	if (!rd->f)
		return -ENOMEM;
	for (i = 0; i < rd->nev; i++)
		rd->f[i] = (struct redo_file){.fid = rd->ev[i].fid, .fd = -1};
	qsort(rd->f, rd->nev, sizeof(*rd->f), file_cmp);
	for (i = k = 0; i < rd->nev; i++)
		if (k == 0 || fid_cmp(rd->f[k - 1].fid, rd->f[i].fid) != 0)
			rd->f[k++] = rd->f[i];
	rd->nf = k;
	for (i = rd->nev; i-- > 0;) {
		struct redo_file *f = file_find(rd, rd->ev[i].fid);

		if (f->fd < 0 && open_holding(root, -1, rd->ev[i].path, f->fid, &f->fd) == 0) {
			r = found(f);
			if (r < 0)
				return r;
		}
	}
	for (i = 0; i < rd->nf; i++)
		rd->missing += rd->f[i].fd < 0;
	return rd->missing ? find_missing(rd) : 0;
}

static int redo_one(struct redo *rd, const struct redo_event *re, struct redo_file *f)
{
	struct event ev;
	const char *why = NULL;
	int r = journal_get(rd->n->journal, re->origin, re->seq, 1, &ev, &why);

	if (r < 0) {
		log_err("redo: event %016" PRIx64 ":%" PRIu64 " unreadable: %s", re->origin,
			re->seq, why ? why : strerror(-r));
		return r;
	}
	r = store_data_change(f->fd, &ev);
	if (r < 0)
		log_err("redo: event %016" PRIx64 ":%" PRIu64 " (%s %s): %s", re->origin, re->seq,
			event_type_name(ev.type), re->path, strerror(-r));
	event_free(&ev);
	return r;
}

int node_redo_data(struct node *n, uint64_t *redone)
{
	struct redo rd = {.n = n};
	struct evid *marks = NULL;
	size_t k = 0, i;
	int r;

	*redone = 0;
	pthread_mutex_lock(&n->stored_lock);
	r = n->stored_known;
	pthread_mutex_unlock(&n->stored_lock);
	if (!r)
		return 0;
	r = journal_applied_marks(n->journal, &marks, &k);
	for (i = 0; r == 0 && i < k; i++)
		r = collect_origin(&rd, marks[i].origin, marks[i].seq);
	free(marks);
	if (rd.nev > 1)
		qsort(rd.ev, rd.nev, sizeof(*rd.ev), event_cmp);
	if (r == 0 && rd.nev)
		r = find_files(&rd);
	for (i = 0; r == 0 && i < rd.nev; i++) {
		struct redo_file *f = file_find(&rd, rd.ev[i].fid);

		if (f->fd < 0)
			continue; /* removed since: its data went with it */
		r = redo_one(&rd, &rd.ev[i], f);
		if (r == 0)
			(*redone)++;
	}
	for (i = 0; i < rd.nf; i++) {
		if (rd.f[i].fd < 0)
			continue;
		if (r == 0 && futimens(rd.f[i].fd, rd.f[i].times) < 0)
			r = -errno;
		close(rd.f[i].fd);
	}
	for (i = 0; i < rd.nev; i++)
		free(rd.ev[i].path);
	free(rd.ev);
	free(rd.f);
	return r;
}
