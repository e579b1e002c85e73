/*
 * cmd_backup.c - "ledgerctl backup": a consistent backup of a node's store,
 * as of one journal position, taken without stopping its writes; and
 * "backup list", "verify" and "expire" of a repository (backup/repo.h).
 *
 * Consistency is the snapshot resync's (docs/internals.md, "Backups and
 * the archive"): read the applied vector from, copy the store, read the
 * vector pos, and keep the events (from, pos] with the files; a restore
 * lays the files down and replays those events leniently
 * (backup/events.h), which takes every object to pos.  That holds when:
 *   - pos counts every change the copy saw: a running node reads its
 *     vector under the node lock (the control socket's "applied"), so it
 *     counts every change in the store, and pos is read after the last
 *     read of the store;
 *   - each object's version is read before its metadata and contents, so
 *     it never claims a change the copy lacks;
 *   - the names are one walk's during which nothing was renamed or linked
 *     (store_moves(), in the same reply; else walk again, and after
 *     BACKUP_FREE_WALKS once more while the node holds its lock for us,
 *     "pause"): no object seen twice or missed.  A file whose name no longer holds it when a worker
 *     reads it is found by its fid in a later scan of the store, or, not
 *     found, was removed (stored empty: the replay removes it).
 * Nothing is written in the node's directory.  The events come from a
 * private copy of its journal (journal_copy.h): the daemon holds a running
 * node's, and a stopped node's disk may be a dead machine's, mounted
 * read-only.  A stopped node is not opened, so its unapplied tail (a crash
 * between journal and store) is not replayed into its store: pos goes to
 * the end of each origin's journaled run and the restore replays it with
 * the rest; a node that starts meanwhile fails the backup.
 *
 * The regular files are split into subtasks (runs of files in walk order,
 * so a subtree stays together, of at most BACKUP_TASK_FILES files or
 * BACKUP_TASK_BYTES bytes) that --jobs threads take in turn.  A subtask
 * that fails is retried alone (--retries); one whose failure belongs to a
 * repository (full, gone) marks that repository failed, named, and the
 * others go on.  An object unchanged since the last backup into the
 * first repository (backup/dcache.h: same inode, size, mtime and ctime)
 * is not opened: the walk copies its entry from that backup's manifest,
 * digest and xattrs included, once every repository holds a regular
 * file's blob.  Other files are hashed and copied into each repository
 * lacking the blob, so a rerun of a backup cut short uploads nothing
 * twice; a worker's blobs are made durable together, one syncfs per
 * BACKUP_BATCH_BLOBS, before they are named (backup/repo.h).  The events
 * blob and the manifest go last, after a syncfs of the repository; a
 * backup of a running node whose span holds no event reads the node's
 * term history from its control socket instead of a copy of its journal.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "backup/archive.h"
#include "backup/dcache.h"
#include "backup/events.h"
#include "backup/repo.h"
#include "cmd.h"
#include "ctl_socket.h"
#include "journal/journal_copy.h"
#include "journal_arg.h"
#include "lib/buf.h"
#include "lib/bytes.h"
#include "lib/config.h"
#include "lib/grow.h"
#include "lib/progress.h"
#include "lib/treewalk.h"
#include "node/node.h"
#include "node/replay.h"
#include "repl/control.h"
#include "repl/repl.h"
#include "store/xattr_at.h"

#define BACKUP_MAX_REPOS  16
#define BACKUP_MAX_JOBS	  64
#define BACKUP_TASK_FILES 256
#define BACKUP_TASK_BYTES (64u << 20)
/* Blobs a worker writes before one syncfs makes them durable and they are named. */
#define BACKUP_BATCH_BLOBS 64
#define BACKUP_BATCH_BYTES (32u << 20)
/* Walks that may see names move before one under the node's lock ("pause"). */
#define BACKUP_FREE_WALKS  3
#define BACKUP_IO	   (1u << 20)
#define BACKUP_FILE_TRIES  5
#define BACKUP_XATTR_LIST  65536
#define BACKUP_XATTR_VALUE 65536
#define BACKUP_ERR	   (2 * PATH_MAX + 512)

struct bk_repo {
	const char *path;
	struct repo *r;
	int failed;			 /* guarded by backup.lock */
	char err[BACKUP_ERR + PATH_MAX]; /* guarded by backup.lock: why it failed */
	atomic_uint_fast64_t new_bytes, new_blobs, reused_bytes;
	char manifest[128];
};

/* A run of regular files (indices into files[]) one worker backs up. */
struct bk_task {
	size_t first, count;
	uint64_t bytes;
};

/* What the walk keeps of a regular file to find its hard links. */
struct bk_inode {
	dev_t dev;
	ino_t ino;
	size_t entry;
};

struct backup {
	const char *dir;
	struct config cfg;
	char store[PATH_MAX];
	int store_fd;
	/* The source: a running node (sock) or one we opened (n). */
	int running;
	char sock[PATH_MAX];
	struct journal_copy jc;	   /* a stopped node's journal, a private copy */
	struct replay_tails tails; /* its kept-aside events */
	struct evid from[REPL_MAX_ORIGINS], pos[REPL_MAX_ORIGINS];
	size_t nfrom, npos;
	uint64_t moves0, moves1;
	uint64_t term; /* the source's term and fences, read with the events */
	struct manifest_fence *fences;
	uint32_t nfences;
	size_t fences_cap;

	struct bk_repo repos[BACKUP_MAX_REPOS];
	size_t nrepos;
	unsigned jobs, retries;

	/* What the backup found: entries, hard links, subtasks. */
	struct manifest m;
	struct bk_inode *inodes;
	size_t ninodes, inodes_cap;
	size_t *files; /* manifest entries the workers back up */
	size_t nfiles, files_cap;
	uint8_t *lost;		/* per entry: its name no longer held its file when read */
	uint64_t found_removed; /* lost files not found again: removed */
	uint64_t moved;		/* lost files found under another name */
	/*
	 * The digest cache of the first repository and the manifest its
	 * entries index (prev, when have_prev), and what this backup found.
	 */
	struct dcache cache;
	struct manifest prev;
	int have_prev;
	struct dcache_entry *seen; /* per entry */
	uint8_t *seen_ok;	   /* per entry: seen[] holds a settled object's entry */
	size_t seen_n, seen_cap;   /* initialised entries of seen[] and seen_ok[]; allocated */
	atomic_uint_fast64_t cached_files;
	uint64_t reused; /* entries reuse_entry() copied (the walk's thread) */
	struct bk_task *tasks;
	size_t ntasks;
	uint64_t total_bytes;

	pthread_mutex_t lock;
	size_t next_task;			    /* guarded by lock */
	int fatal;				    /* guarded by lock */
	char fatal_msg[BACKUP_ERR + PATH_MAX + 64]; /* guarded by lock */
	int redo;				    /* a directory moved under the walk */
	uint64_t retried;			    /* guarded by lock */
	atomic_uint_fast64_t read_bytes;
	struct progress prog;

	const char *fault_path; /* LEDGERFS_FAULT_BACKUP_FAIL_ONCE */
	atomic_int fault_fired;
	unsigned fault_delay_ms; /* LEDGERFS_FAULT_BACKUP_DELAY_MS: per file */
	unsigned walk_delay_ms;	 /* LEDGERFS_FAULT_BACKUP_WALK_DELAY_MS: per entry walked */
	int hold_fd;		 /* the "pause" connection while the node lock is held, or -1 */
};

static void backup_usage(FILE *out)
{
	fputs(
	    "usage: ledgerctl backup NODE_DIR --to REPO [--to REPO ...] [--jobs N] [--retries N]\n"
	    "       ledgerctl backup list REPO\n"
	    "       ledgerctl backup verify REPO\n"
	    "       ledgerctl backup expire REPO (--keep-last N | --keep-within DURATION)\n"
	    "\n"
	    "Back up a node's store, as of one position of its journal, into one or more\n"
	    "repositories, without stopping its writes.  Back up a replica or a --serve\n"
	    "node so the primary is not loaded; a stopped node works too, even from a disk\n"
	    "mounted read-only: nothing is written in NODE_DIR.\n"
	    "\n"
	    "A repository is a directory (made on first use): content-addressed blobs in\n"
	    "REPO/packs, one manifest per backup in REPO/manifests.  A second backup stores\n"
	    "only contents the repository lacks; a backup cut short and run again uploads\n"
	    "nothing twice.  The manifest records the journal position, every file's\n"
	    "metadata and SHA-256, and the events that ran while the store was copied,\n"
	    "which a restore replays.\n"
	    "\n"
	    "  --to REPO       a repository (repeat for several: each gets the backup; one\n"
	    "                  that fails is named and the others complete)\n"
	    "  --jobs N        worker threads (default: the number of CPUs)\n"
	    "  --retries N     times a failed subtask is retried (default 3)\n"
	    "  -h, --help      this help\n"
	    "\n"
	    "list prints the backups of REPO, oldest first.  verify re-reads every blob\n"
	    "against its name and every manifest against its checksum, naming what is\n"
	    "corrupt or missing.  expire removes the backups that are neither among the\n"
	    "last N nor younger than DURATION (30s, 90m, 12h, 7d, 2w; both: either\n"
	    "keeps), then the blobs no kept backup names and the archived journal\n"
	    "segments no kept backup's point-in-time restores need (those at or below\n"
	    "every kept backup's position); it waits for no backup: it refuses while\n"
	    "one or a restore runs on REPO.\n"
	    "\n"
	    "On a terminal a progress line (rate, time left) goes to stderr; a summary\n"
	    "line is printed at the end.  Exit status: 0 done (or verified), 1 failed in\n"
	    "any repository (or corruption found), 2 usage error.\n",
	    out);
}

/* ---- the source's position ----------------------------------------------- */

