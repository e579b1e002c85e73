/*
 * cmd_restore.c - "ledgerctl restore": rebuild a store from a backup
 * repository (backup/repo.h).
 *
 * The newest backup's files are laid down in TARGET_DIR/store: directories,
 * files (copied from their blobs, each checked against its SHA-256 as it
 * is copied, through a temp name and a rename), hard links, symlinks and
 * special files, then every object's xattrs (ledgerfs's fid and version
 * among them), owner, mode and times, directories' times last.  Then the
 * events the backup carries are replayed leniently (backup/events.h),
 * which takes the store to the backup's position.  With --delta an
 * existing store is brought to the backup: names the backup lacks are
 * removed, files whose contents match are kept, and only what differs is
 * rewritten.  With --node the target is a node directory made by
 * 'ledgerctl init' whose journal holds nothing yet: after the restore its
 * applied vector is the backup's position, so when it starts it catches up
 * from its peers from there, as after a snapshot resync.
 *
 * A corrupt manifest, events blob or file blob is refused, naming it, and
 * nothing more is written.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/archive.h"
#include "backup/events.h"
#include "backup/repo.h"
#include "cmd.h"
#include "lib/config.h"
#include "lib/files.h"
#include "lib/progress.h"
#include "lib/treewalk.h"
#include "lib/grow.h"
#include "node/node.h"
#include "store/path.h"
#include "store/xattr_at.h"

#define RESTORE_IO  (1u << 20)
#define RESTORE_TMP ".ledgerfs-restore.%u.tmp" /* the worker's number */
/* TARGET_DIR/restore.incomplete: a restore began there and did not end. */
#define RESTORE_MARKER "restore.incomplete"
#define RESTORE_ERR    (3 * PATH_MAX)
#define RESTORE_XLIST  65536

struct restore {
	const char *repo_dir, *target, *node_name, *backup_name;
	int delta;
	/* --to-seq ORIGIN:SEQ or --to-time T: restore to that point of the history. */
	int to_seq, to_time;
	uint64_t to_origin, to_seqno;
	int64_t to_ms;
	struct repo *repo;
	struct manifest m;
	char mname[256];
	char store[PATH_MAX];
	char marker[PATH_MAX + 32]; /* TARGET_DIR/RESTORE_MARKER */
	int root;		    /* O_RDONLY descriptor of the store */
	size_t *sorted;		    /* --delta: the manifest's entries sorted by path */
	uint8_t *buf;
	struct progress prog;
	atomic_uint_fast64_t files_written, files_kept, bytes_written;
	uint64_t removed;
	unsigned jobs;
	/* Files written in parallel: the next to take, the first failure. */
	atomic_size_t next_file;
	pthread_mutex_t lock;
	int failed; /* guarded by lock */
	char err[RESTORE_ERR];
};

/* One thread laying files down: its buffer and its error. */
struct rworker {
	struct restore *rs;
	pthread_t thread;
	unsigned id; /* 0 the main thread, 1.. the workers: its temp file's name */
	uint8_t *buf;
	char err[RESTORE_ERR];
	int r;
};

static void restore_usage(FILE *out)
{
	fputs("usage: ledgerctl restore REPO TARGET_DIR [--delta] [--node NAME] [--backup NAME] "
	      "[--jobs N]\n"
	      "                         [--to-seq ORIGIN:SEQ | --to-time TIME]\n"
	      "\n"
	      "Rebuild a store from the newest backup in REPO (or the one named) into\n"
	      "TARGET_DIR/store: its files are laid down, then the events that ran while\n"
	      "the backup was taken are replayed, so the store is the source's store at\n"
	      "the backup's journal position.  Every blob is checked against its SHA-256\n"
	      "and the manifest against its checksum; a corrupt one is refused, named.\n"
	      "\n"
	      "  --delta        TARGET_DIR/store exists: rewrite only what differs from the\n"
	      "                 backup, remove what the backup lacks (a restore cut short\n"
	      "                 is taken up this way when run again)\n"
	      "  --node NAME    TARGET_DIR is a node directory made by 'ledgerctl init --name\n"
	      "                 NAME' (with the cluster's CA and peers) that has applied\n"
	      "                 nothing yet: afterwards it starts where the restore ends (the\n"
	      "                 backup's position, or the point of --to-seq/--to-time) and\n"
	      "                 catches up from its peers (add it to their membership with\n"
	      "                 'ledgerctl peer add'); with no peers it is a cluster anew\n"
	      "  --jobs N       threads writing files (default: the number of CPUs)\n"
	      "  --backup NAME  restore that backup ('ledgerctl backup list REPO') instead of\n"
	      "                 the newest\n"
	      "  --to-seq ORIGIN:SEQ  restore to the point right after event SEQ of ORIGIN (16\n"
	      "                 hex digits, as 'ledgerctl log' shows it): the newest backup\n"
	      "                 before it, then the events archived since ([archive]\n"
	      "                 repository = REPO in a node's ledgerfs.conf), in history order\n"
	      "  --to-time TIME restore to the point in time TIME (Unix seconds, or\n"
	      "                 YYYY-MM-DDTHH:MM:SS[.mmm]Z in UTC): the newest backup taken\n"
	      "                 before it, then every archived event made up to it\n"
	      "  -h, --help     this help\n"
	      "\n"
	      "On a terminal a progress line goes to stderr; a summary line at the end.\n"
	      "Exit status: 0 restored, 1 failed (a corrupt repository among the causes),\n"
	      "2 usage error.\n",
	      out);
}

/* ---- helpers -------------------------------------------------------------- */

