/*
 * snapshot.c - reading entries to send, staging received ones and the
 * install plan of a snapshot resync (see snapshot.h).
 *
 * Staged objects are the entries themselves, made in snap/obj/ with their
 * final owner, mode, xattrs and mtime, so the install only renames them
 * into the store: no copy, and nothing of an object can be half-installed.
 * snap/ and the store are on one filesystem (both under NODE_DIR) for that.
 *
 * Every step of the install is written to be run again: each one looks at
 * the store first and does nothing when it finds its work done, so a crash
 * anywhere in an install is repaired by running the whole plan again.
 * Directories are removed without following symlinks and without leaving
 * the tree: one descriptor at a time, stepping with lib/treewalk.c, which
 * opens each relative to its parent with O_NOFOLLOW and comes back up
 * through ".." only after checking that it is the directory it came down
 * from.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/bytes.h"
#include "lib/crc32c.h"
#include "lib/dirscan.h"
#include "lib/grow.h"
#include "lib/log.h"
#include "lib/treewalk.h"
#include "lib/files.h"
#include "resync/snap_meta.h"
#include "resync/snapshot.h"
#include "store/path.h"
#include "store/store.h"
#include "store/xattr_at.h"

#define OBJ_DIR	   "obj"
#define PLAN_NAME  "plan"
#define PLAN_TMP   "plan.tmp"
#define TMP_PREFIX "tmp."
#define HEX_LEN	   (2 * SNAP_DIGEST_LEN)

#define PLAN_MAGIC   "LFSP"
#define PLAN_VERSION 1
/* magic, version, count */
#define PLAN_HEADER_LEN (4 + 2 + 4)
#define PLAN_CRC_LEN	4
/* The smallest step: op, path_len, a one-byte path, a LINK's one-byte link_to. */
#define PLAN_MIN_STEP (1 + 2 + 1 + 2 + 1)

/* The fid and version xattr values: two little-endian u64. */
#define ID_XATTR_LEN 16

/* A finished object still under its temporary name, until snap_stage_flush(). */
struct pending_obj {
	char tmp[sizeof(TMP_PREFIX) + HEX_LEN + 24];
	char hex[HEX_LEN + 1];
};

struct snap_stage {
	int dirfd; /* NODE_DIR/snap, read-only: fsync'd after the plan is renamed */
	int objfd; /* NODE_DIR/snap/obj */
	/* Makes temporary names unique when several objects of one digest are in flight. */
	atomic_ulong next_tmp;
	/* Objects are committed and flushed by several threads (snap_pipe.c). */
	pthread_mutex_t lock;
	struct pending_obj *pend; /* finished, not yet known durable; guarded by lock */
	size_t npend, pend_cap;	  /* guarded by lock */
};

struct snap_obj {
	struct snap_stage *s;
	struct snap_meta m;
	char hex[HEX_LEN + 1];
	char tmp[sizeof(TMP_PREFIX) + HEX_LEN + 24]; /* "" once renamed into place */
	int fd; /* regular file: its temporary file, read-write; -1 otherwise */
};

/* Bounds-checked reading of a plan. */
struct cursor {
	const uint8_t *p;
	size_t left;
};

static void hex_name(const uint8_t digest[SNAP_DIGEST_LEN], char out[HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < SNAP_DIGEST_LEN; i++) {
		out[2 * i] = digits[digest[i] >> 4];
		out[2 * i + 1] = digits[digest[i] & 15];
	}
	out[HEX_LEN] = '\0';
}