/* Parse "ok: moves=M ORIGIN:SEQ ..." into vec.  0 or -1 with a message. */
static int parse_applied(struct backup *b, const char *reply, struct evid *vec, size_t *n,
			 uint64_t *moves)
{
	const char *p = reply + strlen(CTL_OK_PREFIX);
	char *end;

	*n = 0;
	if (strncmp(reply, CTL_OK_PREFIX, strlen(CTL_OK_PREFIX)) || strncmp(p, "moves=", 6))
		goto bad;
	*moves = strtoull(p + 6, &end, 10);
	p = end;
	while (*p == ' ') {
		if (*n == REPL_MAX_ORIGINS)
			goto bad;
		vec[*n].origin = strtoull(p + 1, &end, 16);
		if (*end != ':')
			goto bad;
		vec[*n].seq = strtoull(end + 1, &end, 10);
		p = end;
		(*n)++;
	}
	if (*p != '\n' && *p != '\0')
		goto bad;
	return 0;
bad:
	fprintf(stderr, "ledgerctl: backup: %s: unexpected reply to \"applied\": %.200s\n", b->sock,
		reply);
	return -1;
}

/* Let go of the node lock a "pause" took (close the connection); no-op without one. */
static void let_go(struct backup *b)
{
	if (b->hold_fd >= 0)
		close(b->hold_fd);
	b->hold_fd = -1;
}

/*
 * The source's applied vector (and moves) now.  With hold, a running node
 * keeps its node lock, so its store stays as it is, until let_go().  0 or
 * -1 with a message.
 */
static int source_vector_held(struct backup *b, struct evid *vec, size_t *n, uint64_t *moves,
			      int hold)
{
	struct journal_iter *it = NULL;
	struct journal *j;
	struct buf reply = BUF_INIT;
	uint64_t a, bb;
	const uint8_t *val;
	size_t len;
	int r;

	if (b->running) {
		r = hold ? ctl_hold(b->sock, "pause", &reply, &b->hold_fd)
			 : ctl_ask(b->sock, "applied", &reply);
		if (r == 0 && buf_put(&reply, "", 1) < 0)
			r = -ENOMEM;
		if (r < 0) {
			fprintf(stderr, "ledgerctl: backup: %s: %s (%s)\n", b->sock, strerror(-r),
				ctl_failure_meaning(r));
			buf_free(&reply);
			return -1;
		}
		r = parse_applied(b, (const char *)reply.data, vec, n, moves);
		buf_free(&reply);
		if (r < 0)
			let_go(b);
		return r;
	}
	j = b->jc.journal;
	*moves = 0;
	*n = 0;
	vec[(*n)++] = (struct evid){journal_node_id(j), journal_applied(j, journal_node_id(j))};
	r = journal_iter_new(j, JOURNAL_APPLIED, 0, 0, &it);
	while (r == 0 && (r = journal_iter_next(it, &a, &bb, NULL, NULL, &val, &len)) > 0) {
		if (a == journal_node_id(j))
			continue;
		if (*n == REPL_MAX_ORIGINS) {
			r = -E2BIG;
			break;
		}
		vec[(*n)++] = (struct evid){a, journal_applied(j, a)};
	}
	journal_iter_free(it);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: backup: %s/%s: reading the applied marks: %s\n", b->dir,
			NODE_JOURNAL_DIR, strerror(-r));
		return -1;
	}
	return 0;
}

static int source_vector(struct backup *b, struct evid *vec, size_t *n, uint64_t *moves)
{
	return source_vector_held(b, vec, n, moves, 0);
}

/* ---- the walk ------------------------------------------------------------- */

