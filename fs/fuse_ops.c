/*
 * fuse_ops.c - FUSE operations over a node's store (see fuse_ops.h).
 *
 * Reads (getattr, read, readdir, getxattr, ...) go straight to the store.
 * Each mutation is built into an event under the node lock from the
 * store's current state (fids, base version, owners), then committed:
 * journaled, applied through the apply engine, and only then answered.
 *
 * The kernel's writeback cache is on, so the kernel owns file sizes and
 * mtimes between flushes and writes arrive in large batches; open files
 * are therefore opened read-write in the store whatever the caller asked.
 * Files unlinked while open keep their store descriptor (hard_remove): libfuse
 * then hands us no path, their events carry none and replay skips them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "ledgerfs/fuse_ops.h"
#include "ledgerfs/log.h"
#include "ledgerfs/path.h"

/* Largest copy_file_range turned into one write event; callers loop on short copies. */
#define COPY_CHUNK (4u << 20)

struct lfs_file {
	int fd;
	struct fid fid;
};

static struct node *lfs_node(void)
{
	return fuse_get_context()->private_data;
}

static struct lfs_file *lfs_fh(struct fuse_file_info *fi)
{
	return fi ? (struct lfs_file *)(uintptr_t)fi->fh : NULL;
}

/*
 * The store-relative form of a kernel path: "/" is ".", "/a/b" is "a/b".
 * Checked like an event path so over-long names fail with ENAMETOOLONG.
 */
static int rel_path(const char *path, const char **rel)
{
	const char *why;

	if (!path)
		return -ENOENT;
	*rel = path[1] ? path + 1 : PATH_ROOT;
	return path_check(*rel, &why);
}

static void now_ts(int64_t *sec, uint32_t *nsec)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	*sec = ts.tv_sec;
	*nsec = (uint32_t)ts.tv_nsec;
}

/* Open the object at rel as O_PATH and read its fid and version. */
static int ids_at(struct node *n, const char *rel, struct fid *fid, struct evid *ver,
		  struct stat *st)
{
	int fd = -1, r;

	r = path_open(n->store->root, rel, O_PATH, 0, &fd);
	if (r < 0)
		return r;
	if (st && fstat(fd, st) < 0) {
		r = -errno;
		goto out;
	}
	r = store_get_ids(fd, fid, ver);
	if (r == -ENODATA) {
		/* Placed in the store behind ledgerfs's back: fsck reports it. */
		*fid = (struct fid){0, 0};
		if (ver)
			*ver = (struct evid){0, 0};
		r = 0;
	}
out:
	close(fd);
	return r;
}

/*
 * Refuse growth that would eat the space the journal needs to record the
 * failure and the events after it.  statvfs runs only when the writes since
 * the last look could have used half the remaining margin.
 */
static int space_check(struct node *n, uint64_t bytes)
{
	static uint64_t margin, since;
	struct statvfs sv;
	uint64_t avail, reserve;

	since += bytes;
	if (since < margin / 2)
		return 0;
	if (fstatvfs(n->store->root, &sv) < 0)
		return 0;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	reserve = (uint64_t)sv.f_blocks * sv.f_frsize / 50;
	if (reserve < (2u << 20))
		reserve = 2u << 20;
	if (reserve > (256u << 20))
		reserve = 256u << 20;
	since = 0;
	margin = avail > reserve ? avail - reserve : 0;
	return avail < reserve + bytes ? -ENOSPC : 0;
}

/*
 * Owner and mode of a new object: the caller's uid, and its gid unless the
 * parent directory is setgid, which passes on its group (and, to new
 * directories, the setgid bit), as on ext4.
 */