/* The entry named path, by binary search over rs->sorted (indices sorted by path), or NULL. */
static const struct manifest_entry *find_entry(struct restore *rs, const char *path)
{
	size_t lo = 0, hi = rs->m.n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(rs->m.e[rs->sorted[mid]].path, path);

		if (c == 0)
			return &rs->m.e[rs->sorted[mid]];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int cmp_index(const void *a, const void *b, void *arg)
{
	const struct manifest *m = arg;

	return strcmp(m->e[*(const size_t *)a].path, m->e[*(const size_t *)b].path);
}

/* The path relative to the store root for *at calls: "." for the root. */
static const char *at_path(const char *p)
{
	return p[0] ? p : ".";
}

/* Remove name in dfd, a whole tree if it is a directory.  0 or -errno. */
static int remove_tree(int dfd, const char *name)
{
	struct treewalk tw = {0};
	int r;

	if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	r = treewalk_open(&tw, dfd, name, O_NOFOLLOW);
	while (r == 0) {
		/* Empty the directory the walk is in, going down into subdirectories. */
		int fd = dup(tw.fd);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;
		char sub[256] = "";

		if (!d) {
			if (fd >= 0)
				close(fd);
			r = -errno;
			break;
		}
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (unlinkat(tw.fd, de->d_name, 0) == 0)
				continue;
			if (errno == EISDIR || errno == EPERM) {
				snprintf(sub, sizeof(sub), "%s", de->d_name);
				break;
			}
			r = -errno;
			break;
		}
		closedir(d);
		if (r < 0)
			break;
		if (sub[0]) {
			if (unlinkat(tw.fd, sub, AT_REMOVEDIR) == 0)
				continue;
			r = treewalk_down(&tw, sub);
			continue;
		}
		if (tw.depth == 0)
			break;
		r = treewalk_up(&tw);
	}
	treewalk_close(&tw);
	if (r == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = -errno;
	return r;
}

/* --delta: remove what the backup lacks or has as another type. */
static int prune_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		       size_t index, size_t count, void *dir, void **sub)
{
	struct restore *rs = tw->arg;
	const char *path = relpath_str(&tw->path);
	const struct manifest_entry *e = find_entry(rs, path);
	int r;

	if (e && (e->mode & S_IFMT) == (st->st_mode & S_IFMT))
		return S_ISDIR(st->st_mode) ? TREEWALK_DESCEND : 0;
	r = remove_tree(dfd, name);
	if (r < 0) {
		snprintf(rs->err, sizeof(rs->err), "%s/%s: cannot remove: %s", rs->store, path,
			 strerror(-r));
		return r;
	}
	rs->removed++;
	return 0;
}

/* ---- laying files down ----------------------------------------------------- */