/* Every xattr of fd into a manifest blob. */
static int read_xattrs(int fd, bool opath, struct manifest_entry *e)
{
	char *names = malloc(BACKUP_XATTR_LIST);
	uint8_t *val = malloc(BACKUP_XATTR_VALUE);
	struct buf blob = BUF_INIT;
	ssize_t n, v;
	char *p;
	int r = 0;

	if (!names || !val) {
		r = -ENOMEM;
		goto out;
	}
	n = xattr_at_list(fd, opath, names, BACKUP_XATTR_LIST);
	if (n < 0) {
		r = errno == ENOTSUP ? 0 : -errno;
		goto out;
	}
	for (p = names; p < names + n; p += strlen(p) + 1) {
		size_t nl = strlen(p);

		v = xattr_at_get(fd, opath, p, val, BACKUP_XATTR_VALUE);
		if (v < 0 && errno == ENODATA)
			continue;
		if (v < 0) {
			r = -errno;
			goto out;
		}
		if (buf_put16(&blob, (uint16_t)nl) < 0 || buf_put(&blob, p, nl) < 0 ||
		    buf_put32(&blob, (uint32_t)v) < 0 || buf_put(&blob, val, (size_t)v) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	free(e->xattrs);
	e->xattrs = blob.data;
	e->xattrs_len = (uint32_t)blob.len;
	blob = (struct buf)BUF_INIT;
out:
	buf_free(&blob);
	free(names);
	free(val);
	return r;
}

static void take_stat(struct manifest_entry *e, const struct stat *st)
{
	e->mode = st->st_mode;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	e->mtime_sec = st->st_mtim.tv_sec;
	e->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	e->size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
	e->rdev = (uint64_t)st->st_rdev;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int repo_failed(struct backup *b, size_t k)
{
	int f;

	pthread_mutex_lock(&b->lock);
	f = b->repos[k].failed;
	pthread_mutex_unlock(&b->lock);
	return f;
}

/* Make seen[] and seen_ok[] hold n entries, the new ones empty.  0 or -ENOMEM. */
static int seen_reserve(struct backup *b, size_t n)
{
	size_t cap = b->seen_cap;

	if (n <= b->seen_n)
		return 0;
	if (grow_array(&b->seen, &cap, n) < 0)
		return -ENOMEM;
	if (cap > b->seen_cap) {
		uint8_t *ok = realloc(b->seen_ok, cap);

		if (!ok) {
			b->seen_cap = cap; /* seen[] is that large; seen_ok[] still seen_cap */
			return -ENOMEM;
		}
		b->seen_ok = ok;
		b->seen_cap = cap;
	}
	memset(b->seen + b->seen_n, 0, (n - b->seen_n) * sizeof(*b->seen));
	memset(b->seen_ok + b->seen_n, 0, n - b->seen_n);
	b->seen_n = n;
	return 0;
}

/* Remember what entry i (just added) holds, for the next backup's cache if settled. */
static int seen_note(struct backup *b, size_t i, const struct stat *st,
		     const uint8_t sha[MANIFEST_SHA], int settled)
{
	if (seen_reserve(b, i + 1) < 0)
		return -ENOMEM;
	dcache_entry_set(&b->seen[i], st, (uint32_t)i, sha);
	b->seen_ok[i] = (uint8_t)settled;
	return 0;
}

/*
 * 1 if every repository still in the backup, from the first-th on, holds
 * the blob: 0 for all of them, 1 for all but the one whose digest cache
 * and last manifest the backup reuses.
 */
static int repos_have(struct backup *b, size_t first, const uint8_t sha[MANIFEST_SHA])
{
	size_t k;

	for (k = first; k < b->nrepos; k++)
		if (!repo_failed(b, k) && repo_blob_has(b->repos[k].r, sha) != 1)
			return 0;
	return 1;
}

/*
 * An object the digest cache says is unchanged since the last backup
 * (st, from the walk, matches its entry): its entry copied from that
 * backup's manifest, with the name it has now.  Its state then is its
 * state at this walk, as if it had been read now.  1 when added, 0 when
 * it must be read, -ENOMEM.
 */
static int reuse_entry(struct backup *b, const struct stat *st, const char *path)
{
	struct manifest_entry e = {.link = MANIFEST_NOLINK};
	const struct manifest_entry *old;
	const struct dcache_entry *c;
	int r;

	if (!b->have_prev || !(c = dcache_find(&b->cache, st)) || c->index >= b->prev.n)
		return 0;
	old = &b->prev.e[c->index];
	if (old->mode != (uint32_t)st->st_mode || old->link != MANIFEST_NOLINK ||
	    (S_ISREG(st->st_mode) && (!old->has_sha || memcmp(old->sha, c->sha, MANIFEST_SHA) ||
				      !repos_have(b, 1, old->sha))))
		return 0;
	take_stat(&e, st);
	e.path = strdup(path);
	e.target = old->target ? strdup(old->target) : NULL;
	e.xattrs = old->xattrs_len ? malloc(old->xattrs_len) : NULL;
	if (!e.path || (old->target && !e.target) || (old->xattrs_len && !e.xattrs)) {
		manifest_entry_free(&e);
		return -ENOMEM;
	}
	if (old->xattrs_len)
		memcpy(e.xattrs, old->xattrs, old->xattrs_len);
	e.xattrs_len = old->xattrs_len;
	if (S_ISREG(st->st_mode)) {
		e.has_sha = 1;
		memcpy(e.sha, old->sha, MANIFEST_SHA);
	}
	r = manifest_add(&b->m, &e);
	if (r == 0)
		r = seen_note(b, b->m.n - 1, st, c->sha, 1);
	if (r == 0)
		b->reused++;
	if (r == 0 && S_ISREG(st->st_mode))
		b->cached_files++;
	return r < 0 ? r : 1;
}

/*
 * An object that is not a regular file: its xattrs first (its version
 * among them), then its metadata, so the version never claims a change
 * the metadata lacks.
 */
static int record_object(struct backup *b, int dfd, const char *name, const char *path,
			 const struct stat *lst)
{
	struct manifest_entry e = {.link = MANIFEST_NOLINK};
	struct stat st;
	char target[EVENT_MAX_TARGET + 1];
	ssize_t tl;
	int fd, r;

	fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* gone: its removal is replayed */
	r = read_xattrs(fd, true, &e);
	if (r == 0 && fstat(fd, &st) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		goto fail;
	if ((st.st_mode & S_IFMT) != (lst->st_mode & S_IFMT)) {
		r = 0; /* replaced meanwhile: the events that did it are replayed */
		goto fail;
	}
	take_stat(&e, &st);
	if (S_ISLNK(st.st_mode)) {
		tl = readlinkat(dfd, name, target, sizeof(target) - 1);
		if (tl < 0) {
			r = errno == ENOENT ? 0 : -errno;
			goto fail;
		}
		target[tl] = '\0';
		e.target = strdup(target);
		if (!e.target) {
			r = -ENOMEM;
			goto fail;
		}
	}
	e.path = strdup(path);
	if (!e.path) {
		r = -ENOMEM;
		goto fail;
	}
	r = manifest_add(&b->m, &e);
	return r < 0 ? r : seen_note(b, b->m.n - 1, &st, NULL, dcache_settled(&st, now_ns()));
fail:
	manifest_entry_free(&e);
	return r;
}

static int walk_enter(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	struct backup *b = tw->arg;
	struct manifest_entry e = {.link = MANIFEST_NOLINK};
	struct stat now;
	int r;

	if (tw->depth != 0)
		return 0;
	/* The root: "". */
	r = reuse_entry(b, st, "");
	if (r != 0)
		return r < 0 ? r : 0;
	r = read_xattrs(fd, false, &e);
	if (r == 0 && fstat(fd, &now) < 0)
		r = -errno;
	if (r == 0) {
		take_stat(&e, &now);
		e.path = strdup("");
		r = e.path ? manifest_add(&b->m, &e) : -ENOMEM;
		if (r == 0)
			return seen_note(b, b->m.n - 1, &now, NULL, dcache_settled(&now, now_ns()));
	}
	if (r < 0)
		manifest_entry_free(&e);
	return r;
}

static int walk_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		      size_t index, size_t count, void *dir, void **sub)
{
	struct backup *b = tw->arg;
	const char *path = relpath_str(&tw->path);
	struct manifest_entry e = {.link = MANIFEST_NOLINK};
	int fd, r;

	if (b->walk_delay_ms)
		usleep(b->walk_delay_ms * 1000u);
	if (!S_ISREG(st->st_mode)) {
		size_t before = b->m.n;

		r = reuse_entry(b, st, path);
		if (r == 0)
			r = record_object(b, dfd, name, path, st);
		if (r < 0)
			return r;
		/* Into a directory only if it is still one (its removal is replayed). */
		return S_ISDIR(st->st_mode) && b->m.n > before ? TREEWALK_DESCEND : 0;
	}
	/*
	 * A regular file: unchanged, its entry is the last backup's; else a
	 * worker reads it, and the walk places it and notes its fid.
	 */
	r = reuse_entry(b, st, path);
	if (r < 0)
		return r;
	if (r > 0)
		goto placed;
	fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* gone: its removal is replayed */
	r = read_xattrs(fd, true, &e);
	close(fd);
	take_stat(&e, st);
	e.path = r == 0 ? strdup(path) : NULL;
	if (r < 0 || !e.path) {
		manifest_entry_free(&e);
		return r < 0 ? r : -ENOMEM;
	}
	r = manifest_add(&b->m, &e);
	if (r < 0)
		return r;
placed:
	if (st->st_nlink > 1) {
		if (grow_array(&b->inodes, &b->inodes_cap, b->ninodes + 1) < 0)
			return -ENOMEM;
		b->inodes[b->ninodes++] = (struct bk_inode){st->st_dev, st->st_ino, b->m.n - 1};
	}
	return 0;
}

static int walk_fail(struct treewalk *tw, int err, const char *why)
{
	struct backup *b = tw->arg;

	/* A directory moved or removed under the walk: walk again. */
	if (err == -EAGAIN || err == -ENOENT || err == -ESTALE) {
		b->redo = 1;
		return err;
	}
	fprintf(stderr, "ledgerctl: backup: %s/%s: %s\n", b->store, relpath_str(&tw->path),
		why ? why : strerror(-err));
	return err;
}

static int cmp_inode(const void *x, const void *y)
{
	const struct bk_inode *a = x, *c = y;

	if (a->dev != c->dev)
		return a->dev < c->dev ? -1 : 1;
	if (a->ino != c->ino)
		return a->ino < c->ino ? -1 : 1;
	return a->entry < c->entry ? -1 : a->entry > c->entry;
}

/* Hard links: each name after the first of an inode is a link of the first. */
static void find_links(struct backup *b)
{
	size_t i;

	if (b->ninodes)
		qsort(b->inodes, b->ninodes, sizeof(*b->inodes), cmp_inode);
	for (i = 1; i < b->ninodes; i++)
		if (b->inodes[i].dev == b->inodes[i - 1].dev &&
		    b->inodes[i].ino == b->inodes[i - 1].ino) {
			struct manifest_entry *e = &b->m.e[b->inodes[i].entry];

			e->link = b->m.e[b->inodes[i - 1].entry].link != MANIFEST_NOLINK
				      ? b->m.e[b->inodes[i - 1].entry].link
				      : b->inodes[i - 1].entry;
			e->has_sha = 0; /* a reused entry's: the link's target has it */
		}
}

/* Split the regular files (not links) into subtasks. */
static int plan_tasks(struct backup *b)
{
	size_t i, cap = 0;

	for (i = 0; i < b->m.n; i++) {
		struct manifest_entry *e = &b->m.e[i];

		if (!S_ISREG(e->mode) || e->link != MANIFEST_NOLINK || e->has_sha)
			continue; /* not a file, a link, or reused from the last backup */
		if (grow_array(&b->files, &b->files_cap, b->nfiles + 1) < 0)
			return -ENOMEM;
		b->files[b->nfiles++] = i;
		b->total_bytes += e->size;
		if (!b->ntasks || b->tasks[b->ntasks - 1].count == BACKUP_TASK_FILES ||
		    b->tasks[b->ntasks - 1].bytes >= BACKUP_TASK_BYTES) {
			if (grow_array(&b->tasks, &cap, b->ntasks + 1) < 0)
				return -ENOMEM;
			b->tasks[b->ntasks++] = (struct bk_task){b->nfiles - 1, 0, 0};
		}
		b->tasks[b->ntasks - 1].count++;
		b->tasks[b->ntasks - 1].bytes += e->size;
	}
	return 0;
}

/* ---- the workers ---------------------------------------------------------- */

struct worker {
	struct backup *b;
	pthread_t thread;
	uint8_t *buf;
	char err[BACKUP_ERR + PATH_MAX];
	/* A pool worker's blobs of its subtask, per repository (else NULL: one at a time). */
	struct repo_batch *batch;
};

/*
 * 1 if entries a and b hold the same fid, or neither has one (a file a
 * crash left without its fid, which the node adopts on replay: nothing
 * tells it from another, so it is taken as it is).
 */
static int same_fid(const struct manifest_entry *a, const struct manifest_entry *b)
{
	const uint8_t *va, *vb;
	uint32_t la, lb;
	int ha = manifest_xattr(a, STORE_XATTR_FID, &va, &la),
	    hb = manifest_xattr(b, STORE_XATTR_FID, &vb, &lb);

	if (!ha && !hb)
		return 1;
	return ha && hb && la == lb && !memcmp(va, vb, la);
}

/*
 * A file smaller than the I/O buffer is read once, into buf: *inmem set
 * when it all fit (its end was reached), with its SHA-256 and size; else
 * the caller reads it as a large file.  0 or -errno.
 */
static int read_small(int fd, uint8_t *buf, uint8_t sha[MANIFEST_SHA], uint64_t *size, int *inmem)
{
	size_t got = 0;
	unsigned olen;
	ssize_t n;

	*inmem = 0;
	for (;;) {
		n = pread(fd, buf + got, BACKUP_IO - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == BACKUP_IO)
			return 0; /* it grew: read it as a large file */
	}
	if (EVP_Digest(buf, got, sha, &olen, EVP_sha256(), NULL) != 1)
		return -EIO;
	*size = got;
	*inmem = 1;
	return 0;
}

/*
 * Read the regular file open at fd into entry e: its xattrs (its version
 * among them) first, then its metadata, then its contents, hashed, and
 * store the blob in each repository lacking it.  want (may be NULL) is
 * the entry as the walk found it: a file whose fid is another is not
 * taken (returns 1: the name no longer holds that file).  With keep, fd
 * gives only contents: e keeps its xattrs and metadata.  0, 1, or a
 * negative errno with w->err and *bad_repo (the repository at fault, or -1).
 */
static int store_contents(struct worker *w, int fd, struct manifest_entry *e,
			  const struct manifest_entry *want, int keep, int *bad_repo)
{
	struct backup *b = w->b;
	struct manifest_entry got = {0};
	uint8_t sha[MANIFEST_SHA];
	uint64_t size = 0, written;
	struct stat st;
	unsigned tries;
	int64_t read_at = 0;
	size_t k;
	int r = 0, cached = 0, inmem = 0;

	for (tries = 0; tries < BACKUP_FILE_TRIES; tries++) {
		r = read_xattrs(fd, false, &got);
		if (r == 0 && fstat(fd, &st) < 0)
			r = -errno;
		if (r == 0 && !keep && (!S_ISREG(st.st_mode) || (want && !same_fid(&got, want)))) {
			r = 1;
			goto out;
		}
		read_at = now_ns();
		cached =
		    r == 0 && !keep && dcache_lookup(&b->cache, &st, sha) && repos_have(b, 0, sha);
		inmem = 0;
		if (cached)
			size = (uint64_t)st.st_size; /* unchanged since the last backup read it */
		else if (r == 0 && (uint64_t)st.st_size < BACKUP_IO)
			r = read_small(fd, w->buf, sha, &size, &inmem);
		if (r == 0 && !cached && !inmem)
			r = repo_hash_fd(fd, w->buf, BACKUP_IO, sha, &size);
		if (r < 0) {
			snprintf(w->err, sizeof(w->err), "%s/%s: %s", b->store, e->path,
				 strerror(-r));
			goto out;
		}
		for (k = 0; k < b->nrepos; k++) {
			struct bk_repo *br = &b->repos[k];
			char err[BACKUP_ERR];

			if (repo_failed(b, k))
				continue;
			r = repo_blob_has(br->r, sha);
			if (r == 1) {
				br->reused_bytes += size;
				continue;
			}
			if (r == 0 && inmem)
				r = repo_blob_put_mem(br->r, w->batch ? &w->batch[k] : NULL, w->buf,
						      size, sha, &written, err, sizeof(err));
			else if (r == 0)
				r = repo_blob_put(br->r, w->batch ? &w->batch[k] : NULL, fd, sha,
						  w->buf, BACKUP_IO, &written, err, sizeof(err));
			else
				snprintf(err, sizeof(err), "%s/%s: %s", br->path, REPO_PACKS,
					 strerror(-r));
			if (r == -EAGAIN)
				break; /* changed while copied: read it again */
			if (r < 0) {
				*bad_repo = (int)k;
				snprintf(w->err, sizeof(w->err), "repository %s: %s", br->path,
					 err);
				goto out;
			}
			br->new_bytes += written;
			br->new_blobs++;
		}
		if (r != -EAGAIN)
			break;
	}
	if (r == -EAGAIN) {
		snprintf(w->err, sizeof(w->err), "%s/%s: kept changing while it was copied",
			 b->store, e->path);
		goto out;
	}
	if (!keep) {
		free(e->xattrs);
		e->xattrs = got.xattrs;
		e->xattrs_len = got.xattrs_len;
		got.xattrs = NULL;
		take_stat(e, &st);
	}
	e->size = size;
	e->has_sha = 1;
	memcpy(e->sha, sha, sizeof(sha));
	if (cached)
		b->cached_files++;
	else
		b->read_bytes += size;
	if (!keep && (uint64_t)st.st_size == size) {
		dcache_entry_set(&b->seen[e - b->m.e], &st, (uint32_t)(e - b->m.e), sha);
		b->seen_ok[e - b->m.e] = (uint8_t)dcache_settled(&st, read_at);
	}
	progress_advance(&b->prog, size);
	r = 0;
out:
	manifest_entry_free(&got);
	return r;
}

/*
 * Back up regular file entry ei by its name.  A name that no longer holds
 * the file the walk found there (renamed away, removed, replaced) leaves
 * the entry lost, for find_lost().  0, or a negative errno with w->err and
 * *bad_repo.
 */
static int do_file(struct worker *w, size_t ei, int *bad_repo)
{
	struct backup *b = w->b;
	struct manifest_entry *e = &b->m.e[ei];
	int fd, r;

	*bad_repo = -1;
	if (b->fault_path && !strcmp(b->fault_path, e->path) &&
	    atomic_exchange(&b->fault_fired, 1) == 0) {
		snprintf(w->err, sizeof(w->err),
			 "%s: injected fault (LEDGERFS_FAULT_BACKUP_FAIL_ONCE)", e->path);
		return -EIO;
	}
	if (b->fault_delay_ms)
		usleep(b->fault_delay_ms * 1000u);
	fd = openat(b->store_fd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && (errno == ENOENT || errno == ELOOP || errno == ENXIO || errno == ENOTDIR)) {
		b->lost[ei] = 1;
		return 0;
	}
	if (fd < 0) {
		r = -errno;
		snprintf(w->err, sizeof(w->err), "%s/%s: %s", b->store, e->path, strerror(errno));
		return r;
	}
	r = store_contents(w, fd, e, e, 0, bad_repo);
	close(fd);
	if (r == 1)
		b->lost[ei] = 1;
	return r < 0 ? r : 0;
}

/*
 * Make the blobs w wrote durable and named, one syncfs per repository for
 * all of them: every batch with all, else those holding
 * BACKUP_BATCH_BLOBS blobs or BACKUP_BATCH_BYTES bytes.  0, or a negative
 * errno with w->err and *bad_repo.
 */
static int commit_batches(struct worker *w, int all, int *bad_repo)
{
	struct backup *b = w->b;
	char err[BACKUP_ERR];
	size_t k;
	int r;

	for (k = 0; k < b->nrepos; k++) {
		struct repo_batch *rb = &w->batch[k];

		if (!all && rb->n < BACKUP_BATCH_BLOBS && rb->bytes < BACKUP_BATCH_BYTES)
			continue;
		r = repo_batch_commit(rb, err, sizeof(err));
		if (r < 0) {
			*bad_repo = (int)k;
			snprintf(w->err, sizeof(w->err), "repository %s: %s", b->repos[k].path,
				 err);
			return r;
		}
	}
	return 0;
}

/*
 * Back up a subtask's files, naming their blobs in batches (so that a
 * backup cut short keeps most of what it wrote).  A failed subtask leaves
 * none of its unnamed blobs behind.
 */
static int run_task(struct worker *w, const struct bk_task *t, int *bad_repo)
{
	struct backup *b = w->b;
	size_t i, k;
	int r = 0;

	for (i = 0; r == 0 && i < t->count; i++) {
		r = do_file(w, b->files[t->first + i], bad_repo);
		if (r == 0)
			r = commit_batches(w, i + 1 == t->count, bad_repo);
	}
	for (k = 0; r < 0 && k < b->nrepos; k++)
		repo_batch_abort(&w->batch[k]);
	return r;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct backup *b = w->b;

	for (;;) {
		struct bk_task *t;
		unsigned attempt;
		int r = 0, bad_repo = -1;

		pthread_mutex_lock(&b->lock);
		if (b->fatal || b->next_task == b->ntasks) {
			pthread_mutex_unlock(&b->lock);
			break;
		}
		t = &b->tasks[b->next_task++];
		pthread_mutex_unlock(&b->lock);
		for (attempt = 0;; attempt++) {
			r = run_task(w, t, &bad_repo);
			if (r == 0)
				break;
			if (attempt < b->retries) {
				fprintf(stderr,
					"ledgerctl: backup: subtask of %zu files from %s failed "
					"(%s); retrying (%u of %u)\n",
					t->count, b->m.e[b->files[t->first]].path, w->err,
					attempt + 1, b->retries);
				pthread_mutex_lock(&b->lock);
				b->retried++;
				pthread_mutex_unlock(&b->lock);
				continue;
			}
			if (bad_repo < 0)
				break;
			/* The repository's fault: it fails, the others go on. */
			pthread_mutex_lock(&b->lock);
			if (!b->repos[bad_repo].failed) {
				b->repos[bad_repo].failed = 1;
				snprintf(b->repos[bad_repo].err, sizeof(b->repos[bad_repo].err),
					 "%s", w->err);
			}
			pthread_mutex_unlock(&b->lock);
			attempt = 0;
			bad_repo = -1;
		}
		if (r < 0) {
			pthread_mutex_lock(&b->lock);
			if (!b->fatal) {
				b->fatal = 1;
				snprintf(b->fatal_msg, sizeof(b->fatal_msg),
					 "%s (after %u retries)", w->err, b->retries);
			}
			pthread_mutex_unlock(&b->lock);
			break;
		}
	}
	return NULL;
}

static int run_workers(struct backup *b)
{
	struct worker *w = calloc(b->jobs, sizeof(*w));
	unsigned i, started = 0;
	int r = 0;

	if (!w)
		return -ENOMEM;
	for (i = 0; i < b->jobs; i++) {
		w[i].b = b;
		w[i].buf = malloc(BACKUP_IO);
		w[i].batch = calloc(b->nrepos, sizeof(*w[i].batch));
		if (!w[i].buf || !w[i].batch) {
			r = -ENOMEM;
			break;
		}
		for (size_t k = 0; k < b->nrepos; k++)
			repo_batch_init(&w[i].batch[k], b->repos[k].r);
		r = -pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
		if (r < 0)
			break;
		started++;
	}
	if (r < 0) {
		pthread_mutex_lock(&b->lock);
		b->fatal = 1;
		snprintf(b->fatal_msg, sizeof(b->fatal_msg), "cannot start a worker: %s",
			 strerror(-r));
		pthread_mutex_unlock(&b->lock);
	}
	for (i = 0; i < started; i++)
		pthread_join(w[i].thread, NULL);
	for (i = 0; i < b->jobs; i++) {
		for (size_t k = 0; w[i].batch && k < b->nrepos; k++)
			repo_batch_abort(&w[i].batch[k]); /* frees: a committed batch is empty */
		free(w[i].batch);
		free(w[i].buf);
	}
	free(w);
	return r;
}

/* ---- one pass ------------------------------------------------------------- */

static void pass_free(struct backup *b)
{
	manifest_free(&b->m);
	free(b->inodes);
	free(b->files);
	free(b->lost);
	free(b->tasks);
	free(b->seen);
	free(b->seen_ok);
	b->seen = NULL;
	b->seen_ok = NULL;
	b->seen_n = b->seen_cap = 0;
	b->inodes = NULL;
	b->files = NULL;
	b->lost = NULL;
	b->tasks = NULL;
	b->ninodes = b->inodes_cap = b->nfiles = b->files_cap = b->ntasks = 0;
	b->total_bytes = 0;
	b->next_task = 0;
	b->redo = 0;
	b->reused = 0;
	b->cached_files = 0;
}

/*
 * LEDGERFS_FAULT_BACKUP_PAUSE=PATH, for tests: once the files are copied,
 * make PATH.waiting and wait (at most two minutes) for PATH before the
 * end of the pass is read, so a test can settle the source meanwhile.
 */
static void fault_pause(struct backup *b)
{
	const char *path = getenv("LEDGERFS_FAULT_BACKUP_PAUSE");
	char waiting[PATH_MAX];
	struct stat st;
	int i, fd;

	if (!path)
		return;
	snprintf(waiting, sizeof(waiting), "%s.waiting", path);
	fd = open(waiting, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	for (i = 0; i < 1200 && stat(path, &st) < 0; i++)
		usleep(100000);
}

/*
 * Walk the store's names until a walk during which nothing was renamed or
 * linked (an object seen twice or not at all).  0, or -1 with a message.
 */
static int walk_names(struct backup *b)
{
	struct treewalk_ops ops = {.enter = walk_enter, .entry = walk_entry, .fail = walk_fail};
	struct evid vec[REPL_MAX_ORIGINS];
	size_t nvec;
	uint64_t moves;
	unsigned tries;
	int r;

	for (tries = 1;; tries++) {
		struct treewalk tw = {0};
		int held = b->running && tries > BACKUP_FREE_WALKS;

		if (held)
			fprintf(stderr,
				"ledgerctl: backup: %s: names moved during %d walks; walking once "
				"more under the node's lock (its writes wait meanwhile)\n",
				b->dir, BACKUP_FREE_WALKS);
		if (source_vector_held(b, b->from, &b->nfrom, &b->moves0, held) < 0)
			return -1;
		r = treewalk_open(&tw, AT_FDCWD, b->store, O_NOFOLLOW);
		if (r == 0)
			r = treewalk_run(&tw, &ops, b, NULL);
		treewalk_close(&tw);
		let_go(b);
		if (r < 0 && (!b->redo || held)) {
			fprintf(stderr, "ledgerctl: backup: walking %s: %s\n", b->store,
				strerror(-r));
			return -1;
		}
		if (held)
			return 0; /* nothing moved: the node could not change its store */
		if (source_vector(b, vec, &nvec, &moves) < 0)
			return -1;
		if (!b->redo && moves == b->moves0)
			return 0;
		if (!b->running && tries == BACKUP_FREE_WALKS) {
			fprintf(stderr,
				"ledgerctl: backup: %s: the store changed while walked, but "
				"the node is stopped\n",
				b->dir);
			return -1;
		}
		pass_free(b);
	}
}

#define LOST_FID_MAX 64

/*
 * find_lost(): the fids of lost entries, sorted, to look names up by;
 * copies, since an entry found gets new xattrs.
 */
struct lost_fid {
	uint8_t fid[LOST_FID_MAX];
	uint32_t len;
	size_t entry;
	int found;
};

struct lost_scan {
	struct backup *b;
	struct worker *w;
	struct lost_fid *v;
	size_t n;
	int err;
};

static int cmp_lost(const void *x, const void *y)
{
	const struct lost_fid *a = x, *c = y;

	if (a->len != c->len)
		return a->len < c->len ? -1 : 1;
	return memcmp(a->fid, c->fid, a->len);
}

static int lost_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		      size_t index, size_t count, void *dir, void **sub)
{
	struct lost_scan *ls = tw->arg;
	struct backup *b = ls->b;
	struct lost_fid key = {.len = 0}, *hit;
	ssize_t l;
	int fd, r, bad_repo = -1;

	if (S_ISDIR(st->st_mode))
		return TREEWALK_DESCEND;
	if (!S_ISREG(st->st_mode))
		return 0;
	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return 0;
	l = xattr_at_get(fd, false, STORE_XATTR_FID, key.fid, sizeof(key.fid));
	key.len = l > 0 ? (uint32_t)l : 0;
	hit = l > 0 ? bsearch(&key, ls->v, ls->n, sizeof(*ls->v), cmp_lost) : NULL;
	r = 0;
	if (hit && !hit->found) {
		struct manifest_entry *e = &b->m.e[hit->entry];
		struct manifest_entry want = {0};

		/* Compare against a copy: store_contents() replaces e's xattrs. */
		want.xattrs = malloc(e->xattrs_len ? e->xattrs_len : 1);
		if (!want.xattrs) {
			close(fd);
			return -ENOMEM;
		}
		memcpy(want.xattrs, e->xattrs, e->xattrs_len);
		want.xattrs_len = e->xattrs_len;
		r = store_contents(ls->w, fd, e, &want, 0, &bad_repo);
		manifest_entry_free(&want);
		if (r == 0) {
			hit->found = 1;
			b->lost[hit->entry] = 0;
			b->moved++;
		}
		if (r < 0)
			ls->err = 1;
	}
	close(fd);
	return r < 0 ? r : 0;
}

/*
 * Files whose names moved between the walk and their copy: find them by
 * fid in the store as it is now, and copy them from there (the entry keeps
 * the walk's name; the replayed rename moves it).  A scan during which
 * nothing was renamed or linked and that does not find one proves it was
 * removed before the backup's end: its contents do not matter, as the
 * replayed events remove it, so it is stored empty.  0 or -1 (a message).
 */
static int find_lost(struct backup *b)
{
	struct treewalk_ops ops = {.entry = lost_entry};
	struct worker w = {.b = b};
	struct lost_scan ls = {.b = b, .w = &w};
	uint64_t m0, m1;
	unsigned tries;
	size_t i, cap = 0;
	int r = 0, bad_repo = -1;

	for (i = 0; i < b->m.n; i++) {
		if (!b->lost[i])
			continue;
		if (grow_array(&ls.v, &cap, ls.n + 1) < 0)
			goto nomem;
		ls.v[ls.n++] = (struct lost_fid){.entry = i};
	}
	if (!ls.n)
		return 0;
	w.buf = malloc(BACKUP_IO);
	if (!w.buf)
		goto nomem;
	for (i = 0; i < ls.n; i++) {
		const uint8_t *fid;
		uint32_t len;

		if (manifest_xattr(&b->m.e[ls.v[i].entry], STORE_XATTR_FID, &fid, &len) &&
		    len <= LOST_FID_MAX) {
			memcpy(ls.v[i].fid, fid, len);
			ls.v[i].len = len;
		}
	}
	qsort(ls.v, ls.n, sizeof(*ls.v), cmp_lost);
	for (tries = 1;; tries++) {
		struct evid vec[REPL_MAX_ORIGINS];
		size_t nvec;
		struct treewalk tw = {0};
		int held = b->running && tries > BACKUP_FREE_WALKS;

		if (source_vector_held(b, vec, &nvec, &m0, held) < 0)
			goto fail;
		r = treewalk_open(&tw, AT_FDCWD, b->store, O_NOFOLLOW);
		if (r == 0)
			r = treewalk_run(&tw, &ops, &ls, NULL);
		treewalk_close(&tw);
		let_go(b);
		if (ls.err) {
			fprintf(stderr, "ledgerctl: backup: %s\n", w.err);
			goto fail;
		}
		if (held && r < 0) {
			fprintf(stderr, "ledgerctl: backup: scanning %s: %s\n", b->store,
				strerror(-r));
			goto fail;
		}
		if (held)
			break;
		if (source_vector(b, vec, &nvec, &m1) < 0)
			goto fail;
		if (r == 0 && m0 == m1)
			break;
		if (!b->running && tries == BACKUP_FREE_WALKS) {
			fprintf(stderr,
				"ledgerctl: backup: %s: the store changed while scanned, "
				"but the node is stopped\n",
				b->dir);
			goto fail;
		}
	}
	/* Not found: removed.  The empty blob stands for them. */
	for (i = 0; i < ls.n; i++) {
		struct manifest_entry *e = &b->m.e[ls.v[i].entry];
		int fd;

		if (ls.v[i].found)
			continue;
		fd = memfd_create("ledgerfs-backup-empty", MFD_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "ledgerctl: backup: memfd_create: %s\n", strerror(errno));
			goto fail;
		}
		r = store_contents(&w, fd, e, NULL, 1, &bad_repo);
		close(fd);
		if (r < 0) {
			fprintf(stderr, "ledgerctl: backup: %s\n", w.err);
			goto fail;
		}
		b->lost[ls.v[i].entry] = 0;
		b->found_removed++;
	}
	free(ls.v);
	free(w.buf);
	return 0;
nomem:
	fprintf(stderr, "ledgerctl: backup: out of memory\n");
fail:
	free(ls.v);
	free(w.buf);
	return -1;
}

static void stopped_tail(struct backup *b);

/* Walk and copy once.  0 done, -1 failed (message printed). */
static int one_pass(struct backup *b)
{
	if (walk_names(b) < 0)
		return -1;
	find_links(b);
	b->lost = calloc(b->m.n ? b->m.n : 1, 1);
	if (!b->lost || seen_reserve(b, b->m.n) < 0 || plan_tasks(b) < 0) {
		fprintf(stderr, "ledgerctl: backup: out of memory\n");
		return -1;
	}
	progress_add_total(&b->prog, b->total_bytes);
	run_workers(b);
	if (b->fatal) {
		fprintf(stderr, "ledgerctl: backup: %s\n", b->fatal_msg);
		return -1;
	}
	fault_pause(b);
	if (find_lost(b) < 0)
		return -1;
	/* Read after every copy: each change a copy shows is counted in it. */
	if (source_vector(b, b->pos, &b->npos, &b->moves1) < 0)
		return -1;
	if (!b->running) {
		char jdir[PATH_MAX + 16];
		pid_t pid = 0;

		stopped_tail(b);
		snprintf(jdir, sizeof(jdir), "%s/%s", b->dir, NODE_JOURNAL_DIR);
		if (journal_lock_holder(jdir, &pid) != 0) {
			fprintf(stderr,
				"ledgerctl: backup: node %s (%s) started while it was backed up "
				"(process %d holds its journal); run the backup again\n",
				b->cfg.name, b->dir, (int)pid);
			return -1;
		}
	}
	return 0;
}

/* ---- events and manifests ------------------------------------------------- */

/*
 * The term and the fences of the journal j (node.c: u64 origin, term, seq
 * each), the term history the manifest carries.  Missing reads as none.
 */
static void read_history(struct backup *b, struct journal *j)
{
	void *val = NULL;
	size_t len = 0, i;

	if (journal_meta_get_u64(j, JOURNAL_META_TERM, &b->term) < 0)
		b->term = 0;
	if (journal_meta_get(j, JOURNAL_META_FENCES, &val, &len) < 0)
		return;
	b->fences = calloc(len / 24 ? len / 24 : 1, sizeof(*b->fences));
	for (i = 0; b->fences && i + 24 <= len; i += 24)
		b->fences[b->nfences++] = (struct manifest_fence){
		    get_le64((uint8_t *)val + i), get_le64((uint8_t *)val + i + 8),
		    get_le64((uint8_t *)val + i + 16)};
	free(val);
}

/* The events (from, pos] into a temporary file; *out is the caller's. */
/* Whether the span (from, pos] holds no event: the node applied nothing meanwhile. */
static int span_empty(const struct backup *b)
{
	size_t i, k;

	for (i = 0; i < b->npos; i++) {
		uint64_t from = 0;

		for (k = 0; k < b->nfrom; k++)
			if (b->from[k].origin == b->pos[i].origin)
				from = b->from[k].seq;
		if (b->pos[i].seq > from)
			return 0;
	}
	return 1;
}

/*
 * A running node's term and fences from its control socket ("history"),
 * as read_history() reads them from its journal.  0, or -1 (an older
 * daemon, a reply not understood): read them from the journal.
 */
static int ask_history(struct backup *b)
{
	struct buf reply = BUF_INIT;
	const char *p;
	char *end;
	int r;

	r = ctl_ask(b->sock, "history", &reply);
	if (r == 0 && buf_put(&reply, "", 1) < 0)
		r = -ENOMEM;
	p = (const char *)reply.data;
	if (r < 0 || strncmp(p, CTL_OK_PREFIX "term=", strlen(CTL_OK_PREFIX "term=")))
		goto bad;
	b->term = strtoull(p + strlen(CTL_OK_PREFIX "term="), &end, 10);
	for (p = end; *p == ' '; p = end) {
		struct manifest_fence f;

		f.origin = strtoull(p + 1, &end, 16);
		if (*end != ':')
			goto bad;
		f.term = strtoull(end + 1, &end, 10);
		if (*end != ':')
			goto bad;
		f.seq = strtoull(end + 1, &end, 10);
		if (grow_array(&b->fences, &b->fences_cap, b->nfences + 1) < 0)
			goto bad;
		b->fences[b->nfences++] = f;
	}
	if (*p != '\n')
		goto bad;
	buf_free(&reply);
	return 0;
bad:
	buf_free(&reply);
	free(b->fences);
	b->fences = NULL;
	b->nfences = 0;
	b->fences_cap = 0;
	b->term = 0;
	return -1;
}

static int write_events(struct backup *b, FILE **out, uint64_t *count)
{
	struct journal_copy jc = {0};
	struct journal *j;
	char jdir[PATH_MAX + 16], err[BACKUP_ERR];
	const char *why = NULL;
	FILE *f = tmpfile();
	int r;

	if (!f) {
		fprintf(stderr, "ledgerctl: backup: cannot make a temporary file: %s\n",
			strerror(errno));
		return -1;
	}
	if (b->running && span_empty(b) && ask_history(b) == 0) {
		/* Nothing to read from the journal: no copy of it to open. */
		r = backup_events_write(NULL, b->from, b->nfrom, b->pos, b->npos, f, count, err,
					sizeof(err));
		goto written;
	}
	if (b->running) {
		snprintf(jdir, sizeof(jdir), "%s/%s", b->dir, NODE_JOURNAL_DIR);
		r = journal_copy_open(jdir, 0, &jc, &why);
		if (r < 0) {
			fprintf(stderr, "ledgerctl: backup: %s: cannot read the journal: %s: %s\n",
				jdir, why ? why : "", strerror(-r));
			fclose(f);
			return -1;
		}
		j = jc.journal;
	} else {
		j = b->jc.journal;
	}
	read_history(b, j);
	r = backup_events_write(j, b->from, b->nfrom, b->pos, b->npos, f, count, err, sizeof(err));
	journal_copy_close(&jc);
written:
	if (r == 0 && fflush(f) != 0)
		r = -errno;
	if (r < 0) {
		fprintf(stderr, "ledgerctl: backup: %s: the events of the backup's span: %s%s\n",
			b->dir, err,
			r == -ESTALE ? " (run the backup again, or keep more of the journal)" : "");
		fclose(f);
		return -1;
	}
	*out = f;
	return 0;
}

/* The events blob and the manifest into every repository that did not fail. */
static void finish_repos(struct backup *b, FILE *events, uint64_t count)
{
	uint8_t *buf = malloc(BACKUP_IO);
	uint8_t sha[MANIFEST_SHA];
	uint64_t size = 0, written;
	char err[BACKUP_ERR];
	size_t k;
	int r, fd = fileno(events);

	r = buf ? repo_hash_fd(fd, buf, BACKUP_IO, sha, &size) : -ENOMEM;
	for (k = 0; k < b->nrepos; k++) {
		struct bk_repo *br = &b->repos[k];

		if (br->failed)
			continue;
		if (r < 0) {
			snprintf(br->err, sizeof(br->err), "hashing the events: %s", strerror(-r));
			br->failed = 1;
			continue;
		}
		if (repo_blob_has(br->r, sha) != 1 &&
		    repo_blob_put(br->r, NULL, fd, sha, buf, BACKUP_IO, &written, err,
				  sizeof(err)) < 0) {
			snprintf(br->err, sizeof(br->err), "storing the events: %s", err);
			br->failed = 1;
			continue;
		}
		r = repo_sync(br->r);
		if (r < 0) {
			snprintf(br->err, sizeof(br->err), "%s: syncfs: %s", br->path,
				 strerror(-r));
			br->failed = 1;
			r = 0;
			continue;
		}
		memcpy(b->m.events_sha, sha, sizeof(sha));
		b->m.events_bytes = size;
		b->m.events_count = count;
		if (repo_manifest_write(br->r, &b->m, br->manifest, sizeof(br->manifest), err,
					sizeof(err)) < 0) {
			snprintf(br->err, sizeof(br->err), "%s", err);
			br->failed = 1;
		}
	}
	free(buf);
}

/*
 * The digest cache of repository k and the manifest its entries index:
 * without that manifest (expired, damaged) the cache is left unused.
 */
static void load_cache(struct backup *b, size_t k)
{
	char err[BACKUP_ERR];

	dcache_load(b->repos[k].r, b->cfg.node_id, &b->cache);
	if (b->cache.manifest[0] &&
	    repo_manifest_read(b->repos[k].r, b->cache.manifest, &b->prev, err, sizeof(err)) == 0)
		b->have_prev = 1;
}

/* What this backup found of each object, as each repository's cache for the next. */
static void save_caches(struct backup *b)
{
	struct dcache_entry *v = malloc((b->m.n ? b->m.n : 1) * sizeof(*v));
	size_t i, n = 0, k;
	int r;

	if (!v)
		return;
	for (i = 0; i < b->m.n && i < b->seen_n; i++)
		if (b->seen_ok[i] &&
		    (b->m.e[i].link == MANIFEST_NOLINK || !S_ISREG(b->m.e[i].mode)))
			v[n++] = b->seen[i];
	for (k = 0; k < b->nrepos; k++) {
		if (b->repos[k].failed)
			continue;
		r = dcache_save(b->repos[k].r, b->cfg.node_id, b->repos[k].manifest, v, n);
		if (r < 0)
			fprintf(stderr,
				"ledgerctl: backup: %s/%s: cannot save the digest cache: %s (the "
				"next backup reads every file)\n",
				b->repos[k].path, DCACHE_DIR, strerror(-r));
	}
	free(v);
}

static void fill_manifest_head(struct backup *b)
{
	b->m.created = (uint64_t)time(NULL);
	snprintf(b->m.node, sizeof(b->m.node), "%s", b->cfg.name);
	b->m.node_id = b->cfg.node_id;
	memcpy(b->m.cluster, b->cfg.cluster_id, sizeof(b->m.cluster));
	b->m.from = malloc((b->nfrom ? b->nfrom : 1) * sizeof(struct evid));
	b->m.pos = malloc((b->npos ? b->npos : 1) * sizeof(struct evid));
	if (b->m.from)
		memcpy(b->m.from, b->from, b->nfrom * sizeof(struct evid));
	if (b->m.pos)
		memcpy(b->m.pos, b->pos, b->npos * sizeof(struct evid));
	b->m.nfrom = b->m.from ? (uint32_t)b->nfrom : 0;
	b->m.term = b->term;
	b->m.fences = b->fences;
	b->m.nfences = b->nfences;
	b->fences = NULL;
	b->nfences = 0;
	b->m.npos = b->m.pos ? (uint32_t)b->npos : 0;
}

/* ---- the source ----------------------------------------------------------- */

/*
 * A stopped node: a private copy of its journal (journal_copy.h), so that
 * nothing is written in its directory (a disk from a dead machine, mounted
 * read-only); the node itself is not opened, so its unapplied tail is not
 * replayed into its store: the backup carries those events instead
 * (stopped_tail()).  A store that holds kept-aside events or a snapshot
 * install cut short is not the node's history: refused.  0 or -1 with a
 * message.
 */
static int open_stopped(struct backup *b, const char *jdir)
{
	uint64_t rebuild = 0;
	int r, snap = NODE_SNAP_NONE;

	if (journal_arg_open("backup", b->dir, jdir, b->cfg.node_id, &b->jc) < 0)
		return -1;
	if (journal_meta_get_u64(b->jc.journal, JOURNAL_META_REBUILD, &rebuild) < 0)
		rebuild = 0;
	r = node_snap_pending(b->jc.journal, &snap);
	if (rebuild || r < 0 || snap == NODE_SNAP_INSTALLING || snap == NODE_SNAP_REPAIRING) {
		fprintf(stderr,
			"ledgerctl: backup: node %s (%s) is stopped with its store %s: start it "
			"once (it finishes that first), or back up another member\n",
			b->cfg.name, b->dir,
			rebuild ? "holding kept-aside events" : "in the middle of an install");
		return -1;
	}
	return replay_tails_load(b->jc.journal, &b->tails) < 0 ? -1 : 0;
}

/*
 * A stopped node's events journaled beyond its applied marks (a crash
 * between journal and store): its start would replay them, so pos goes up
 * to the last of each origin's run, short of a kept-aside tail, and the
 * restore replays them like the others.
 */
static void stopped_tail(struct backup *b)
{
	struct journal *j = b->jc.journal;
	const char *why = NULL;
	struct event ev;
	size_t i;

	for (i = 0; i < b->npos; i++) {
		uint64_t next = b->pos[i].seq + 1;

		while (!replay_tails_skip(&b->tails, b->pos[i].origin, next) &&
		       journal_get(j, b->pos[i].origin, next, 0, &ev, &why) == 0) {
			event_free(&ev);
			b->pos[i].seq = next++;
		}
	}
}

static int open_source(struct backup *b)
{
	char path[PATH_MAX + 32], err[1024];
	pid_t pid = 0;
	int r;

	snprintf(path, sizeof(path), "%s/%s", b->dir, CONFIG_FILE);
	if (config_load(path, &b->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: backup: %s\n", err);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/%s", b->dir, NODE_JOURNAL_DIR);
	r = journal_lock_holder(path, &pid);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: backup: %s/LOCK: %s\n", path, strerror(-r));
		return -1;
	}
	b->running = r == 1;
	if (b->running)
		snprintf(b->sock, sizeof(b->sock), "%s/%s", b->dir, CONTROL_SOCKET);
	else if (open_stopped(b, path) < 0)
		return -1;
	snprintf(b->store, sizeof(b->store), "%s/%s", b->dir, NODE_STORE_DIR);
	b->store_fd = open(b->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->store_fd < 0) {
		fprintf(stderr, "ledgerctl: backup: %s: %s\n", b->store, strerror(errno));
		return -1;
	}
	return 0;
}

static void print_vector(FILE *out, const struct evid *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		fprintf(out, "%s%016" PRIx64 ":%" PRIu64, i ? " " : "", v[i].origin, v[i].seq);
}

static int parse_count(const char *opt, const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v > max) {
		fprintf(stderr, "ledgerctl: backup: %s: not a number up to %u: '%s'\n", opt, max,
			s);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int backup_list(int argc, char **argv);
static int backup_verify(int argc, char **argv);
static int backup_expire(int argc, char **argv);

int cmd_backup(int argc, char **argv)
{
	static const struct option opts[] = {{"to", required_argument, NULL, 't'},
					     {"jobs", required_argument, NULL, 'j'},
					     {"retries", required_argument, NULL, 'r'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	struct backup *b;
	FILE *events = NULL;
	uint64_t count = 0;
	size_t k, failed = 0, entries;
	char err[BACKUP_ERR], hb[32], hr[32];
	const char *delay;
	int c, rc = 1;
	long cpus;

	if (argc >= 2 && !strcmp(argv[1], "list"))
		return backup_list(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "verify"))
		return backup_verify(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "expire"))
		return backup_expire(argc - 1, argv + 1);
	b = calloc(1, sizeof(*b));
	if (!b) {
		fprintf(stderr, "ledgerctl: backup: out of memory\n");
		return 1;
	}
	pthread_mutex_init(&b->lock, NULL);
	b->store_fd = -1;
	b->hold_fd = -1;
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	b->jobs = cpus > 0 ? (unsigned)(cpus < BACKUP_MAX_JOBS ? cpus : BACKUP_MAX_JOBS) : 1;
	b->retries = 3;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (b->nrepos == BACKUP_MAX_REPOS) {
				fprintf(stderr, "ledgerctl: backup: at most %d --to\n",
					BACKUP_MAX_REPOS);
				rc = 2;
				goto out;
			}
			b->repos[b->nrepos++].path = optarg;
			break;
		case 'j':
			if (parse_count("--jobs", optarg, BACKUP_MAX_JOBS, &b->jobs) < 0 ||
			    b->jobs == 0) {
				rc = 2;
				goto out;
			}
			break;
		case 'r':
			if (parse_count("--retries", optarg, 100, &b->retries) < 0) {
				rc = 2;
				goto out;
			}
			break;
		case 'h':
			backup_usage(stdout);
			rc = 0;
			goto out;
		default:
			backup_usage(stderr);
			rc = 2;
			goto out;
		}
	}
	if (optind + 1 != argc || b->nrepos == 0) {
		backup_usage(stderr);
		rc = 2;
		goto out;
	}
	b->dir = argv[optind];
	b->fault_path = getenv("LEDGERFS_FAULT_BACKUP_FAIL_ONCE");
	delay = getenv("LEDGERFS_FAULT_BACKUP_DELAY_MS");
	b->fault_delay_ms = delay ? (unsigned)strtoul(delay, NULL, 10) : 0;
	delay = getenv("LEDGERFS_FAULT_BACKUP_WALK_DELAY_MS");
	b->walk_delay_ms = delay ? (unsigned)strtoul(delay, NULL, 10) : 0;
	for (k = 0; k < b->nrepos; k++) {
		if (repo_open(b->repos[k].path, 1, &b->repos[k].r, err, sizeof(err)) < 0) {
			b->repos[k].failed = 1;
			snprintf(b->repos[k].err, sizeof(b->repos[k].err), "%s", err);
		} else if ((c = repo_lock(b->repos[k].r, 0, 1)) < 0) {
			b->repos[k].failed = 1;
			snprintf(b->repos[k].err, sizeof(b->repos[k].err), "%s/%s: %s",
				 b->repos[k].path, REPO_LOCK, strerror(-c));
		}
	}
	for (k = 0; k < b->nrepos && b->repos[k].failed; k++)
		;
	if (k == b->nrepos)
		goto report;
	if (open_source(b) < 0)
		goto out;
	for (k = 0; k < b->nrepos; k++) {
		if (!b->repos[k].failed) {
			load_cache(b, k);
			break;
		}
	}
	progress_init(&b->prog, "backup", 0, 1);
	if (one_pass(b) < 0) {
		progress_end(&b->prog);
		goto out;
	}
	progress_end(&b->prog);
	if (write_events(b, &events, &count) < 0)
		goto out;
	fill_manifest_head(b);
	finish_repos(b, events, count);
	fclose(events);
	save_caches(b);
report:
	entries = b->m.n;
	for (k = 0; k < b->nrepos; k++) {
		struct bk_repo *br = &b->repos[k];

		if (br->failed) {
			failed++;
			fprintf(stderr, "ledgerctl: backup: repository %s FAILED: %s\n", br->path,
				br->err);
			continue;
		}
		printf("%s: backup %s: %zu entries, %s new in %" PRIu64 " blobs, %s already "
		       "there\n",
		       br->path, br->manifest, entries,
		       progress_human(br->new_bytes, hb, sizeof(hb)), (uint64_t)br->new_blobs,
		       progress_human(br->reused_bytes, hr, sizeof(hr)));
	}
	if (failed < b->nrepos) {
		double secs = progress_seconds(&b->prog);

		printf("backup of %s as of ", b->cfg.name);
		print_vector(stdout, b->pos, b->npos);
		printf(" (from ");
		print_vector(stdout, b->from, b->nfrom);
		printf("): %zu entries, %s read in %.1f s (%s/s), %" PRIu64
		       " events replayed at restore, %" PRIu64 " subtasks retried, %" PRIu64
		       " files moved and %" PRIu64 " removed while copied, %" PRIu64
		       " unchanged files not read, %" PRIu64
		       " entries copied from the last backup\n",
		       entries, progress_human(b->read_bytes, hb, sizeof(hb)), secs,
		       progress_human(secs > 0 ? (uint64_t)((double)b->read_bytes / secs) : 0, hr,
				      sizeof(hr)),
		       count, b->retried, b->moved, b->found_removed, (uint64_t)b->cached_files,
		       b->reused);
	}
	rc = failed ? 1 : 0;
out:
	let_go(b);
	pass_free(b);
	for (k = 0; k < b->nrepos; k++)
		repo_close(b->repos[k].r);
	if (b->store_fd >= 0)
		close(b->store_fd);
	journal_copy_close(&b->jc);
	replay_tails_free(&b->tails);
	dcache_free(&b->cache);
	manifest_free(&b->prev);
	free(b->fences);
	pthread_mutex_destroy(&b->lock);
	free(b);
	return rc;
}

/* ---- list and verify ------------------------------------------------------ */

static int open_existing(const char *cmd, int argc, char **argv, struct repo **r)
{
	char err[1024];

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		backup_usage(stdout);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: ledgerctl backup %s REPO\n", cmd);
		return 2;
	}
	if (repo_open(argv[1], 0, r, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: backup %s: %s\n", cmd, err);
		return 1;
	}
	return -1;
}

static int backup_list(int argc, char **argv)
{
	struct repo *r = NULL;
	char **names = NULL, err[1024], when[32], hb[32];
	size_t n = 0, i, j;
	int rc = open_existing("list", argc, argv, &r), bad = 0;

	if (rc >= 0)
		return rc;
	if (repo_manifest_list(r, &names, &n) < 0) {
		fprintf(stderr, "ledgerctl: backup list: %s/%s: %s\n", argv[1], REPO_MANIFESTS,
			strerror(errno));
		repo_close(r);
		return 1;
	}
	for (i = 0; i < n; i++) {
		struct manifest m;
		uint64_t bytes = 0;
		time_t t;
		struct tm tm;

		if (repo_manifest_read(r, names[i], &m, err, sizeof(err)) < 0) {
			printf("%s  CORRUPT: %s\n", names[i], err);
			bad = 1;
			continue;
		}
		for (j = 0; j < m.n; j++)
			bytes += m.e[j].size;
		t = (time_t)m.created;
		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		printf("%s  %s  node %s  term %" PRIu64 "  %zu entries  %s  as of ", names[i], when,
		       m.node, m.term, m.n, progress_human(bytes, hb, sizeof(hb)));
		print_vector(stdout, m.pos, m.npos);
		printf("\n");
		manifest_free(&m);
	}
	repo_names_free(names, n);
	repo_close(r);
	return bad;
}

struct blob_ref {
	uint8_t sha[MANIFEST_SHA];
	size_t manifest;  /* index into names */
	const char *what; /* a path using it (static "events" or owned by refs_paths) */
	uint64_t size;
};

static int cmp_ref(const void *x, const void *y)
{
	return memcmp(((const struct blob_ref *)x)->sha, ((const struct blob_ref *)y)->sha,
		      MANIFEST_SHA);
}

static int backup_verify(int argc, char **argv)
{
	struct repo *r = NULL;
	char **names = NULL, err[1024], blob[REPO_BLOB_PATH];
	struct blob_ref *refs = NULL;
	char **paths = NULL;
	size_t n = 0, nrefs = 0, refs_cap = 0, npaths = 0, paths_cap = 0, i, j, checked = 0;
	uint64_t total = 0, size;
	uint8_t *buf = NULL;
	struct progress prog;
	int rc = open_existing("verify", argc, argv, &r), bad = 0, e;

	if (rc >= 0)
		return rc;
	rc = 1;
	buf = malloc(BACKUP_IO);
	if (!buf || repo_manifest_list(r, &names, &n) < 0) {
		fprintf(stderr, "ledgerctl: backup verify: %s: cannot list the manifests\n",
			argv[1]);
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct manifest m;

		if (repo_manifest_read(r, names[i], &m, err, sizeof(err)) < 0) {
			printf("corrupt: %s\n", err);
			bad = 1;
			continue;
		}
		for (j = 0; j <= m.n; j++) {
			const struct manifest_entry *en = j < m.n ? &m.e[j] : NULL;

			if (en && !en->has_sha)
				continue;
			if (grow_array(&refs, &refs_cap, nrefs + 1) < 0 ||
			    grow_array(&paths, &paths_cap, npaths + 1) < 0)
				goto nomem;
			paths[npaths] = strdup(en ? en->path : "(the events)");
			if (!paths[npaths])
				goto nomem;
			refs[nrefs].manifest = i;
			refs[nrefs].what = paths[npaths++];
			memcpy(refs[nrefs].sha, en ? en->sha : m.events_sha, MANIFEST_SHA);
			refs[nrefs].size = en ? en->size : m.events_bytes;
			nrefs++;
		}
		manifest_free(&m);
	}
	if (nrefs)
		qsort(refs, nrefs, sizeof(*refs), cmp_ref);
	for (i = 0; i < nrefs; i++)
		if (i == 0 || cmp_ref(&refs[i], &refs[i - 1]))
			total += refs[i].size;
	progress_init(&prog, "verify", total, 1);
	for (i = 0; i < nrefs; i++) {
		if (i && !cmp_ref(&refs[i], &refs[i - 1]))
			continue;
		e = repo_blob_check(r, refs[i].sha, buf, BACKUP_IO, &size);
		checked++;
		progress_advance(&prog, refs[i].size);
		if (e == 0)
			continue;
		bad = 1;
		repo_blob_path(refs[i].sha, blob);
		printf("corrupt: blob %s/%s (%s in %s%s): %s\n", argv[1], blob, refs[i].what,
		       names[refs[i].manifest], "",
		       e == -EBADMSG  ? "contents do not match its SHA-256"
		       : e == -ENOENT ? "missing"
				      : strerror(-e));
	}
	progress_end(&prog);
	printf("verify %s: %zu manifests, %zu blobs (%s) checked in %.1f s: %s\n", argv[1], n,
	       checked, progress_human(total, err, sizeof(err)), progress_seconds(&prog),
	       bad ? "CORRUPTION FOUND" : "all good");
	rc = bad;
	goto out;
nomem:
	fprintf(stderr, "ledgerctl: backup verify: out of memory\n");
out:
	for (i = 0; i < npaths; i++)
		free(paths[i]);
	free(paths);
	free(refs);
	free(buf);
	repo_names_free(names, n);
	repo_close(r);
	return rc;
}

/* ---- expire ----------------------------------------------------------------- */

/* "30", "45s", "90m", "12h", "7d", "2w" into seconds.  0 or -1. */
static int parse_duration(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case '\0':
	case 's':
		break;
	case 'm':
		v *= 60;
		break;
	case 'h':
		v *= 3600;
		break;
	case 'd':
		v *= 86400;
		break;
	case 'w':
		v *= 7 * 86400;
		break;
	default:
		return -1;
	}
	if (*end && end[1])
		return -1;
	*out = v;
	return 0;
}