static int new_owner(struct node *n, const char *rel, struct event *ev)
{
	struct fuse_context *fc = fuse_get_context();
	struct path_at at = {.dirfd = -1};
	struct stat st;
	int r;

	ev->uid = fc->uid;
	ev->gid = fc->gid;
	r = path_at_open(n->store->root, rel, &at);
	if (r < 0)
		return r;
	if (fstat(at.dirfd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (st.st_mode & S_ISGID) {
		ev->gid = st.st_gid;
		if (S_ISDIR(ev->mode))
			ev->mode |= S_ISGID;
	}
out:
	path_at_release(&at);
	return r;
}

static int lfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct lfs_file *h = lfs_fh(fi);
	const char *rel;
	int fd = -1, r;

	if (h)
		return fstat(h->fd, st) < 0 ? -errno : 0;
	r = rel_path(path, &rel);
	if (r < 0)
		return r;
	r = path_open(lfs_node()->store->root, rel, O_PATH, 0, &fd);
	if (r < 0)
		return r;
	if (fstat(fd, st) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int lfs_readlink(const char *path, char *buf, size_t size)
{
	struct path_at at = {.dirfd = -1};
	const char *rel;
	ssize_t len;
	int r;

	r = rel_path(path, &rel);
	if (r == 0)
		r = path_at_open(lfs_node()->store->root, rel, &at);
	if (r < 0)
		return r;
	len = readlinkat(at.dirfd, at.base, buf, size - 1);
	if (len < 0) {
		r = -errno;
	} else {
		buf[len] = '\0';
	}
	path_at_release(&at);
	return r;
}

/* Shared body of mknod, mkdir, symlink and create; ctx may be NULL. */
static int make_new(const char *path, struct event *ev, struct apply_ctx *ctx)
{
	struct apply_ctx local = APPLY_CTX_INIT;
	struct node *n = lfs_node();
	const char *rel;
	int r;

	r = rel_path(path, &rel);
	if (r < 0)
		return r;
	ev->path = (char *)rel;
	now_ts(&ev->mtime_sec, &ev->mtime_nsec);
	pthread_mutex_lock(&n->lock);
	r = new_owner(n, rel, ev);
	if (r == 0)
		r = space_check(n, 0);
	if (r == 0)
		r = node_commit_locked(n, ev, ctx ? ctx : &local);
	pthread_mutex_unlock(&n->lock);
	return r;
}

static int lfs_mknod(const char *path, mode_t mode, dev_t rdev)
{
	struct event ev = {.type = EV_MKNOD, .mode = mode, .rdev = rdev};

	return make_new(path, &ev, NULL);
}

static int lfs_mkdir(const char *path, mode_t mode)
{
	struct event ev = {.type = EV_MKDIR, .mode = (mode & 07777) | S_IFDIR};

	return make_new(path, &ev, NULL);
}

static int lfs_symlink(const char *target, const char *path)
{
	struct event ev = {.type = EV_SYMLINK, .mode = S_IFLNK | 0777};
	size_t len = strlen(target);

	if (len >= PATH_MAX)
		return -ENAMETOOLONG;
	ev.data = (uint8_t *)target;
	ev.data_len = (uint32_t)len;
	return make_new(path, &ev, NULL);
}

static int lfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_CREATE, .mode = (mode & 07777) | S_IFREG};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	struct lfs_file *h = malloc(sizeof(*h));
	int r;

	if (!h)
		return -ENOMEM;
	ctx.want_fd = 1;
	r = make_new(path, &ev, &ctx);
	if (r < 0) {
		free(h);
		return r;
	}
	h->fd = ctx.out_fd;
	h->fid = (struct fid){ev.origin, ev.seq};
	fi->fh = (uintptr_t)h;
	return 0;
}

/* Shared body of unlink and rmdir. */
static int remove_entry(const char *path, unsigned type)
{
	struct node *n = lfs_node();
	struct event ev = {.type = (uint8_t)type};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	const char *rel;
	int r;

	r = rel_path(path, &rel);
	if (r < 0)
		return r;
	ev.path = (char *)rel;
	pthread_mutex_lock(&n->lock);
	r = ids_at(n, rel, &ev.fid, &ev.base, NULL);
	if (r == 0)
		r = node_commit_locked(n, &ev, &ctx);
	pthread_mutex_unlock(&n->lock);
	return r;
}

static int lfs_unlink(const char *path)
{
	return remove_entry(path, EV_UNLINK);
}

static int lfs_rmdir(const char *path)
{
	return remove_entry(path, EV_RMDIR);
}

static int lfs_rename(const char *from, const char *to, unsigned int flags)
{
	struct node *n = lfs_node();
	struct event ev = {.type = EV_RENAME, .op_flags = flags};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	struct evid ver;
	const char *rel, *rel2 = NULL;
	int r;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	r = rel_path(from, &rel);
	if (r == 0)
		r = rel_path(to, &rel2);
	if (r < 0)
		return r;
	ev.path = (char *)rel;
	ev.path2 = (char *)rel2;
	pthread_mutex_lock(&n->lock);
	r = ids_at(n, rel, &ev.fid, &ev.base, NULL);
	if (r == 0) {
		r = ids_at(n, rel2, &ev.fid2, &ver, NULL);
		if (r == -ENOENT && !(flags & RENAME_EXCHANGE))
			r = 0;
		else if (r == 0 && (flags & RENAME_NOREPLACE))
			r = -EEXIST;
	}
	if (r == 0)
		r = node_commit_locked(n, &ev, &ctx);
	pthread_mutex_unlock(&n->lock);
	return r;
}

static int lfs_link(const char *from, const char *to)
{
	struct node *n = lfs_node();
	struct event ev = {.type = EV_LINK};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	const char *rel, *rel2 = NULL;
	int r;

	r = rel_path(from, &rel);
	if (r == 0)
		r = rel_path(to, &rel2);
	if (r < 0)
		return r;
	ev.path = (char *)rel;
	ev.path2 = (char *)rel2;
	pthread_mutex_lock(&n->lock);
	r = ids_at(n, rel, &ev.fid, &ev.base, NULL);
	if (r == 0)
		r = node_commit_locked(n, &ev, &ctx);
	pthread_mutex_unlock(&n->lock);
	return r;
}

/*
 * Shared body of the events that change an existing object.  Under the
 * lock: check space for grow bytes, read fid and base version from the open
 * handle or the path, let fill() derive fields from the current state, and
 * commit.
 */
static int change_with_state(const char *path, struct fuse_file_info *fi, struct event *ev,
			     int (*fill)(struct event *ev, const struct stat *st, void *arg),
			     void *arg, uint64_t grow)
{
	struct node *n = lfs_node();
	struct lfs_file *h = lfs_fh(fi);
	struct apply_ctx ctx = APPLY_CTX_INIT;
	struct stat st;
	const char *rel = NULL;
	int r;

	if (path) {
		r = rel_path(path, &rel);
		if (r < 0)
			return r;
	} else if (!h) {
		return -ENOENT;
	}
	ev->path = (char *)rel;
	pthread_mutex_lock(&n->lock);
	r = space_check(n, grow);
	if (r < 0)
		goto out;
	if (h) {
		ctx.fd = h->fd;
		r = store_get_ids(h->fd, &ev->fid, &ev->base);
		if (r == -ENODATA) {
			ev->fid = h->fid;
			r = 0;
		}
		if (r == 0 && fill && fstat(h->fd, &st) < 0)
			r = -errno;
	} else {
		r = ids_at(n, rel, &ev->fid, &ev->base, &st);
	}
	if (r == 0 && fill)
		r = fill(ev, &st, arg);
	if (r == 0)
		r = node_commit_locked(n, ev, &ctx);
out:
	pthread_mutex_unlock(&n->lock);
	return r;
}

static int lfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_CHMOD, .mode = mode & 07777};

	return change_with_state(path, fi, &ev, NULL, NULL, 0);
}