static int unlink_entry(int dfd, const char *name, int flags)
{
	if (unlinkat(dfd, name, flags) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/*
 * One pass of remove_tree() over a directory: non-directories are
 * unlinked, empty subdirectories removed; the first subdirectory that is
 * not empty is copied to arg and ends the pass (1).  0 when the pass saw
 * nothing left.
 */
static int clear_entry(int dfd, const char *name, void *arg)
{
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink_entry(dfd, name, 0);
	if (unlinkat(dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
		return 0;
	if (errno != ENOTEMPTY && errno != EEXIST)
		return -errno;
	memcpy(arg, name, strlen(name) + 1);
	return 1;
}

/*
 * Remove name in parent and, if it is a directory, everything beneath it;
 * 0 if it is not there.  One directory descriptor is open at a time, so the
 * depth of the tree is not limited by descriptors or stack.
 */
static int remove_tree(int parent, const char *name)
{
	char sub[NAME_MAX + 1];
	struct treewalk tw;
	struct stat st;
	int r;

	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink_entry(parent, name, 0);
	r = treewalk_open(&tw, parent, name, O_NOFOLLOW);
	if (r < 0) {
		treewalk_close(&tw);
		return r == -ENOENT ? 0 : r;
	}
	for (;;) {
		r = dir_scan(tw.fd, clear_entry, sub);
		if (r == 1)
			r = treewalk_down(&tw, sub);
		else if (r == 0 && tw.depth > 0)
			r = treewalk_up(&tw);
		else
			break;
		if (r < 0)
			break;
	}
	treewalk_close(&tw);
	return r < 0 ? r : unlink_entry(parent, name, AT_REMOVEDIR);
}

/* The xattr names of fd, NUL-separated, into *names (malloc'd, caller frees; NULL if none). */
static int xattr_names(int fd, int opath, char **names, size_t *len)
{
	ssize_t n, got;
	char *p;
	int e;

	*names = NULL;
	*len = 0;
	for (;;) {
		n = xattr_at_list(fd, opath, NULL, 0);
		if (n < 0)
			return errno == ENOTSUP ? 0 : -errno;
		if (n == 0)
			return 0;
		p = malloc((size_t)n);
		if (!p)
			return -ENOMEM;
		got = xattr_at_list(fd, opath, p, (size_t)n);
		if (got >= 0) {
			*names = p;
			*len = (size_t)got;
			return 0;
		}
		e = errno;
		free(p);
		/* ERANGE: a name was added since the size was asked. */
		if (e != ERANGE)
			return -e;
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Pointers to the covered names among names, sorted; *v malloc'd, caller frees. */
static int covered_sorted(char *names, size_t len, char ***v, size_t *n)
{
	size_t count = 0, i = 0;
	char *p;

	*v = NULL;
	*n = 0;
	for (p = names; p < names + len; p += strlen(p) + 1)
		count += xattr_replicated(p, strlen(p));
	if (!count)
		return 0;
	*v = malloc(count * sizeof(char *));
	if (!*v)
		return -ENOMEM;
	for (p = names; p < names + len; p += strlen(p) + 1)
		if (xattr_replicated(p, strlen(p)))
			(*v)[i++] = p;
	qsort(*v, count, sizeof(char *), cmp_str);
	*n = count;
	return 0;
}

/* Append name and its value to b; an xattr removed since it was listed is left out. */
static int blob_add(struct buf *b, int fd, int opath, const char *name, uint16_t *count)
{
	size_t nlen = strlen(name), head = 1 + nlen + 4;
	ssize_t n, got;
	int err;

	if (nlen == 0 || nlen > UINT8_MAX)
		return -ENAMETOOLONG;
	for (;;) {
		n = xattr_at_get(fd, opath, name, NULL, 0);
		if (n < 0)
			return errno == ENODATA ? 0 : -errno;
		err = buf_reserve(b, head + (size_t)n);
		if (err)
			return err;
		got = xattr_at_get(fd, opath, name, b->data + b->len + head, (size_t)n);
		if (got >= 0)
			break;
		if (errno == ENODATA)
			return 0;
		/* ERANGE: the value grew since its size was asked. */
		if (errno != ERANGE)
			return -errno;
	}
	b->data[b->len] = (uint8_t)nlen;
	memcpy(b->data + b->len + 1, name, nlen);
	put_le32(b->data + b->len + 1 + nlen, (uint32_t)got);
	b->len += head + (size_t)got;
	(*count)++;
	return 0;
}

int snap_xattrs_read(int fd, int opath, uint8_t **blob, size_t *len)
{
	struct buf b = BUF_INIT;
	char *names = NULL, **v = NULL;
	size_t nlen, n = 0, i;
	uint16_t count = 0;
	int err;

	*blob = NULL;
	*len = 0;
	err = xattr_names(fd, opath, &names, &nlen);
	if (!err)
		err = covered_sorted(names, nlen, &v, &n);
	if (err || n == 0)
		goto out;
	if (n > UINT16_MAX) {
		err = -E2BIG;
		goto out;
	}
	err = buf_put16(&b, 0);
	for (i = 0; i < n && !err; i++)
		err = blob_add(&b, fd, opath, v[i], &count);
	if (err || count == 0)
		goto out;
	put_le16(b.data, count);
	*blob = b.data;
	*len = b.len;
	b.data = NULL;
out:
	buf_free(&b);
	free(v);
	free(names);
	return err;
}

static int xattrs_set_all(int fd, int opath, const uint8_t *blob, size_t len)
{
	char name[UINT8_MAX + 1];
	unsigned i, count = xattr_blob_count(blob, len);
	size_t off = 2;
	struct xent e;
	int err = 0;

	for (i = 0; i < count && !err; i++) {
		xattr_blob_next(blob, &off, &e);
		memcpy(name, e.name, e.name_len);
		name[e.name_len] = '\0';
		err = xattr_at_set(fd, opath, name, e.value, e.value_len);
	}
	return err;
}

/*
 * Make the covered xattrs of fd exactly those of the checked blob; *changed
 * set if anything had to change.  Names not covered are not touched.
 */
static int xattrs_make_exact(int fd, int opath, const uint8_t *blob, size_t len, bool *changed)
{
	char name[UINT8_MAX + 1];
	uint8_t *cur = NULL;
	unsigned i, count;
	size_t cur_len, off;
	struct xent e;
	int err;

	err = snap_xattrs_read(fd, opath, &cur, &cur_len);
	if (err)
		return err;
	count = xattr_blob_count(cur, cur_len);
	for (i = 0, off = 2; i < count && !err; i++) {
		xattr_blob_next(cur, &off, &e);
		if (xattr_blob_holds(blob, len, &e, false))
			continue;
		memcpy(name, e.name, e.name_len);
		name[e.name_len] = '\0';
		err = xattr_at_remove(fd, opath, name);
		*changed = true;
	}
	count = xattr_blob_count(blob, len);
	for (i = 0, off = 2; i < count && !err; i++) {
		xattr_blob_next(blob, &off, &e);
		if (xattr_blob_holds(cur, cur_len, &e, true))
			continue;
		memcpy(name, e.name, e.name_len);
		name[e.name_len] = '\0';
		err = xattr_at_set(fd, opath, name, e.value, e.value_len);
		*changed = true;
	}
	free(cur);
	return err;
}

/* A symlink's target into *target (malloc'd, caller frees) and its length into *len. */
static int read_target(int fd, size_t hint, char **target, size_t *len)
{
	size_t size = hint + 1 > 256 ? hint + 1 : 256;
	ssize_t n;
	char *p;

	for (;;) {
		p = malloc(size);
		if (!p)
			return -ENOMEM;
		n = readlinkat(fd, "", p, size);
		if (n >= 0 && (size_t)n < size)
			break;
		free(p);
		if (n < 0)
			return -errno;
		if (size >= PATH_MAX)
			return -ENAMETOOLONG;
		size *= 2;
	}
	p[n] = '\0';
	*target = p;
	*len = (size_t)n;
	return 0;
}

/* A read-only descriptor of the regular file open at pfd (O_PATH), the same inode. */
static int reopen_read(int pfd, int *fd)
{
	char proc[PATH_PROCFD_LEN];
	int r = open(path_procfd(pfd, proc), O_RDONLY | O_NOCTTY | O_CLOEXEC);

	if (r < 0)
		return -errno;
	*fd = r;
	return 0;
}

/* The rest of m from st, once the xattrs are in; a symlink's target is read from pfd. */
static int meta_fill(struct snap_meta *m, const struct stat *st, int pfd)
{
	const char *why;
	size_t len = 0;
	int err;

	m->mode = st->st_mode;
	m->uid = st->st_uid;
	m->gid = st->st_gid;
	m->mtime_sec = st->st_mtim.tv_sec;
	m->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	if (S_ISREG(st->st_mode))
		m->size = (uint64_t)st->st_size;
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
		m->rdev = st->st_rdev;
	if (S_ISLNK(st->st_mode)) {
		err = read_target(pfd, (size_t)st->st_size, &m->target, &len);
		if (err)
			return err;
		m->size = len;
	}
	err = snap_xattrs_check(m->xattrs, m->xattrs_len, &m->fid, &m->ver, &why);
	if (err)
		log_err("snapshot: xattrs read from the store refused: %s", why);
	return err;
}

int snap_read_entry(int root_fd, const char *path, struct snap_meta *m, int *fd)
{
	int pfd = -1, rfd = -1, err;
	const char *why;
	struct stat st;

	memset(m, 0, sizeof(*m));
	*fd = -1;
	if (path_check(path, &why) < 0)
		return -EINVAL;
	err = path_open(root_fd, path, O_PATH, 0, &pfd);
	/* A parent that is no longer a directory (or became a symlink): the path is gone. */
	if (err == -ENOTDIR || err == -ELOOP)
		err = -ENOENT;
	if (err)
		goto out;
	if (fstat(pfd, &st) < 0) {
		err = -errno;
		goto out;
	}
	if (S_ISREG(st.st_mode)) {
		err = reopen_read(pfd, &rfd);
		if (err)
			goto out;
	}
	/* Xattrs first: the stat and contents that follow are at least as new. */
	err = snap_xattrs_read(rfd >= 0 ? rfd : pfd, rfd < 0, &m->xattrs, &m->xattrs_len);
	if (err)
		goto out;
	if (fstat(rfd >= 0 ? rfd : pfd, &st) < 0) {
		err = -errno;
		goto out;
	}
	err = meta_fill(m, &st, pfd);
	if (err)
		goto out;
	*fd = rfd;
	rfd = -1;
out:
	if (rfd >= 0)
		close(rfd);
	if (pfd >= 0)
		close(pfd);
	if (err)
		snap_meta_free(m);
	return err;
}

/* Make name in dfd a directory if it is not there; a new one is made durable in dfd. */
static int make_dir(int dfd, const char *name)
{
	if (mkdirat(dfd, name, 0700) < 0)
		return errno == EEXIST ? 0 : -errno;
	return fsync(dfd) < 0 ? -errno : 0;
}

static int open_dir(int dfd, const char *name, int flags, int *fd)
{
	int r = openat(dfd, name, flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (r < 0)
		return -errno;
	*fd = r;
	return 0;
}

/* Unlink the temporary files of an interrupted attempt. */
static int remove_leftover(int dfd, const char *name, void *arg)
{
	if (strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
		return 0;
	return unlink_entry(dfd, name, 0);
}

int snap_stage_open(const char *node_dir, struct snap_stage **out)
{
	struct snap_stage *s;
	int nfd = -1, err;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->dirfd = s->objfd = -1;
	atomic_init(&s->next_tmp, 0);
	pthread_mutex_init(&s->lock, NULL);
	nfd = open(node_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (nfd < 0) {
		err = -errno;
		goto out;
	}
	err = make_dir(nfd, SNAP_DIR);
	if (!err)
		err = open_dir(nfd, SNAP_DIR, O_RDONLY, &s->dirfd);
	if (!err)
		err = make_dir(s->dirfd, OBJ_DIR);
	if (!err)
		err = open_dir(s->dirfd, OBJ_DIR, O_RDONLY, &s->objfd);
	if (!err)
		err = dir_scan(s->objfd, remove_leftover, NULL);
	if (err)
		goto out;
	*out = s;
	s = NULL;
out:
	if (nfd >= 0)
		close(nfd);
	snap_stage_close(s);
	return err;
}

void snap_stage_close(struct snap_stage *s)
{
	if (!s)
		return;
	free(s->pend);
	pthread_mutex_destroy(&s->lock);
	if (s->objfd >= 0)
		close(s->objfd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s);
}

int snap_stage_has(struct snap_stage *s, const uint8_t digest[SNAP_DIGEST_LEN])
{
	char hex[HEX_LEN + 1];
	struct stat st;

	hex_name(digest, hex);
	if (fstatat(s->objfd, hex, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	return errno == ENOENT ? 0 : -errno;
}

static int add_size(int dfd, const char *name, void *arg)
{
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		*(uint64_t *)arg += (uint64_t)st.st_size;
	return 0;
}

uint64_t snap_stage_bytes(struct snap_stage *s)
{
	uint64_t total = 0;

	return dir_scan(s->objfd, add_size, &total) < 0 ? 0 : total;
}

int snap_stage_room(struct snap_stage *s, uint64_t *bytes)
{
	struct statvfs vfs;

	if (fstatvfs(s->objfd, &vfs) < 0)
		return -errno;
	*bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	return 0;
}

/* What a staged object's metadata must be; see snap_obj_begin(). */
static int meta_check(const struct snap_meta *m, const char **why)
{
	switch (m->mode & S_IFMT) {
	case S_IFREG:
	case S_IFLNK:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		break;
	case S_IFDIR:
		*why = "a directory is not staged as an object";
		return -EINVAL;
	default:
		*why = "unknown file type";
		return -EINVAL;
	}
	if (m->mode & ~(uint32_t)(S_IFMT | 07777)) {
		*why = "mode has bits beyond type and permissions";
		return -EINVAL;
	}
	if (S_ISREG(m->mode) && m->size > INT64_MAX) {
		*why = "file size out of range";
		return -EINVAL;
	}
	if (m->mtime_nsec >= 1000000000u) {
		*why = "bad mtime nanoseconds";
		return -EINVAL;
	}
	if (S_ISLNK(m->mode) != (m->target != NULL)) {
		*why = S_ISLNK(m->mode) ? "symlink without a target" : "target for a non-symlink";
		return -EINVAL;
	}
	/* A target is a C string, so a NUL inside it shows as a length short of the size. */
	if (m->target && (!*m->target || strlen(m->target) != m->size || m->size >= PATH_MAX)) {
		*why = "symlink target empty, too long or not of the entry's size";
		return -EINVAL;
	}
	if (m->xattrs_len && !m->xattrs) {
		*why = "xattr blob missing";
		return -EINVAL;
	}
	return snap_xattrs_check(m->xattrs, m->xattrs_len, NULL, NULL, why);
}

int snap_meta_copy(struct snap_meta *dst, const struct snap_meta *src)
{
	*dst = *src;
	dst->target = NULL;
	dst->xattrs = NULL;
	if (src->target) {
		dst->target = strdup(src->target);
		if (!dst->target)
			return -ENOMEM;
	}
	if (src->xattrs_len) {
		dst->xattrs = malloc(src->xattrs_len);
		if (!dst->xattrs)
			return -ENOMEM;
		memcpy(dst->xattrs, src->xattrs, src->xattrs_len);
	}
	return 0;
}

/* Make the temporary entry of o: an empty file, the symlink, or the node. */
static int obj_create(struct snap_obj *o)
{
	int dfd = o->s->objfd;

	switch (o->m.mode & S_IFMT) {
	case S_IFREG:
		o->fd =
		    openat(dfd, o->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		return o->fd < 0 ? -errno : 0;
	case S_IFLNK:
		return symlinkat(o->m.target, dfd, o->tmp) < 0 ? -errno : 0;
	default:
		return mknodat(dfd, o->tmp, (o->m.mode & S_IFMT) | 0600, (dev_t)o->m.rdev) < 0
			   ? -errno
			   : 0;
	}
}

int snap_obj_begin(struct snap_stage *s, const uint8_t digest[SNAP_DIGEST_LEN],
		   const struct snap_meta *m, struct snap_obj **out, const char **why)
{
	struct snap_obj *o;
	int err;

	*out = NULL;
	err = meta_check(m, why);
	if (err)
		return err;
	o = calloc(1, sizeof(*o));
	if (!o) {
		*why = "out of memory";
		return -ENOMEM;
	}
	o->s = s;
	o->fd = -1;
	hex_name(digest, o->hex);
	err = snap_meta_copy(&o->m, m);
	if (err) {
		*why = "out of memory";
		goto out;
	}
	snprintf(o->tmp, sizeof(o->tmp), TMP_PREFIX "%s.%lu", o->hex,
		 atomic_fetch_add(&s->next_tmp, 1));
	err = obj_create(o);
	if (err) {
		*why = "cannot create the staging file";
		o->tmp[0] = '\0';
		goto out;
	}
	*out = o;
	o = NULL;
out:
	snap_obj_abort(o);
	return err;
}

int snap_obj_write(struct snap_obj *o, uint64_t off, const void *buf, size_t len, const char **why)
{
	const uint8_t *p = buf;
	ssize_t n;

	if (o->fd < 0) {
		*why = "contents for an entry that is not a regular file";
		return -EINVAL;
	}
	if (off > o->m.size || len > o->m.size - off) {
		*why = "contents past the file's size";
		return -EINVAL;
	}
	while (len > 0) {
		n = pwrite(o->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*why = "cannot write the staging file";
			return -errno;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* A regular file: size, owner, mode (after the owner, which clears setuid), xattrs, mtime. */
static int finish_file(struct snap_obj *o, const char **why)
{
	struct timespec ts[2] = {{o->m.mtime_sec, o->m.mtime_nsec},
				 {o->m.mtime_sec, o->m.mtime_nsec}};
	int err;

	if (ftruncate(o->fd, (off_t)o->m.size) < 0) {
		*why = "cannot size the staging file";
		return -errno;
	}
	if (fchown(o->fd, o->m.uid, o->m.gid) < 0) {
		*why = "cannot set the owner";
		return -errno;
	}
	if (fchmod(o->fd, o->m.mode & 07777) < 0) {
		*why = "cannot set the mode";
		return -errno;
	}
	err = xattrs_set_all(o->fd, 0, o->m.xattrs, o->m.xattrs_len);
	if (err) {
		*why = "cannot set an xattr";
		return err;
	}
	if (futimens(o->fd, ts) < 0) {
		*why = "cannot set the mtime";
		return -errno;
	}
	return 0;
}

/*
 * A symlink, device, fifo or socket: owner, mode (symlinks have none of
 * their own), xattrs.  They cannot be fsync'd; snap_plan_save() syncs the
 * filesystem before a plan can refer to them.
 */
static int finish_special(struct snap_obj *o, const char **why)
{
	int dfd = o->s->objfd, pfd, err;

	if (fchownat(dfd, o->tmp, o->m.uid, o->m.gid, AT_SYMLINK_NOFOLLOW) < 0) {
		*why = "cannot set the owner";
		return -errno;
	}
	if (!S_ISLNK(o->m.mode) && fchmodat(dfd, o->tmp, o->m.mode & 07777, 0) < 0) {
		*why = "cannot set the mode";
		return -errno;
	}
	if (!o->m.xattrs_len)
		return 0;
	pfd = openat(dfd, o->tmp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0) {
		*why = "cannot open the staging entry";
		return -errno;
	}
	err = xattrs_set_all(pfd, 1, o->m.xattrs, o->m.xattrs_len);
	if (err)
		*why = "cannot set an xattr";
	close(pfd);
	return err;
}

/*
 * Finished objects keep their temporary names until one syncfs() has made
 * a batch of them durable (snap_stage_flush()): an object under its final
 * name is trusted whole by the next attempt, and one fsync per file would
 * cost more than the transfer.
 */
int snap_obj_commit(struct snap_obj *o, const char **why)
{
	struct snap_stage *s = o->s;
	int err;

	err = o->fd >= 0 ? finish_file(o, why) : finish_special(o, why);
	pthread_mutex_lock(&s->lock);
	if (!err && grow_array(&s->pend, &s->pend_cap, s->npend + 1) < 0) {
		err = -ENOMEM;
		*why = "out of memory";
	}
	if (!err) {
		memcpy(s->pend[s->npend].tmp, o->tmp, sizeof(o->tmp));
		memcpy(s->pend[s->npend].hex, o->hex, sizeof(o->hex));
		s->npend++;
		o->tmp[0] = '\0';
	}
	pthread_mutex_unlock(&s->lock);
	snap_obj_abort(o);
	return err;
}

size_t snap_stage_pending(struct snap_stage *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = s->npend;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/*
 * The objects committed so far are taken out of the list first: those
 * committed during the syncfs wait for the next flush, as it may not
 * cover them.
 */
int snap_stage_flush(struct snap_stage *s)
{
	struct pending_obj *v;
	size_t i, n;
	int err = 0;

	pthread_mutex_lock(&s->lock);
	v = s->pend;
	n = s->npend;
	s->pend = NULL;
	s->npend = s->pend_cap = 0;
	pthread_mutex_unlock(&s->lock);
	if (n && syncfs(s->objfd) < 0)
		err = -errno;
	for (i = 0; i < n && !err; i++)
		if (renameat(s->objfd, v[i].tmp, s->objfd, v[i].hex) < 0)
			err = -errno;
	free(v);
	return err;
}

void snap_obj_abort(struct snap_obj *o)
{
	int err;

	if (!o)
		return;
	if (o->fd >= 0)
		close(o->fd);
	/* What cannot be removed now, snap_stage_open() removes next time. */
	err = o->tmp[0] ? unlink_entry(o->s->objfd, o->tmp, 0) : 0;
	if (err)
		log_warn("snapshot: cannot remove %s/%s/%s: %s", SNAP_DIR, OBJ_DIR, o->tmp,
			 strerror(-err));
	snap_meta_free(&o->m);
	free(o);
}

/* What a step must be, wherever it comes from: valid paths, nothing that would undo the root. */
static int step_check(const struct snap_step *st, const char **why)
{
	if (path_check(st->path, why) < 0)
		return -EINVAL;
	if (path_is_root(st->path) && st->op != SNAP_OP_DIR) {
		*why = "the root can only be a DIR step";
		return -EINVAL;
	}
	switch (st->op) {
	case SNAP_OP_DELETE:
	case SNAP_OP_OBJ:
		return 0;
	case SNAP_OP_DIR:
		if ((st->mode & S_IFMT && !S_ISDIR(st->mode)) ||
		    st->mode & ~(uint32_t)(S_IFMT | 07777)) {
			*why = "bad directory mode";
			return -EINVAL;
		}
		if (st->xattrs_len && !st->xattrs) {
			*why = "xattr blob missing";
			return -EINVAL;
		}
		return snap_xattrs_check(st->xattrs, st->xattrs_len, NULL, NULL, why) < 0 ? -EINVAL
											  : 0;
	case SNAP_OP_LINK:
		if (path_check(st->link_to, why) < 0)
			return -EINVAL;
		if (path_is_root(st->link_to) || !strcmp(st->path, st->link_to)) {
			*why = "link to the root or to itself";
			return -EINVAL;
		}
		return 0;
	default:
		*why = "unknown step";
		return -EINVAL;
	}
}

static void step_free(struct snap_step *st)
{
	free(st->path);
	free(st->xattrs);
	free(st->link_to);
	memset(st, 0, sizeof(*st));
}

int snap_plan_add(struct snap_plan *p, const struct snap_step *step)
{
	struct snap_step c = *step;
	const char *why;
	int err;

	err = step_check(step, &why);
	if (err)
		return err;
	err = grow_array(&p->v, &p->cap, p->n + 1);
	if (err)
		return err;
	/* Only what the op uses is copied; the other pointers may be anything. */
	c.link_to = NULL;
	c.xattrs = NULL;
	if (step->op != SNAP_OP_DIR)
		c.xattrs_len = 0;
	c.path = strdup(step->path);
	if (!c.path)
		goto nomem;
	if (step->op == SNAP_OP_LINK) {
		c.link_to = strdup(step->link_to);
		if (!c.link_to)
			goto nomem;
	}
	if (c.xattrs_len) {
		c.xattrs = malloc(c.xattrs_len);
		if (!c.xattrs)
			goto nomem;
		memcpy(c.xattrs, step->xattrs, c.xattrs_len);
	}
	p->v[p->n++] = c;
	return 0;
nomem:
	step_free(&c);
	return -ENOMEM;
}

void snap_plan_free(struct snap_plan *p)
{
	for (size_t i = 0; i < p->n; i++)
		step_free(&p->v[i]);
	free(p->v);
	memset(p, 0, sizeof(*p));
}

static int put_path(struct buf *b, const char *path)
{
	size_t n = strlen(path);
	int err;

	if (n > UINT16_MAX)
		return -ENAMETOOLONG;
	err = buf_put16(b, (uint16_t)n);
	return err ? err : buf_put(b, path, n);
}

static int encode_step(struct buf *b, const struct snap_step *st)
{
	uint8_t fid[ID_XATTR_LEN];
	int err;

	err = buf_put(b, &st->op, 1);
	if (!err)
		err = put_path(b, st->path);
	if (err)
		return err;
	switch (st->op) {
	case SNAP_OP_DELETE:
		put_le64(fid, st->fid.origin);
		put_le64(fid + 8, st->fid.counter);
		return buf_put(b, fid, sizeof(fid));
	case SNAP_OP_DIR:
		err = buf_put32(b, st->mode);
		if (!err)
			err = buf_put32(b, st->uid);
		if (!err)
			err = buf_put32(b, st->gid);
		if (!err)
			err = buf_put32(b, (uint32_t)st->xattrs_len);
		return err ? err : buf_put(b, st->xattrs, st->xattrs_len);
	case SNAP_OP_OBJ:
		return buf_put(b, st->digest, SNAP_DIGEST_LEN);
	default:
		return put_path(b, st->link_to);
	}
}

static int plan_encode(const struct snap_plan *p, struct buf *b)
{
	const char *why;
	size_t i;
	int err;

	if (p->n > UINT32_MAX)
		return -E2BIG;
	err = buf_put(b, PLAN_MAGIC, 4);
	if (!err)
		err = buf_put16(b, PLAN_VERSION);
	if (!err)
		err = buf_put32(b, (uint32_t)p->n);
	for (i = 0; i < p->n && !err; i++) {
		err = step_check(&p->v[i], &why);
		if (!err)
			err = encode_step(b, &p->v[i]);
	}
	return err ? err : buf_put32(b, crc32c(0, b->data, b->len));
}

int snap_plan_save(struct snap_stage *s, const struct snap_plan *p)
{
	struct buf b = BUF_INIT;
	int fd = -1, err;

	err = snap_stage_flush(s);
	if (!err)
		err = plan_encode(p, &b);
	if (err)
		goto out;
	fd =
	    openat(s->dirfd, PLAN_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	err = file_write_all(fd, b.data, b.len);
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	fd = -1;
	if (err)
		goto out;
	/*
	 * The install takes an object missing from obj/ for one it moved in
	 * already, so every object (and its name in obj/) must be durable
	 * before a plan naming it is.  Symlinks and nodes cannot be fsync'd.
	 */
	if (syncfs(s->objfd) < 0 || renameat(s->dirfd, PLAN_TMP, s->dirfd, PLAN_NAME) < 0 ||
	    fsync(s->dirfd) < 0)
		err = -errno;
out:
	buf_free(&b);
	return err;
}

static int take(struct cursor *c, size_t n, const uint8_t **p)
{
	if (c->left < n)
		return -EBADMSG;
	*p = c->p;
	c->p += n;
	c->left -= n;
	return 0;
}

/* A u16-length path, copied and NUL-terminated into *out (caller frees). */
static int take_path(struct cursor *c, char **out, const char **why)
{
	const uint8_t *p;
	uint16_t n;

	if (take(c, 2, &p) < 0)
		goto truncated;
	n = get_le16(p);
	if (take(c, n, &p) < 0)
		goto truncated;
	if (memchr(p, 0, n)) {
		*why = "NUL in a plan path";
		return -EBADMSG;
	}
	*out = strndup((const char *)p, n);
	if (!*out) {
		*why = "out of memory";
		return -ENOMEM;
	}
	return 0;
truncated:
	*why = "plan truncated";
	return -EBADMSG;
}

static int decode_dir(struct cursor *c, struct snap_step *st, const char **why)
{
	const uint8_t *p;

	if (take(c, 16, &p) < 0)
		goto truncated;
	st->mode = get_le32(p);
	st->uid = get_le32(p + 4);
	st->gid = get_le32(p + 8);
	st->xattrs_len = get_le32(p + 12);
	if (take(c, st->xattrs_len, &p) < 0)
		goto truncated;
	if (!st->xattrs_len)
		return 0;
	st->xattrs = malloc(st->xattrs_len);
	if (!st->xattrs) {
		*why = "out of memory";
		return -ENOMEM;
	}
	memcpy(st->xattrs, p, st->xattrs_len);
	return 0;
truncated:
	*why = "plan truncated";
	return -EBADMSG;
}

static int decode_step(struct cursor *c, struct snap_step *st, const char **why)
{
	const uint8_t *p;
	int err;

	if (take(c, 1, &p) < 0) {
		*why = "plan truncated";
		return -EBADMSG;
	}
	st->op = p[0];
	err = take_path(c, &st->path, why);
	if (err)
		return err;
	switch (st->op) {
	case SNAP_OP_DELETE:
		err = take(c, ID_XATTR_LEN, &p);
		if (!err) {
			st->fid.origin = get_le64(p);
			st->fid.counter = get_le64(p + 8);
		}
		break;
	case SNAP_OP_DIR:
		return decode_dir(c, st, why);
	case SNAP_OP_OBJ:
		err = take(c, SNAP_DIGEST_LEN, &p);
		if (!err)
			memcpy(st->digest, p, SNAP_DIGEST_LEN);
		break;
	case SNAP_OP_LINK:
		return take_path(c, &st->link_to, why);
	default:
		*why = "unknown plan step";
		return -EBADMSG;
	}
	if (err)
		*why = "plan truncated";
	return err;
}

static int plan_decode(const uint8_t *buf, size_t len, struct snap_plan *p, const char **why)
{
	struct cursor c = {buf + PLAN_HEADER_LEN, 0};
	struct snap_step st;
	uint32_t count, i;
	int err;

	if (len < PLAN_HEADER_LEN + PLAN_CRC_LEN) {
		*why = "plan shorter than its header";
		return -EBADMSG;
	}
	if (get_le32(buf + len - PLAN_CRC_LEN) != crc32c(0, buf, len - PLAN_CRC_LEN)) {
		*why = "plan CRC mismatch";
		return -EBADMSG;
	}
	if (memcmp(buf, PLAN_MAGIC, 4) != 0 || get_le16(buf + 4) != PLAN_VERSION) {
		*why = memcmp(buf, PLAN_MAGIC, 4) ? "bad plan magic" : "unknown plan version";
		return -EBADMSG;
	}
	count = get_le32(buf + 6);
	c.left = len - PLAN_HEADER_LEN - PLAN_CRC_LEN;
	if (count > c.left / PLAN_MIN_STEP) {
		*why = "plan step count beyond its length";
		return -EBADMSG;
	}
	err = grow_array(&p->v, &p->cap, count);
	for (i = 0; i < count && !err; i++) {
		memset(&st, 0, sizeof(st));
		err = decode_step(&c, &st, why);
		if (!err && step_check(&st, why) < 0)
			err = -EBADMSG;
		if (err)
			step_free(&st);
		else
			p->v[p->n++] = st;
	}
	if (err == -ENOMEM)
		*why = "out of memory";
	if (!err && c.left) {
		*why = "trailing bytes in the plan";
		err = -EBADMSG;
	}
	return err;
}

/* The whole of the file name in dfd into *buf (malloc'd, caller frees). */
static int read_file(int dfd, const char *name, uint8_t **buf, size_t *len)
{
	struct stat st;
	uint8_t *p = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, err = 0;

	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	p = malloc((size_t)st.st_size + 1);
	if (!p) {
		err = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, p + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			goto out;
		}
		got += (size_t)n;
	}
	*buf = p;
	*len = got;
	p = NULL;
out:
	free(p);
	close(fd);
	return err;
}

/* NODE_DIR/snap/<sub> (or snap/ itself when sub is NULL), opened with flags. */
static int open_stage_dir(const char *node_dir, const char *sub, int flags, int *fd)
{
	int nfd, sfd = -1, err;

	nfd = open(node_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	err = open_dir(nfd, SNAP_DIR, sub ? O_PATH : flags, &sfd);
	if (!err && sub) {
		err = open_dir(sfd, sub, flags, fd);
		close(sfd);
	} else if (!err) {
		*fd = sfd;
	}
	close(nfd);
	return err;
}

int snap_plan_load(const char *node_dir, struct snap_plan *p, const char **why)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int sfd = -1, err;

	memset(p, 0, sizeof(*p));
	err = open_stage_dir(node_dir, NULL, O_PATH, &sfd);
	if (!err)
		err = read_file(sfd, PLAN_NAME, &buf, &len);
	if (err) {
		*why = err == -ENOENT ? "no plan" : "cannot read the plan";
		goto out;
	}
	err = plan_decode(buf, len, p, why);
	if (err)
		snap_plan_free(p);
out:
	if (sfd >= 0)
		close(sfd);
	free(buf);
	return err;
}

/* The parent of a step's path; gone parents read as -ENOENT. */
static int step_parent(int root, const char *path, struct path_at *at, const char **why)
{
	int err = path_at_open(root, path, at);

	if (err == -ENOTDIR || err == -ELOOP)
		err = -ENOENT;
	if (err)
		*why = "cannot open the parent directory";
	return err;
}

/* 1 if name in dfd holds fid, 0 if it holds another or none, or a negative errno. */
static int holds_fid(int dfd, const char *name, struct fid fid)
{
	struct fid have;
	int fd, err;

	fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = store_get_ids(fd, &have, NULL);
	close(fd);
	if (err == -ENODATA)
		return 0;
	return err < 0 ? err : fid_eq(have, fid);
}

static int step_delete(int root, const struct snap_step *st, bool *changed, const char **why)
{
	struct path_at at;
	struct stat sb;
	int err;

	err = step_parent(root, st->path, &at, why);
	if (err)
		return err == -ENOENT ? 0 : err;
	if (fstatat(at.dirfd, at.base, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		err = errno == ENOENT ? 0 : -errno;
		goto out;
	}
	if (!fid_is_zero(st->fid)) {
		err = holds_fid(at.dirfd, at.base, st->fid);
		if (err <= 0)
			goto out;
	}
	err = remove_tree(at.dirfd, at.base);
	if (!err)
		*changed = true;
out:
	if (err)
		*why = "cannot remove the entry";
	path_at_release(&at);
	return err;
}

/* Make name in dfd a directory, replacing a non-directory in the way. */
static int ensure_dir(int dfd, const char *name, bool *changed)
{
	struct stat sb;

	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISDIR(sb.st_mode))
			return 0;
		if (unlinkat(dfd, name, 0) < 0)
			return -errno;
	} else if (errno != ENOENT) {
		return -errno;
	}
	*changed = true;
	/* Made closed; the mode comes once the owner is right. */
	return mkdirat(dfd, name, 0700) < 0 ? -errno : 0;
}

/* Owner, then mode (a chown may clear setgid), then the exact xattr set. */
static int dir_set_meta(int fd, const struct snap_step *st, bool *changed, const char **why)
{
	struct stat sb;
	int err;

	if (fstat(fd, &sb) < 0)
		goto fail;
	if (sb.st_uid != st->uid || sb.st_gid != st->gid) {
		*changed = true;
		if (fchown(fd, st->uid, st->gid) < 0 || fstat(fd, &sb) < 0)
			goto fail;
	}
	if ((sb.st_mode & 07777) != (st->mode & 07777)) {
		*changed = true;
		if (fchmod(fd, st->mode & 07777) < 0)
			goto fail;
	}
	err = xattrs_make_exact(fd, 0, st->xattrs, st->xattrs_len, changed);
	if (err)
		*why = "cannot set the directory's xattrs";
	return err;
fail:
	*why = "cannot set the directory's owner or mode";
	return -errno;
}

static int step_dir(int root, const struct snap_step *st, bool *changed, const char **why)
{
	struct path_at at = {.dirfd = -1};
	int fd = -1, err = 0;

	if (path_is_root(st->path)) {
		fd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	} else {
		err = step_parent(root, st->path, &at, why);
		if (err)
			return err;
		err = ensure_dir(at.dirfd, at.base, changed);
		if (!err)
			fd = openat(at.dirfd, at.base,
				    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		path_at_release(&at);
	}
	if (!err && fd < 0)
		err = -errno;
	if (err) {
		*why = "cannot make the directory";
		return err;
	}
	err = dir_set_meta(fd, st, changed, why);
	close(fd);
	return err;
}

static int step_obj(int root, int objfd, const struct snap_step *st, bool *changed,
		    const char **why)
{
	char hex[HEX_LEN + 1];
	struct path_at at;
	struct stat sb;
	int err;

	hex_name(st->digest, hex);
	if (fstatat(objfd, hex, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		/* Moved in by an earlier run of this plan. */
		if (errno == ENOENT)
			return 0;
		*why = "cannot look up the staged object";
		return -errno;
	}
	err = step_parent(root, st->path, &at, why);
	if (err)
		return err;
	/* renameat() replaces anything but a directory. */
	if (fstatat(at.dirfd, at.base, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			err = -errno;
	} else if (S_ISDIR(sb.st_mode)) {
		err = remove_tree(at.dirfd, at.base);
	}
	if (err) {
		*why = "cannot remove the directory in the way";
		goto out;
	}
	if (renameat(objfd, hex, at.dirfd, at.base) < 0) {
		err = -errno;
		*why = err == -EXDEV ? "staging area and store on different filesystems"
				     : "cannot move the staged object into place";
		goto out;
	}
	*changed = true;
out:
	path_at_release(&at);
	return err;
}

static int step_link(int root, const struct snap_step *st, bool *changed, const char **why)
{
	struct path_at src = {.dirfd = -1}, dst = {.dirfd = -1};
	struct stat ss, ds;
	int err;

	err = step_parent(root, st->link_to, &src, why);
	if (err)
		return err;
	if (fstatat(src.dirfd, src.base, &ss, AT_SYMLINK_NOFOLLOW) < 0)
		err = -errno;
	else if (S_ISDIR(ss.st_mode))
		err = -EPERM;
	if (err) {
		*why = "link target missing or a directory";
		goto out;
	}
	err = step_parent(root, st->path, &dst, why);
	if (err)
		goto out;
	if (fstatat(dst.dirfd, dst.base, &ds, AT_SYMLINK_NOFOLLOW) == 0) {
		if (ds.st_dev == ss.st_dev && ds.st_ino == ss.st_ino)
			goto out;
		err = remove_tree(dst.dirfd, dst.base);
	} else if (errno != ENOENT) {
		err = -errno;
	}
	if (!err && linkat(src.dirfd, src.base, dst.dirfd, dst.base, 0) < 0)
		err = -errno;
	if (err)
		*why = "cannot make the hard link";
	else
		*changed = true;
out:
	path_at_release(&dst);
	path_at_release(&src);
	return err;
}

static int run_step(int root, int objfd, const struct snap_step *st, bool *changed,
		    const char **why)
{
	int err = step_check(st, why);

	if (err)
		return err;
	switch (st->op) {
	case SNAP_OP_DELETE:
		return step_delete(root, st, changed, why);
	case SNAP_OP_DIR:
		return step_dir(root, st, changed, why);
	case SNAP_OP_OBJ:
		return step_obj(root, objfd, st, changed, why);
	default:
		return step_link(root, st, changed, why);
	}
}

/* Everything the install changed reaches the disk before the store is used. */
static int sync_store(int root)
{
	int fd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	if (syncfs(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}

int snap_install(const char *node_dir, int root_fd, const struct snap_plan *p,
		 void (*touched)(void *arg, const char *path), void *arg, const char **why,
		 const char **path_out)
{
	bool changed;
	int objfd = -1, err;
	size_t i;

	*path_out = PATH_ROOT;
	err = open_stage_dir(node_dir, OBJ_DIR, O_PATH, &objfd);
	if (err) {
		*why = "cannot open the staging area";
		return err;
	}
	for (i = 0; i < p->n; i++) {
		changed = false;
		err = run_step(root_fd, objfd, &p->v[i], &changed, why);
		if (err) {
			*path_out = p->v[i].path;
			goto out;
		}
		if (changed && touched)
			touched(arg, p->v[i].path);
	}
	err = sync_store(root_fd);
	if (err)
		*why = "cannot sync the store";
out:
	close(objfd);
	return err;
}

int snap_stage_remove(const char *node_dir)
{
	int nfd, err;

	nfd = open(node_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	err = remove_tree(nfd, SNAP_DIR);
	if (!err && fsync(nfd) < 0)
		err = -errno;
	close(nfd);
	return err;
}