static int cmp_sha(const void *x, const void *y)
{
	return memcmp(x, y, MANIFEST_SHA);
}

/* Remove the blobs in packs/ that no kept manifest names (sorted in keep, nkeep). */
static int sweep_blobs(struct repo *r, const uint8_t (*keep)[MANIFEST_SHA], size_t nkeep,
		       uint64_t *removed, uint64_t *bytes)
{
	char dir[PATH_MAX + 32], path[PATH_MAX + 128];
	struct dirent *sub, *de;
	DIR *top, *d;

	snprintf(dir, sizeof(dir), "%s/%s", r->dir, REPO_PACKS);
	top = opendir(dir);
	if (!top)
		return -errno;
	while ((sub = readdir(top))) {
		if (strlen(sub->d_name) != 2)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, sub->d_name);
		d = opendir(path);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			uint8_t sha[MANIFEST_SHA];
			struct stat st;
			size_t i;
			int ok = strlen(de->d_name) == 2 * MANIFEST_SHA;

			for (i = 0; ok && i < MANIFEST_SHA; i++) {
				unsigned v;

				ok = sscanf(de->d_name + 2 * i, "%2x", &v) == 1;
				sha[i] = (uint8_t)v;
			}
			if (!ok || bsearch(sha, keep, nkeep, MANIFEST_SHA, cmp_sha))
				continue;
			if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
				*bytes += (uint64_t)st.st_size;
			if (unlinkat(dirfd(d), de->d_name, 0) == 0)
				(*removed)++;
		}
		closedir(d);
	}
	closedir(top);
	return 0;
}