/*
 * chown resolves "unchanged" (-1) to the current owner and records the mode
 * the object will have: changing a regular file's owner clears set-user-ID
 * and, when group-executable, set-group-ID, as Linux does for every caller.
 */
static int fill_chown(struct event *ev, const struct stat *st, void *arg)
{
	const uint32_t *ids = arg;
	mode_t mode = st->st_mode & 07777;

	ev->uid = ids[0] == (uint32_t)-1 ? st->st_uid : ids[0];
	ev->gid = ids[1] == (uint32_t)-1 ? st->st_gid : ids[1];
	if (S_ISREG(st->st_mode) && (ids[0] != (uint32_t)-1 || ids[1] != (uint32_t)-1)) {
		mode &= ~(mode_t)S_ISUID;
		if (mode & S_IXGRP)
			mode &= ~(mode_t)S_ISGID;
	}
	ev->mode = mode;
	return 0;
}

static int lfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_CHOWN};
	uint32_t ids[2] = {uid, gid};

	return change_with_state(path, fi, &ev, fill_chown, ids, 0);
}

static int lfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_TRUNCATE, .length = (uint64_t)size};

	if (size < 0)
		return -EINVAL;
	now_ts(&ev.mtime_sec, &ev.mtime_nsec);
	return change_with_state(path, fi, &ev, NULL, NULL, 0);
}