/* Copy blob e->sha into a temp file beside e->path, checked, then rename it there. */
static int write_file(struct restore *rs, struct rworker *w, const struct manifest_entry *e)
{
	char tmp[PATH_MAX], blob[REPO_BLOB_PATH];
	const char *slash = strrchr(e->path, '/');
	uint8_t sha[MANIFEST_SHA];
	EVP_MD_CTX *ctx = NULL;
	int in = -1, out = -1, r = 0;
	uint64_t off = 0;
	ssize_t n, done;

	repo_blob_path(e->sha, blob);
	if (snprintf(tmp, sizeof(tmp), "%.*s" RESTORE_TMP, slash ? (int)(slash - e->path + 1) : 0,
		     e->path, w->id) >= (int)sizeof(tmp)) {
		snprintf(w->err, sizeof(w->err), "%s/%s: path too long", rs->store, e->path);
		return -ENAMETOOLONG;
	}
	r = repo_blob_open(rs->repo, e->sha, &in);
	if (r < 0) {
		snprintf(w->err, sizeof(w->err), "blob %s/%s (for %s): %s", rs->repo_dir, blob,
			 e->path, r == -ENOENT ? "missing" : strerror(-r));
		return r;
	}
	out = openat(rs->root, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	ctx = EVP_MD_CTX_new();
	if (out < 0 || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		r = out < 0 ? -errno : -ENOMEM;
		snprintf(w->err, sizeof(w->err), "%s/%s: %s", rs->store, tmp, strerror(-r));
		goto out;
	}
	for (;;) {
		n = read(in, w->buf, RESTORE_IO);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(w->err, sizeof(w->err), "blob %s/%s: %s", rs->repo_dir, blob,
				 strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, w->buf, (size_t)n);
		for (done = 0; done < n;) {
			ssize_t k = write(out, w->buf + done, (size_t)(n - done));

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				r = -errno;
				snprintf(w->err, sizeof(w->err), "%s/%s: %s", rs->store, e->path,
					 strerror(errno));
				goto out;
			}
			done += k;
		}
		off += (uint64_t)n;
		progress_advance(&rs->prog, (uint64_t)n);
	}
	EVP_DigestFinal_ex(ctx, sha, NULL);
	if (memcmp(sha, e->sha, sizeof(sha)) || off != e->size) {
		r = -EBADMSG;
		snprintf(w->err, sizeof(w->err),
			 "blob %s/%s (for %s) is corrupt: its contents do not match its SHA-256",
			 rs->repo_dir, blob, e->path);
		goto out;
	}
	if (close(out) < 0) {
		out = -1;
		r = -errno;
		snprintf(w->err, sizeof(w->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
		goto out;
	}
	out = -1;
	if (renameat(rs->root, tmp, rs->root, e->path) < 0) {
		r = -errno;
		snprintf(w->err, sizeof(w->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
		goto out;
	}
	rs->files_written++;
	rs->bytes_written += off;
out:
	EVP_MD_CTX_free(ctx);
	if (out >= 0)
		close(out);
	if (r < 0)
		unlinkat(rs->root, tmp, 0);
	close(in);
	return r;
}

/* --delta: 1 if the file at e->path has e's contents already. */
static int same_file(struct restore *rs, struct rworker *w, const struct manifest_entry *e)
{
	uint8_t sha[MANIFEST_SHA];
	uint64_t size = 0;
	struct stat st;
	int fd, r;

	if (fstatat(rs->root, e->path, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != e->size)
		return 0;
	fd = openat(rs->root, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	r = repo_hash_fd(fd, w->buf, RESTORE_IO, sha, &size);
	close(fd);
	return r == 0 && size == e->size && !memcmp(sha, e->sha, sizeof(sha));
}

/* Make the object of entry e (not its metadata).  0 or -errno with w->err. */
static int make_object(struct restore *rs, struct rworker *w, const struct manifest_entry *e)
{
	char target[EVENT_MAX_TARGET + 1];
	struct stat st, lst;
	ssize_t tl;
	int exists, r = 0;

	if (!e->path[0])
		return 0;
	exists = fstatat(rs->root, e->path, &st, AT_SYMLINK_NOFOLLOW) == 0;
	if (e->link != MANIFEST_NOLINK) {
		const struct manifest_entry *lead = &rs->m.e[e->link];

		if (exists && fstatat(rs->root, lead->path, &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
		    lst.st_ino == st.st_ino && lst.st_dev == st.st_dev)
			return 0;
		if (exists && unlinkat(rs->root, e->path, 0) < 0)
			goto fail;
		if (linkat(rs->root, lead->path, rs->root, e->path, 0) < 0)
			goto fail;
		return 0;
	}
	switch (e->mode & S_IFMT) {
	case S_IFDIR:
		if (exists && S_ISDIR(st.st_mode))
			return 0;
		if (mkdirat(rs->root, e->path, 0700) < 0)
			goto fail;
		return 0;
	case S_IFREG:
		if (exists && rs->delta && same_file(rs, w, e)) {
			rs->files_kept++;
			progress_advance(&rs->prog, e->size);
			return 0;
		}
		if (!e->has_sha) {
			snprintf(w->err, sizeof(w->err), "%s: the manifest has no contents for it",
				 e->path);
			return -EBADMSG;
		}
		return write_file(rs, w, e);
	case S_IFLNK:
		if (exists && S_ISLNK(st.st_mode)) {
			tl = readlinkat(rs->root, e->path, target, sizeof(target) - 1);
			if (tl >= 0 && (target[tl] = '\0', e->target && !strcmp(target, e->target)))
				return 0;
		}
		if (exists && unlinkat(rs->root, e->path, 0) < 0)
			goto fail;
		if (symlinkat(e->target ? e->target : "", rs->root, e->path) < 0)
			goto fail;
		return 0;
	default:
		if (exists && (st.st_mode & S_IFMT) == (e->mode & S_IFMT) &&
		    (uint64_t)st.st_rdev == e->rdev)
			return 0;
		if (exists && unlinkat(rs->root, e->path, 0) < 0)
			goto fail;
		if (mknodat(rs->root, e->path, e->mode & (S_IFMT | 0600), (dev_t)e->rdev) < 0)
			goto fail;
		return 0;
	}
fail:
	r = -errno;
	snprintf(w->err, sizeof(w->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
	return r;
}

/* xattrs exactly as e has them: set each, remove the others. */
static int set_xattrs(struct restore *rs, int fd, const struct manifest_entry *e)
{
	char *names = malloc(RESTORE_XLIST), name[256];
	size_t at = 0;
	ssize_t n;
	char *p;
	int r = 0;

	if (!names)
		return -ENOMEM;
	n = xattr_at_list(fd, true, names, RESTORE_XLIST);
	for (p = names; n > 0 && p < names + n; p += strlen(p) + 1) {
		const uint8_t *v;
		uint32_t vl;

		if (!manifest_xattr(e, p, &v, &vl)) {
			r = xattr_at_remove(fd, true, p);
			if (r < 0)
				goto out;
		}
	}
	while (at + 2 <= e->xattrs_len) {
		uint16_t nl = (uint16_t)(e->xattrs[at] | e->xattrs[at + 1] << 8);
		uint32_t vl;

		if (at + 6 + nl > e->xattrs_len || nl >= sizeof(name)) {
			r = -EBADMSG;
			goto out;
		}
		memcpy(name, e->xattrs + at + 2, nl);
		name[nl] = '\0';
		vl = (uint32_t)e->xattrs[at + 2 + nl] | (uint32_t)e->xattrs[at + 3 + nl] << 8 |
		     (uint32_t)e->xattrs[at + 4 + nl] << 16 |
		     (uint32_t)e->xattrs[at + 5 + nl] << 24;
		if (at + 6 + nl + vl > e->xattrs_len) {
			r = -EBADMSG;
			goto out;
		}
		r = xattr_at_set(fd, true, name, e->xattrs + at + 6 + nl, vl);
		if (r < 0)
			goto out;
		at += 6 + (size_t)nl + vl;
	}
out:
	free(names);
	return r;
}

/* Owner, mode, xattrs and (but for directories) times of e. */
static int set_meta(struct restore *rs, const struct manifest_entry *e)
{
	const char *p = at_path(e->path);
	struct timespec ts[2] = {{e->mtime_sec, e->mtime_nsec}, {e->mtime_sec, e->mtime_nsec}};
	int fd, r = 0;

	if (e->link != MANIFEST_NOLINK)
		return 0; /* one inode: its first name carries it */
	if (fchownat(rs->root, p, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
		goto fail;
	if (!S_ISLNK(e->mode) && fchmodat(rs->root, p, e->mode & 07777, 0) < 0)
		goto fail;
	fd = openat(rs->root, p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		goto fail;
	r = set_xattrs(rs, fd, e);
	close(fd);
	if (r < 0) {
		snprintf(rs->err, sizeof(rs->err), "%s/%s: xattrs: %s", rs->store, e->path,
			 strerror(-r));
		return r;
	}
	if (!S_ISDIR(e->mode) && utimensat(rs->root, p, ts, AT_SYMLINK_NOFOLLOW) < 0)
		goto fail;
	return 0;
fail:
	r = -errno;
	snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
	return r;
}

/* A regular file that is not a hard link of another: written by the workers. */
static int parallel_entry(const struct manifest_entry *e)
{
	return S_ISREG(e->mode) && e->link == MANIFEST_NOLINK && e->path[0];
}

static void *file_worker(void *arg)
{
	struct rworker *w = arg;
	struct restore *rs = w->rs;
	size_t i;

	for (;;) {
		pthread_mutex_lock(&rs->lock);
		if (rs->failed) {
			pthread_mutex_unlock(&rs->lock);
			break;
		}
		pthread_mutex_unlock(&rs->lock);
		i = atomic_fetch_add(&rs->next_file, 1);
		if (i >= rs->m.n)
			break;
		if (!parallel_entry(&rs->m.e[i]))
			continue;
		w->r = make_object(rs, w, &rs->m.e[i]);
		if (w->r < 0) {
			pthread_mutex_lock(&rs->lock);
			if (!rs->failed) {
				rs->failed = 1;
				snprintf(rs->err, sizeof(rs->err), "%s", w->err);
			}
			pthread_mutex_unlock(&rs->lock);
			break;
		}
	}
	return NULL;
}

/* The regular files, by rs->jobs threads.  0, or the first failure's -errno (rs->err). */
static int write_files(struct restore *rs)
{
	struct rworker *w = calloc(rs->jobs, sizeof(*w));
	unsigned i, started = 0;
	int r = 0;

	if (!w)
		return -ENOMEM;
	atomic_store(&rs->next_file, 0);
	for (i = 0; i < rs->jobs; i++) {
		w[i].rs = rs;
		w[i].id = i + 1;
		w[i].buf = malloc(RESTORE_IO);
		if (!w[i].buf || pthread_create(&w[i].thread, NULL, file_worker, &w[i]) != 0) {
			r = -ENOMEM;
			snprintf(rs->err, sizeof(rs->err), "cannot start a restore worker");
			pthread_mutex_lock(&rs->lock);
			rs->failed = 1;
			pthread_mutex_unlock(&rs->lock);
			break;
		}
		started++;
	}
	for (i = 0; i < started; i++)
		pthread_join(w[i].thread, NULL);
	for (i = 0; i < rs->jobs; i++) {
		if (w[i].r < 0 && r == 0)
			r = w[i].r;
		free(w[i].buf);
	}
	free(w);
	if (r == 0 && rs->failed)
		r = -EIO;
	return r;
}

/*
 * Directories first, in order; then the regular files in parallel; then
 * hard links, symlinks and special files; then everyone's metadata; then
 * the directories' times, once nothing is made in them any more.
 */
static int lay_down(struct restore *rs)
{
	struct rworker w0 = {.rs = rs, .buf = rs->buf};
	size_t i;
	int r;

	for (i = 0; i < rs->m.n; i++) {
		if (!S_ISDIR(rs->m.e[i].mode))
			continue;
		r = make_object(rs, &w0, &rs->m.e[i]);
		if (r < 0)
			goto fail;
	}
	r = write_files(rs);
	if (r < 0)
		return r;
	for (i = 0; i < rs->m.n; i++) {
		if (S_ISDIR(rs->m.e[i].mode) || parallel_entry(&rs->m.e[i]))
			continue;
		r = make_object(rs, &w0, &rs->m.e[i]);
		if (r < 0)
			goto fail;
	}
	for (i = 0; i < rs->m.n; i++) {
		r = set_meta(rs, &rs->m.e[i]);
		if (r < 0)
			return r;
	}
	for (i = 0; i < rs->m.n; i++) {
		const struct manifest_entry *e = &rs->m.e[i];
		struct timespec ts[2] = {{e->mtime_sec, e->mtime_nsec},
					 {e->mtime_sec, e->mtime_nsec}};

		if (S_ISDIR(e->mode) && utimensat(rs->root, at_path(e->path), ts, 0) < 0) {
			r = -errno;
			snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path,
				 strerror(errno));
			return r;
		}
	}
	return 0;
fail:
	snprintf(rs->err, sizeof(rs->err), "%s", w0.err);
	return r;
}

/* ---- the events --------------------------------------------------------- */

/* Read the events blob whole, checked against its name.  0 or -errno with rs->err. */
static int read_events(struct restore *rs, uint8_t **data, size_t *len)
{
	char blob[REPO_BLOB_PATH];
	uint8_t sha[MANIFEST_SHA];
	uint8_t *p = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, r;

	repo_blob_path(rs->m.events_sha, blob);
	r = repo_blob_open(rs->repo, rs->m.events_sha, &fd);
	if (r < 0) {
		snprintf(rs->err, sizeof(rs->err), "blob %s/%s (the backup's events): %s",
			 rs->repo_dir, blob, r == -ENOENT ? "missing" : strerror(-r));
		return r;
	}
	p = malloc(rs->m.events_bytes ? rs->m.events_bytes : 1);
	if (!p) {
		close(fd);
		snprintf(rs->err, sizeof(rs->err), "out of memory for the backup's events");
		return -ENOMEM;
	}
	while (got < rs->m.events_bytes) {
		n = read(fd, p + got, rs->m.events_bytes - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != rs->m.events_bytes || EVP_Digest(p, got, sha, NULL, EVP_sha256(), NULL) != 1 ||
	    memcmp(sha, rs->m.events_sha, sizeof(sha))) {
		free(p);
		snprintf(rs->err, sizeof(rs->err),
			 "blob %s/%s (the backup's events) is corrupt: its contents do not match "
			 "its SHA-256",
			 rs->repo_dir, blob);
		return -EBADMSG;
	}
	*data = p;
	*len = got;
	return 0;
}

/* ---- point in time ------------------------------------------------------ */

static uint64_t pos_of(const struct manifest *m, uint64_t origin)
{
	uint32_t i;

	for (i = 0; i < m->npos; i++)
		if (m->pos[i].origin == origin)
			return m->pos[i].seq;
	return 0;
}

/* Is manifest m before the target point (so it can start the restore)? */
static int before_target(const struct restore *rs, const struct manifest *m)
{
	if (rs->to_seq)
		return pos_of(m, rs->to_origin) <= rs->to_seqno;
	if (rs->to_time)
		return (int64_t)m->created * 1000 <= rs->to_ms;
	return 1;
}

/*
 * The archived events after the backup's position, up to the target, in
 * history order, into *evs (*n).  Each origin's events must follow on from
 * the backup's position without a gap up to what the target needs.  0, or
 * -1 with a message (a corrupt segment is named).
 */
static int load_archive(struct restore *rs, struct event **evs, size_t *n)
{
	struct event *all = NULL, *seg = NULL;
	uint64_t *origins = NULL, next;
	size_t norigins = 0, nall = 0, cap = 0, nseg, npaths = 0, i, k, o;
	char **paths = NULL;
	struct archive_seg h;
	int r;

	*evs = NULL;
	*n = 0;
	r = archive_origins(rs->repo, &origins, &norigins);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s/%s: %s\n", rs->repo_dir, ARCHIVE_DIR,
			strerror(-r));
		return -1;
	}
	for (o = 0; o < norigins; o++) {
		next = pos_of(&rs->m, origins[o]) + 1;
		r = archive_list(rs->repo, origins[o], &paths, &npaths);
		if (r < 0) {
			fprintf(stderr, "ledgerctl: restore: %s/%s/%016" PRIx64 ": %s\n",
				rs->repo_dir, ARCHIVE_DIR, origins[o], strerror(-r));
			goto fail;
		}
		for (i = 0; i < npaths; i++) {
			/* Names say the range: skip what the backup holds without reading it. */
			const char *base = strrchr(paths[i], '/') + 1;
			uint64_t last = strtoull(base + 21, NULL, 10);

			if (last < next)
				continue;
			if (archive_segment_read(paths[i], &h, &seg, &nseg, rs->err,
						 sizeof(rs->err)) < 0) {
				fprintf(stderr, "ledgerctl: restore: refused: %s\n", rs->err);
				goto fail;
			}
			if (h.first > next) {
				backup_events_free(seg, nseg);
				break; /* a gap: what follows cannot be applied */
			}
			for (k = 0; k < nseg; k++) {
				if (seg[k].seq != next) {
					event_free(&seg[k]);
					continue;
				}
				if (grow_array(&all, &cap, nall + 1) < 0) {
					backup_events_free(seg + k, nseg - k);
					seg = NULL;
					fprintf(stderr, "ledgerctl: restore: out of memory\n");
					goto fail;
				}
				all[nall++] = seg[k];
				memset(&seg[k], 0, sizeof(seg[k]));
				next++;
			}
			free(seg);
			seg = NULL;
		}
		if (rs->to_seq && origins[o] == rs->to_origin && next <= rs->to_seqno) {
			fprintf(
			    stderr,
			    "ledgerctl: restore: the archive in %s holds the events of %016" PRIx64
			    " only up to %" PRIu64
			    " after the backup %s: it does not reach %" PRIu64 "\n",
			    rs->repo_dir, origins[o], next - 1, rs->mname, rs->to_seqno);
			goto fail;
		}
		repo_names_free(paths, npaths);
		paths = NULL;
		npaths = 0;
	}
	if (nall)
		qsort(all, nall, sizeof(*all), backup_events_order);
	/* Cut at the target. */
	if (rs->to_seq) {
		for (i = 0; i < nall; i++)
			if (all[i].origin == rs->to_origin && all[i].seq == rs->to_seqno)
				break;
		if (i == nall && rs->to_seqno > pos_of(&rs->m, rs->to_origin)) {
			fprintf(stderr,
				"ledgerctl: restore: the archive in %s lacks %016" PRIx64
				":%" PRIu64 "\n",
				rs->repo_dir, rs->to_origin, rs->to_seqno);
			goto fail;
		}
		k = i == nall ? 0 : i + 1;
		for (i = k; i < nall; i++)
			event_free(&all[i]);
	} else {
		/*
		 * Every event made at or before the time: of each origin a prefix
		 * (its times rise with its seqs), whatever order the origins sort in.
		 */
		for (i = 0, k = 0; i < nall; i++) {
			if ((int64_t)(all[i].hlc >> 16) <= rs->to_ms)
				all[k++] = all[i];
			else
				event_free(&all[i]);
		}
	}
	*evs = all;
	*n = k;
	free(origins);
	return 0;
fail:
	repo_names_free(paths, npaths);
	backup_events_free(all, nall);
	free(origins);
	return -1;
}

/* "ORIGIN:SEQ" or a time for --to-seq / --to-time.  0 or -1 with a message. */
static int parse_target(struct restore *rs, int seq, const char *arg)
{
	char *end;
	struct tm tm;
	const char *p;
	double secs;

	if (seq) {
		char id[17];

		p = strchr(arg, ':');
		if (!p || p - arg != 16)
			goto bad;
		memcpy(id, arg, 16);
		id[16] = '\0';
		if (config_parse_id(id, &rs->to_origin) < 0)
			goto bad;
		rs->to_seqno = strtoull(p + 1, &end, 10);
		if (*end || end == p + 1 || rs->to_seqno == 0)
			goto bad;
		rs->to_seq = 1;
		return 0;
	}
	secs = strtod(arg, &end);
	if (!*end && end != arg && secs > 0) {
		rs->to_ms = (int64_t)(secs * 1000.0);
		rs->to_time = 1;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	p = strptime(arg, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		goto bad;
	rs->to_ms = (int64_t)timegm(&tm) * 1000;
	if (*p == '.') {
		long ms = strtol(p + 1, &end, 10);
		size_t digits = (size_t)(end - p - 1);

		while (digits < 3) {
			ms *= 10;
			digits++;
		}
		while (digits-- > 3)
			ms /= 10;
		rs->to_ms += ms;
		p = end;
	}
	if (*p == 'Z')
		p++;
	if (*p)
		goto bad;
	rs->to_time = 1;
	return 0;
bad:
	fprintf(stderr, "ledgerctl: restore: %s: '%s' is not %s\n", seq ? "--to-seq" : "--to-time",
		arg,
		seq ? "ORIGIN:SEQ (16 hex digits, a colon, a seq)"
		    : "Unix seconds or YYYY-MM-DDTHH:MM:SS[.mmm]Z");
	return -1;
}

/* ---- --node ------------------------------------------------------------- */

/* Check the node directory before anything is written.  0 or -1 with a message. */
static int check_node_dir(struct restore *rs)
{
	char path[PATH_MAX + 32], err[1024];
	struct config cfg;

	snprintf(path, sizeof(path), "%s/%s", rs->target, CONFIG_FILE);
	if (config_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr,
			"ledgerctl: restore: --node: %s (make the node with 'ledgerctl init' "
			"first)\n",
			err);
		return -1;
	}
	if (strcmp(cfg.name, rs->node_name)) {
		fprintf(stderr, "ledgerctl: restore: --node %s: %s is node %s\n", rs->node_name,
			rs->target, cfg.name);
		return -1;
	}
	if (memcmp(cfg.cluster_id, rs->m.cluster, sizeof(cfg.cluster_id))) {
		fprintf(stderr,
			"ledgerctl: restore: --node: %s is of another cluster than the backup "
			"(of node %s)\n",
			rs->target, rs->m.node);
		return -1;
	}
	return 0;
}

/*
 * Origin's events up to seq are in the store, not in the journal: applied
 * and trimmed there, as after a snapshot resync.
 */
static int mark_at_least(struct journal *j, uint64_t origin, uint64_t seq)
{
	uint64_t trimmed = 0;
	int r;

	if (journal_applied(j, origin) < seq)
		journal_mark_applied(j, origin, seq);
	r = journal_trimmed(j, origin, &trimmed);
	if (r == 0 && trimmed < seq)
		r = journal_trim(j, origin, seq, NULL);
	return r;
}

/*
 * The node starts where the store now is: the backup's position (its
 * applied vector), moved on by the archived events replayed after it
 * (arch[0..narch), of each origin a run going on from that position).
 */
static int set_node_position(struct restore *rs, const struct event *arch, size_t narch)
{
	struct node *n = NULL;
	struct journal *j;
	char err[1024];
	uint8_t none[5] = {0};
	size_t i;
	int r;

	r = node_open(rs->target, 0, &n, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s\n", err);
		return -1;
	}
	j = node_journal(n);
	for (i = 0; i < rs->m.npos; i++) {
		if (rs->m.pos[i].origin == journal_node_id(j) && rs->m.pos[i].seq) {
			fprintf(stderr,
				"ledgerctl: restore: --node: %s has the id of the backup's origin "
				"%016" PRIx64 "; make a new node with 'ledgerctl init'\n",
				rs->target, rs->m.pos[i].origin);
			node_close(n, 1);
			return -1;
		}
		r = mark_at_least(j, rs->m.pos[i].origin, rs->m.pos[i].seq);
		if (r < 0)
			break;
	}
	/* Each origin's last archived event: the runs go on from the backup's position. */
	for (i = narch; r == 0 && i-- > 0;) {
		size_t k;

		if (arch[i].origin == journal_node_id(j)) {
			fprintf(stderr,
				"ledgerctl: restore: --node: %s has the id of an archived origin "
				"%016" PRIx64 "; make a new node with 'ledgerctl init'\n",
				rs->target, arch[i].origin);
			node_close(n, 1);
			return -1;
		}
		for (k = i + 1; k < narch && arch[k].origin != arch[i].origin; k++)
			;
		if (k == narch)
			r = mark_at_least(j, arch[i].origin, arch[i].seq);
	}
	/* A snapshot asked for by 'init --join' is not needed now: the store is at pos. */
	if (r == 0)
		r = journal_meta_put(j, JOURNAL_META_SNAP, none, sizeof(none), 0);
	if (r == 0)
		r = journal_sync(j);
	node_close(n, 1);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s/%s: %s\n", rs->target, NODE_JOURNAL_DIR,
			strerror(-r));
		return -1;
	}
	return 0;
}

/* ---- the command ------------------------------------------------------------ */

static int pick_backup(struct restore *rs)
{
	char **names = NULL;
	size_t n = 0;
	size_t i;
	int r;

	if (rs->backup_name) {
		snprintf(rs->mname, sizeof(rs->mname), "%s", rs->backup_name);
		if (repo_manifest_read(rs->repo, rs->mname, &rs->m, rs->err, sizeof(rs->err)) < 0) {
			fprintf(stderr, "ledgerctl: restore: refused: %s\n", rs->err);
			return -1;
		}
		if (!before_target(rs, &rs->m)) {
			fprintf(stderr, "ledgerctl: restore: backup %s is past the target point\n",
				rs->mname);
			return -1;
		}
		return 0;
	}
	r = repo_manifest_list(rs->repo, &names, &n);
	if (r < 0 || n == 0) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->repo_dir,
			r < 0 ? strerror(-r) : "holds no backup");
		repo_names_free(names, n);
		return -1;
	}
	/* The newest backup before the target; a corrupt manifest is refused. */
	for (i = n; i-- > 0;) {
		snprintf(rs->mname, sizeof(rs->mname), "%s", names[i]);
		if (repo_manifest_read(rs->repo, rs->mname, &rs->m, rs->err, sizeof(rs->err)) < 0) {
			fprintf(stderr, "ledgerctl: restore: refused: %s\n", rs->err);
			repo_names_free(names, n);
			return -1;
		}
		if (before_target(rs, &rs->m))
			break;
		manifest_free(&rs->m);
	}
	repo_names_free(names, n);
	if (i == (size_t)-1) {
		fprintf(stderr, "ledgerctl: restore: %s holds no backup before the target point\n",
			rs->repo_dir);
		return -1;
	}
	return 0;
}

/* The target store: made (empty), or existing for --delta and --node. */
static int open_target(struct restore *rs)
{
	struct stat st;
	int r;

	snprintf(rs->store, sizeof(rs->store), "%s/%s", rs->target, NODE_STORE_DIR);
	snprintf(rs->marker, sizeof(rs->marker), "%s/%s", rs->target, RESTORE_MARKER);
	if (mkdir(rs->target, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->target, strerror(errno));
		return -1;
	}
	if (stat(rs->store, &st) < 0) {
		if (errno != ENOENT || mkdir(rs->store, 0755) < 0) {
			fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->store, strerror(errno));
			return -1;
		}
	} else if (!rs->delta && stat(rs->marker, &st) == 0) {
		/* A restore cut short: take it up where it stopped. */
		fprintf(stderr, "ledgerctl: restore: %s: resuming an interrupted restore\n",
			rs->store);
		rs->delta = 1;
	} else if (!rs->delta) {
		r = dir_is_empty(rs->store);
		if (r != 1) {
			fprintf(stderr,
				"ledgerctl: restore: %s: %s (use --delta to restore over it)\n",
				rs->store, r < 0 ? strerror(-r) : "not empty");
			return -1;
		}
	}
	rs->root = open(rs->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rs->root < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->store, strerror(errno));
		return -1;
	}
	r = file_write_atomic(rs->marker, rs->mname, strlen(rs->mname), 0600);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->marker, strerror(-r));
		return -1;
	}
	return 0;
}

/*
 * A manifest's checksum shows it is whole, not that whoever wrote it meant
 * well: before anything is written, every entry must be a valid store path
 * (path_check(): no "..", no absolute path) whose parent is a directory
 * entry before it, named once, so that laying the entries down in order
 * never goes through a symlink or out of the store; the root comes first;
 * a hard link names a regular file.  0 or -1 with a message.
 */
static int validate_manifest(struct restore *rs)
{
	const char *why = NULL;
	char parent[PATH_MAX];
	size_t i;

	rs->sorted = malloc((rs->m.n ? rs->m.n : 1) * sizeof(*rs->sorted));
	if (!rs->sorted) {
		fprintf(stderr, "ledgerctl: restore: out of memory\n");
		return -1;
	}
	for (i = 0; i < rs->m.n; i++)
		rs->sorted[i] = i;
	qsort_r(rs->sorted, rs->m.n, sizeof(*rs->sorted), cmp_index, &rs->m);
	if (!rs->m.n || rs->m.e[0].path[0] || !S_ISDIR(rs->m.e[0].mode)) {
		why = "its first entry is not the store's root directory";
		i = 0;
		goto bad;
	}
	for (i = 1; i < rs->m.n; i++) {
		const struct manifest_entry *e = &rs->m.e[i], *up;
		const char *slash = strrchr(e->path, '/');
		size_t plen = slash ? (size_t)(slash - e->path) : 0;

		if (i < rs->m.n &&
		    !strcmp(rs->m.e[rs->sorted[i - 1]].path, rs->m.e[rs->sorted[i]].path)) {
			why = "a path named twice";
			i = rs->sorted[i];
			goto bad;
		}
		if (path_check(e->path, &why) < 0 || path_is_root(e->path))
			goto bad;
		if (plen >= sizeof(parent)) {
			why = "path too long";
			goto bad;
		}
		memcpy(parent, e->path, plen);
		parent[plen] = '\0';
		up = find_entry(rs, parent);
		if (!up || !S_ISDIR(up->mode) || up >= e) {
			why = "its parent is not a directory entry before it";
			goto bad;
		}
		if (e->link != MANIFEST_NOLINK &&
		    (!S_ISREG(e->mode) || !S_ISREG(rs->m.e[e->link].mode) ||
		     rs->m.e[e->link].link != MANIFEST_NOLINK)) {
			why = "a hard link of something other than a regular file";
			goto bad;
		}
		if (S_ISREG(e->mode) && e->link == MANIFEST_NOLINK && !e->has_sha) {
			why = "a regular file without contents";
			goto bad;
		}
	}
	return 0;
bad:
	fprintf(stderr, "ledgerctl: restore: refused: manifest %s/%s/%s: entry %zu (%s): %s\n",
		rs->repo_dir, REPO_MANIFESTS, rs->mname, i, i < rs->m.n ? rs->m.e[i].path : "",
		why ? why : "invalid");
	return -1;
}

static int prune(struct restore *rs)
{
	struct treewalk_ops ops = {.entry = prune_entry};
	struct treewalk tw = {0};
	int r;

	r = treewalk_open(&tw, rs->root, ".", O_NOFOLLOW);
	if (r == 0)
		r = treewalk_run(&tw, &ops, rs, NULL);
	treewalk_close(&tw);
	if (r < 0 && !rs->err[0])
		snprintf(rs->err, sizeof(rs->err), "%s: %s", rs->store, strerror(-r));
	return r;
}

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"delta", no_argument, NULL, 'd'},	       {"node", required_argument, NULL, 'n'},
	    {"backup", required_argument, NULL, 'b'},  {"to-seq", required_argument, NULL, 's'},
	    {"to-time", required_argument, NULL, 't'}, {"jobs", required_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},	       {NULL, 0, NULL, 0}};
	struct restore rs = {.root = -1, .lock = PTHREAD_MUTEX_INITIALIZER};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	struct event *evs = NULL, *arch = NULL;
	size_t narch = 0;
	uint64_t arch_applied = 0;
	struct store *s = NULL;
	uint8_t *events = NULL;
	size_t nevs = 0, elen = 0, i;
	uint64_t applied = 0, skipped = 0, total = 0;
	char err[RESTORE_ERR], hb[32];
	int c, rc = 1, r;

	rs.jobs = cpus > 0 ? (unsigned)(cpus < 64 ? cpus : 64) : 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			rs.delta = 1;
			break;
		case 'n':
			rs.node_name = optarg;
			break;
		case 'b':
			rs.backup_name = optarg;
			break;
		case 'j': {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || end == optarg || v == 0 || v > 64) {
				fprintf(stderr,
					"ledgerctl: restore: --jobs: not a number from 1 to 64: "
					"'%s'\n",
					optarg);
				return 2;
			}
			rs.jobs = (unsigned)v;
			break;
		}
		case 's':
		case 't':
			if (rs.to_seq || rs.to_time) {
				fprintf(stderr,
					"ledgerctl: restore: one of --to-seq and --to-time\n");
				return 2;
			}
			if (parse_target(&rs, c == 's', optarg) < 0)
				return 2;
			break;
		case 'h':
			restore_usage(stdout);
			return 0;
		default:
			restore_usage(stderr);
			return 2;
		}
	}
	if (optind + 2 != argc) {
		restore_usage(stderr);
		return 2;
	}
	rs.repo_dir = argv[optind];
	rs.target = argv[optind + 1];
	if (repo_open(rs.repo_dir, 0, &rs.repo, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: restore: %s\n", err);
		return 1;
	}
	r = repo_lock(rs.repo, 0, 1);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s/%s: %s\n", rs.repo_dir, REPO_LOCK,
			strerror(-r));
		goto out;
	}
	rs.buf = malloc(RESTORE_IO);
	if (!rs.buf || pick_backup(&rs) < 0 || validate_manifest(&rs) < 0)
		goto out;
	/* Every check that needs no writing first: the events, the node directory. */
	if (read_events(&rs, &events, &elen) < 0 ||
	    backup_events_decode(events, elen, &evs, &nevs, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: restore: refused: %s%s\n",
			rs.err[0] ? "" : "the backup's events: ", rs.err[0] ? rs.err : err);
		goto out;
	}
	if (rs.node_name && check_node_dir(&rs) < 0)
		goto out;
	if (open_target(&rs) < 0)
		goto out;
	for (i = 0; i < rs.m.n; i++)
		if (S_ISREG(rs.m.e[i].mode) && rs.m.e[i].link == MANIFEST_NOLINK)
			total += rs.m.e[i].size;
	progress_init(&rs.prog, "restore", total, 1);
	r = rs.delta ? prune(&rs) : 0;
	if (r == 0)
		r = lay_down(&rs);
	progress_end(&rs.prog);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s%s\n", r == -EBADMSG ? "refused: " : "",
			rs.err);
		goto out;
	}
	r = store_open(rs.store, &s);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs.store, strerror(-r));
		goto out;
	}
	r = backup_events_apply(s, evs, nevs, 1, &applied, &skipped, err, sizeof(err));
	if (r < 0) {
		store_close(s);
		fprintf(stderr, "ledgerctl: restore: %s: replaying the backup's events: %s\n",
			rs.store, err);
		goto out;
	}
	if (rs.to_seq || rs.to_time) {
		if (load_archive(&rs, &arch, &narch) < 0) {
			store_close(s);
			goto out;
		}
		r = backup_events_apply(s, arch, narch, 0, &arch_applied, &skipped, err,
					sizeof(err));
		if (r < 0) {
			store_close(s);
			fprintf(stderr, "ledgerctl: restore: %s: replaying the archive: %s\n",
				rs.store, err);
			goto out;
		}
	}
	store_close(s);
	if (syncfs(rs.root) < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: syncfs: %s\n", rs.store, strerror(errno));
		goto out;
	}
	if (rs.node_name && set_node_position(&rs, arch, narch) < 0)
		goto out;
	if (unlink(rs.marker) < 0)
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs.marker, strerror(errno));
	printf("restored %s (node %s) into %s: %zu entries, %" PRIu64
	       " files written (%s), %" PRIu64 " kept, %" PRIu64 " removed, %" PRIu64
	       " events replayed (%" PRIu64 " already shown) in %.1f s\n",
	       rs.mname, rs.m.node, rs.store, rs.m.n, (uint64_t)rs.files_written,
	       progress_human(rs.bytes_written, hb, sizeof(hb)), (uint64_t)rs.files_kept,
	       rs.removed, applied, skipped, progress_seconds(&rs.prog));
	if (rs.to_seq || rs.to_time) {
		printf("then %" PRIu64 " archived events", arch_applied);
		if (narch)
			printf(", the last %016" PRIx64 ":%" PRIu64, arch[narch - 1].origin,
			       arch[narch - 1].seq);
		printf("\n");
	}
	rc = 0;
out:
	backup_events_free(arch, narch);
	backup_events_free(evs, nevs);
	free(events);
	free(rs.sorted);
	free(rs.buf);
	if (rs.root >= 0)
		close(rs.root);
	manifest_free(&rs.m);
	repo_close(rs.repo);
	return rc;
}