/*
 * Remove archive segments that no kept backup's point-in-time chain needs:
 * those wholly at or below every kept backup's position for their origin.
 */
static int sweep_archive(struct repo *r, const struct manifest *kept, size_t nkept,
			 uint64_t *removed)
{
	uint64_t *origins = NULL, floor;
	size_t norigins = 0, npaths = 0, o, i, k;
	char **paths = NULL;
	int ret;

	ret = archive_origins(r, &origins, &norigins);
	for (o = 0; ret == 0 && o < norigins; o++) {
		floor = UINT64_MAX;
		for (k = 0; k < nkept; k++) {
			uint64_t p = 0;
			uint32_t j;

			for (j = 0; j < kept[k].npos; j++)
				if (kept[k].pos[j].origin == origins[o])
					p = kept[k].pos[j].seq;
			if (p < floor)
				floor = p;
		}
		if (!nkept)
			floor = 0; /* no backup left: the archive is all there is */
		ret = archive_list(r, origins[o], &paths, &npaths);
		for (i = 0; ret == 0 && i < npaths; i++) {
			const char *base = strrchr(paths[i], '/') + 1;

			if (strtoull(base + 21, NULL, 10) <= floor && unlink(paths[i]) == 0)
				(*removed)++;
		}
		repo_names_free(paths, npaths);
		paths = NULL;
		npaths = 0;
	}
	free(origins);
	return ret;
}