static int lfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_UTIMENS};
	struct timespec ts[2] = {tv[0], tv[1]};
	int64_t sec;
	uint32_t nsec;

	/* UTIME_NOW is resolved here so that every node records the same instant. */
	now_ts(&sec, &nsec);
	for (int i = 0; i < 2; i++) {
		if (ts[i].tv_nsec == UTIME_NOW) {
			ts[i].tv_sec = sec;
			ts[i].tv_nsec = nsec;
		}
	}
	ev.atime_sec = ts[0].tv_sec;
	ev.atime_nsec = (uint32_t)ts[0].tv_nsec;
	ev.mtime_sec = ts[1].tv_sec;
	ev.mtime_nsec = (uint32_t)ts[1].tv_nsec;
	return change_with_state(path, fi, &ev, NULL, NULL, 0);
}

static int lfs_open(const char *path, struct fuse_file_info *fi)
{
	struct lfs_file *h;
	const char *rel;
	int flags = fi->flags, r;

	r = rel_path(path, &rel);
	if (r < 0)
		return r;
	h = malloc(sizeof(*h));
	if (!h)
		return -ENOMEM;
	/*
	 * The writeback cache reads pages of files opened write-only and
	 * computes append offsets itself; truncation arrives as a setattr.
	 */
	flags &= ~(O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_NOCTTY | O_ACCMODE);
	flags |= O_RDWR;
	r = path_open(lfs_node()->store->root, rel, flags, 0, &h->fd);
	if (r == -EISDIR || r == -EACCES || r == -EPERM || r == -ETXTBSY || r == -EROFS)
		r = path_open(lfs_node()->store->root, rel, (flags & ~O_ACCMODE) | O_RDONLY, 0,
			      &h->fd);
	if (r < 0) {
		free(h);
		return r;
	}
	r = store_get_ids(h->fd, &h->fid, NULL);
	if (r == -ENODATA) {
		h->fid = (struct fid){0, 0};
		r = 0;
	}
	if (r < 0) {
		close(h->fd);
		free(h);
		return r;
	}
	fi->fh = (uintptr_t)h;
	fi->keep_cache = 1;
	return 0;
}

static int lfs_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct fuse_bufvec *bv = malloc(sizeof(*bv));

	if (!bv)
		return -ENOMEM;
	*bv = FUSE_BUFVEC_INIT(size);
	bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv->buf[0].fd = lfs_fh(fi)->fd;
	bv->buf[0].pos = off;
	*bufp = bv;
	return 0;
}

/* One write event carrying buf; returns size or a negative errno. */
static int write_event(const char *path, struct fuse_file_info *fi, const void *buf, size_t size,
		       off_t off)
{
	struct event ev = {.type = EV_WRITE, .offset = (uint64_t)off};
	int r;

	if (size > EVENT_MAX_DATA)
		size = EVENT_MAX_DATA;
	ev.data = (uint8_t *)buf;
	ev.data_len = (uint32_t)size;
	now_ts(&ev.mtime_sec, &ev.mtime_nsec);
	r = change_with_state(path, fi, &ev, NULL, NULL, size);
	return r < 0 ? r : (int)size;
}

static int lfs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	return write_event(path, fi, buf, size, off);
}

static int lfs_statfs(const char *path, struct statvfs *sv)
{
	return fstatvfs(lfs_node()->store->root, sv) < 0 ? -errno : 0;
}

static int lfs_release(const char *path, struct fuse_file_info *fi)
{
	struct lfs_file *h = lfs_fh(fi);

	close(h->fd);
	free(h);
	return 0;
}

/*
 * fsync makes the journal durable first (it can rebuild the store), then
 * the store file, so a crash after we answer loses neither.
 */
static int lfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct lfs_file *h = lfs_fh(fi);
	int r = node_sync(lfs_node());

	if (r < 0)
		return r;
	if ((datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0)
		return -errno;
	return 0;
}

static int lfs_setxattr(const char *path, const char *name, const char *value, size_t size,
			int flags)
{
	struct event ev = {.type = EV_SETXATTR, .op_flags = (uint32_t)flags};

	if (strncmp(name, STORE_XATTR_PREFIX, strlen(STORE_XATTR_PREFIX)) == 0)
		return -EPERM;
	if (strlen(name) > XATTR_NAME_MAX)
		return -ERANGE;
	if (size > XATTR_SIZE_MAX)
		return -E2BIG;
	ev.name = (char *)name;
	ev.data = (uint8_t *)value;
	ev.data_len = (uint32_t)size;
	return change_with_state(path, NULL, &ev, NULL, NULL, size);
}

static int lfs_removexattr(const char *path, const char *name)
{
	struct event ev = {.type = EV_REMOVEXATTR};

	if (strncmp(name, STORE_XATTR_PREFIX, strlen(STORE_XATTR_PREFIX)) == 0)
		return -ENODATA;
	ev.name = (char *)name;
	return change_with_state(path, NULL, &ev, NULL, NULL, 0);
}

static int lfs_getxattr(const char *path, const char *name, char *value, size_t size)
{
	char proc[PATH_PROCFD_LEN];
	const char *rel;
	ssize_t len;
	int fd = -1, r;

	if (strncmp(name, STORE_XATTR_PREFIX, strlen(STORE_XATTR_PREFIX)) == 0)
		return -ENODATA;
	r = rel_path(path, &rel);
	if (r == 0)
		r = path_open(lfs_node()->store->root, rel, O_PATH, 0, &fd);
	if (r < 0)
		return r;
	len = getxattr(path_procfd(fd, proc), name, value, size);
	r = len < 0 ? -errno : (int)len;
	close(fd);
	return r;
}

/* The object's xattr names without ledgerfs's own. */
static int lfs_listxattr(const char *path, char *list, size_t size)
{
	char proc[PATH_PROCFD_LEN];
	const char *rel;
	char *all = NULL;
	ssize_t len;
	size_t out = 0, plen = strlen(STORE_XATTR_PREFIX);
	int fd = -1, r;

	r = rel_path(path, &rel);
	if (r == 0)
		r = path_open(lfs_node()->store->root, rel, O_PATH, 0, &fd);
	if (r < 0)
		return r;
	path_procfd(fd, proc);
	for (;;) {
		len = listxattr(proc, NULL, 0);
		if (len < 0) {
			r = -errno;
			goto out;
		}
		free(all);
		all = malloc((size_t)len + 1);
		if (!all) {
			r = -ENOMEM;
			goto out;
		}
		len = listxattr(proc, all, (size_t)len);
		if (len >= 0)
			break;
		if (errno != ERANGE) {
			r = -errno;
			goto out;
		}
	}
	for (char *p = all; p < all + len; p += strlen(p) + 1) {
		size_t n = strlen(p) + 1;

		if (strncmp(p, STORE_XATTR_PREFIX, plen) == 0)
			continue;
		if (size) {
			if (out + n > size) {
				r = -ERANGE;
				goto out;
			}
			memcpy(list + out, p, n);
		}
		out += n;
	}
	r = (int)out;
out:
	free(all);
	close(fd);
	return r;
}

static int lfs_opendir(const char *path, struct fuse_file_info *fi)
{
	const char *rel;
	DIR *dp;
	int fd = -1, r;

	r = rel_path(path, &rel);
	if (r == 0)
		r = path_open(lfs_node()->store->root, rel, O_RDONLY | O_DIRECTORY, 0, &fd);
	if (r < 0)
		return r;
	dp = fdopendir(fd);
	if (!dp) {
		r = -errno;
		close(fd);
		return r;
	}
	fi->fh = (uintptr_t)dp;
	return 0;
}