static int backup_expire(int argc, char **argv)
{
	static const struct option opts[] = {{"keep-last", required_argument, NULL, 'l'},
					     {"keep-within", required_argument, NULL, 'w'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	struct repo *r = NULL;
	struct manifest *all = NULL;
	char **names = NULL, err[BACKUP_ERR], hb[32];
	uint8_t(*keep)[MANIFEST_SHA] = NULL;
	size_t n = 0, i, j, nkeep = 0, keep_cap = 0, nkept = 0, dropped = 0;
	uint64_t within = 0, blobs = 0, blob_bytes = 0, segs = 0;
	unsigned last = 0;
	int c, have_last = 0, have_within = 0, rc = 1, ret;
	uint8_t *kept_flag = NULL;
	time_t now = time(NULL);

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (parse_count("--keep-last", optarg, 1000000, &last) < 0)
				return 2;
			have_last = 1;
			break;
		case 'w':
			if (parse_duration(optarg, &within) < 0) {
				fprintf(stderr,
					"ledgerctl: backup expire: --keep-within: '%s' is not "
					"a duration (30s, 90m, 12h, 7d, 2w)\n",
					optarg);
				return 2;
			}
			have_within = 1;
			break;
		case 'h':
			backup_usage(stdout);
			return 0;
		default:
			backup_usage(stderr);
			return 2;
		}
	}
	if (optind + 1 != argc || (!have_last && !have_within)) {
		fputs("usage: ledgerctl backup expire REPO (--keep-last N | --keep-within "
		      "DURATION)\n",
		      stderr);
		return 2;
	}
	if (repo_open(argv[optind], 0, &r, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: backup expire: %s\n", err);
		return 1;
	}
	ret = repo_lock(r, 1, 0);
	if (ret < 0) {
		fprintf(stderr, "ledgerctl: backup expire: %s: %s\n", argv[optind],
			ret == -EWOULDBLOCK ? "a backup or restore is using it; try again later"
					    : strerror(-ret));
		goto out;
	}
	if (repo_manifest_list(r, &names, &n) < 0)
		goto out;
	all = calloc(n ? n : 1, sizeof(*all));
	kept_flag = calloc(n ? n : 1, 1);
	if (!all || !kept_flag)
		goto out;
	/* Every manifest must read: what a corrupt one names is unknown, so nothing goes. */
	for (i = 0; i < n; i++) {
		if (repo_manifest_read(r, names[i], &all[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "ledgerctl: backup expire: refused: %s\n", err);
			goto out;
		}
		kept_flag[i] = (have_last && i + last >= n) ||
			       (have_within && all[i].created + within >= (uint64_t)now);
	}
	for (i = 0; i < n; i++) {
		if (kept_flag[i]) {
			/* Compact the kept ones to the front (for sweep_archive). */
			if (nkept != i) {
				all[nkept] = all[i];
				memset(&all[i], 0, sizeof(all[i]));
			}
			nkept++;
			continue;
		}
		snprintf(err, sizeof(err), "%s/%s/%s", argv[optind], REPO_MANIFESTS, names[i]);
		if (unlink(err) < 0) {
			fprintf(stderr, "ledgerctl: backup expire: %s: %s\n", err, strerror(errno));
			goto out;
		}
		printf("expired %s\n", names[i]);
		dropped++;
		manifest_free(&all[i]);
	}
	for (i = 0; i < nkept; i++) {
		for (j = 0; j <= all[i].n; j++) {
			const uint8_t *sha = j < all[i].n ? all[i].e[j].sha : all[i].events_sha;

			if (j < all[i].n && !all[i].e[j].has_sha)
				continue;
			if (grow_array(&keep, &keep_cap, nkeep + 1) < 0)
				goto out;
			memcpy(keep[nkeep++], sha, MANIFEST_SHA);
		}
	}
	if (nkeep)
		qsort(keep, nkeep, MANIFEST_SHA, cmp_sha);
	ret = sweep_blobs(r, (const uint8_t(*)[MANIFEST_SHA])keep, nkeep, &blobs, &blob_bytes);
	if (ret == 0)
		ret = sweep_archive(r, all, nkept, &segs);
	if (ret < 0) {
		fprintf(stderr, "ledgerctl: backup expire: %s: %s\n", argv[optind], strerror(-ret));
		goto out;
	}
	printf("expire %s: %zu backups kept, %zu expired, %" PRIu64 " blobs (%s) and %" PRIu64
	       " archive segments removed\n",
	       argv[optind], nkept, dropped, blobs, progress_human(blob_bytes, hb, sizeof(hb)),
	       segs);
	rc = 0;
out:
	for (i = 0; all && i < n; i++)
		manifest_free(&all[i]);
	free(all);
	free(kept_flag);
	free(keep);
	repo_names_free(names, n);
	repo_close(r);
	return rc;
}