static int lfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	DIR *dp = (DIR *)(uintptr_t)fi->fh;
	struct dirent *de;

	if (off == 0)
		rewinddir(dp);
	else
		seekdir(dp, off);
	for (;;) {
		struct stat st = {0};

		errno = 0;
		de = readdir(dp);
		if (!de)
			return errno ? -errno : 0;
		st.st_ino = de->d_ino;
		st.st_mode = (mode_t)DTTOIF(de->d_type);
		if (filler(buf, de->d_name, &st, telldir(dp), 0))
			return 0;
	}
}

static int lfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	closedir((DIR *)(uintptr_t)fi->fh);
	return 0;
}

static int lfs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	DIR *dp = (DIR *)(uintptr_t)fi->fh;
	int r = node_sync(lfs_node());

	if (r < 0)
		return r;
	return fsync(dirfd(dp)) < 0 ? -errno : 0;
}

static int lfs_fallocate(const char *path, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_FALLOCATE, .op_flags = (uint32_t)mode};

	if (off < 0 || len <= 0)
		return -EINVAL;
	ev.offset = (uint64_t)off;
	ev.length = (uint64_t)len;
	now_ts(&ev.mtime_sec, &ev.mtime_nsec);
	return change_with_state(path, fi, &ev, NULL, NULL,
				 mode & FALLOC_FL_PUNCH_HOLE ? 0 : (uint64_t)len);
}

/*
 * A copy becomes a write event carrying the bytes read from the source, so
 * that replaying it never depends on the source's later state.
 */
static ssize_t lfs_copy_file_range(const char *path_in, struct fuse_file_info *fi_in,
				   off_t off_in, const char *path_out,
				   struct fuse_file_info *fi_out, off_t off_out, size_t len,
				   int flags)
{
	size_t want = len < COPY_CHUNK ? len : COPY_CHUNK;
	char *buf;
	ssize_t got;
	int r;

	if (flags)
		return -EINVAL;
	buf = malloc(want ? want : 1);
	if (!buf)
		return -ENOMEM;
	got = pread(lfs_fh(fi_in)->fd, buf, want, off_in);
	if (got < 0) {
		r = -errno;
	} else if (got == 0) {
		r = 0;
	} else {
		r = write_event(path_out, fi_out, buf, (size_t)got, off_out);
	}
	free(buf);
	return r;
}

static off_t lfs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	off_t r = lseek(lfs_fh(fi)->fd, off, whence);

	return r < 0 ? -errno : r;
}

static void *lfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	cfg->use_ino = 1;
	cfg->readdir_ino = 1;
	cfg->hard_remove = 1;
	cfg->kernel_cache = 1;
	if (conn->capable & FUSE_CAP_WRITEBACK_CACHE)
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	/* O_TRUNC must arrive as a truncate so it becomes an event. */
	conn->want &= ~(unsigned)FUSE_CAP_ATOMIC_O_TRUNC;
	return fuse_get_context()->private_data;
}

static const struct fuse_operations lfs_ops = {
	.init = lfs_init,
	.getattr = lfs_getattr,
	.readlink = lfs_readlink,
	.mknod = lfs_mknod,
	.mkdir = lfs_mkdir,
	.unlink = lfs_unlink,
	.rmdir = lfs_rmdir,
	.symlink = lfs_symlink,
	.rename = lfs_rename,
	.link = lfs_link,
	.chmod = lfs_chmod,
	.chown = lfs_chown,
	.truncate = lfs_truncate,
	.open = lfs_open,
	.read_buf = lfs_read_buf,
	.write = lfs_write,
	.statfs = lfs_statfs,
	.release = lfs_release,
	.fsync = lfs_fsync,
	.setxattr = lfs_setxattr,
	.getxattr = lfs_getxattr,
	.listxattr = lfs_listxattr,
	.removexattr = lfs_removexattr,
	.opendir = lfs_opendir,
	.readdir = lfs_readdir,
	.releasedir = lfs_releasedir,
	.fsyncdir = lfs_fsyncdir,
	.create = lfs_create,
	.utimens = lfs_utimens,
	.fallocate = lfs_fallocate,
	.copy_file_range = lfs_copy_file_range,
	.lseek = lfs_lseek,
};

const struct fuse_operations *lfs_fuse_operations(void)
{
	return &lfs_ops;
}
