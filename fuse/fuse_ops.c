/*
 * fuse_ops.c - FUSE low-level operations over a node's store.
 *
 * Reads (lookup, getattr, read, readdir, getxattr, ...) go straight to the
 * store through the O_PATH descriptor of each known object (inodes.c).
 * Each mutation is built into an event under the node lock from the
 * store's current state (path from the object's descriptor, fid, base
 * version, owners), then committed: journaled, applied through the one
 * apply engine, and only then answered.
 *
 * The kernel's writeback cache is on, so the kernel owns file sizes and
 * mtimes between flushes and writes arrive in large batches; files are
 * therefore opened read-write in the store whatever the caller asked.
 * A file unlinked while open keeps its store descriptor: its path reads as
 * gone, its events carry no path, and replay skips them.
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

#include "fuse/fuse_ops.h"
#include "lib/log.h"
#include "store/path.h"
#include "store/xattr_at.h"

/* Largest copy_file_range turned into one write event; callers loop on short copies. */
#define COPY_CHUNK (4u << 20)

struct lfs_file {
	int fd;
};

struct lfs_dir {
	DIR *dp;
	off_t offset;
	struct dirent *entry;
};

static struct lfs_fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct lfs_inode *req_inode(fuse_req_t req, fuse_ino_t ino)
{
	return inodes_get(&req_fs(req)->inodes, ino);
}

static void now_ts(int64_t *sec, uint32_t *nsec)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	*sec = ts.tv_sec;
	*nsec = (uint32_t)ts.tv_nsec;
}

/* Names the kernel may hand us that must never reach the store. */
static int check_name(const char *name)
{
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	return 0;
}

int lfs_fs_init(struct lfs_fs *fs, struct node *node)
{
	memset(fs, 0, sizeof(*fs));
	fs->node = node;
	fs->entry_timeout = LFS_CACHE_TIMEOUT;
	fs->attr_timeout = LFS_CACHE_TIMEOUT;
	return inodes_init(&fs->inodes, node_store(node));
}

void lfs_fs_destroy(struct lfs_fs *fs)
{
	inodes_destroy(&fs->inodes);
}

/*
 * Refuse growth that would eat the space the journal needs to record the
 * failure and the events after it.  statvfs runs only when the writes since
 * the last look could have used half the remaining margin.  Called with the
 * node lock held.
 */
static int space_check(struct lfs_fs *fs, uint64_t bytes)
{
	struct statvfs sv;
	uint64_t avail, reserve;

	fs->space_since += bytes;
	if (fs->space_since < fs->space_margin / 2)
		return 0;
	if (fstatvfs(node_store(fs->node)->root, &sv) < 0)
		return 0;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	reserve = (uint64_t)sv.f_blocks * sv.f_frsize / 50;
	if (reserve < (2u << 20))
		reserve = 2u << 20;
	if (reserve > (256u << 20))
		reserve = 256u << 20;
	fs->space_since = 0;
	fs->space_margin = avail > reserve ? avail - reserve : 0;
	return avail < reserve + bytes ? -ENOSPC : 0;
}

/* Look name up beneath parent: count a lookup and fill e. */
static int do_lookup(struct lfs_fs *fs, struct lfs_inode *parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct lfs_inode *in;
	int fd, r;

	memset(e, 0, sizeof(*e));
	r = check_name(name);
	if (r < 0)
		return r;
	fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &e->attr) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	r = inodes_lookup_fd(&fs->inodes, parent, name, fd, &e->attr, &in);
	if (r < 0)
		return r;
	e->ino = inodes_nodeid(&fs->inodes, in);
	e->attr_timeout = fs->attr_timeout;
	e->entry_timeout = fs->entry_timeout;
	return 0;
}

static void lfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int r = do_lookup(req_fs(req), req_inode(req, parent), name, &e);

	if (r == -ENOENT) {
		/* A negative entry the kernel may cache like a positive one. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = req_fs(req)->entry_timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, &e);
}

static void lfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	inodes_forget(&req_fs(req)->inodes, ino, nlookup);
	fuse_reply_none(req);
}

static void lfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		inodes_forget(&req_fs(req)->inodes, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void lfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int fd = fi ? ((struct lfs_file *)(uintptr_t)fi->fh)->fd : req_inode(req, ino)->fd;

	if (fstat(fd, &st) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_attr(req, &st, req_fs(req)->attr_timeout);
}

/*
 * Fill path, fid and base version of an event about an existing object,
 * from an open file descriptor when there is one.  Node lock held.
 * ev->path is *pathbuf (malloc'd, for the caller to free), or NULL for a
 * file unlinked while open.
 */
static int fill_existing(struct lfs_fs *fs, struct lfs_inode *in, int fd, struct event *ev,
			 char **pathbuf, struct stat *st)
{
	int r;

	*pathbuf = NULL;
	r = path_of_inode(&fs->inodes, in, pathbuf);
	if (r == -ENOENT && fd >= 0)
		ev->path = NULL;
	else if (r < 0)
		return r;
	else
		ev->path = *pathbuf;
	/*
	 * The fid never changes, so it is read once.  The version is read from
	 * the store every time, under the node lock: namespace events stamp a
	 * directory, remote events and resyncs change any object, and a cached
	 * version that missed one of them gives an event a base no replica has.
	 */
	r = in->ids_cached ? store_get_ver(fd >= 0 ? fd : in->fd, &in->ver)
			   : store_get_ids(fd >= 0 ? fd : in->fd, &in->fid, &in->ver);
	if (r == -ENODATA && !in->ids_cached) {
		/* Placed in the store behind ledgerfs's back: fsck reports it. */
		in->fid = (struct fid){0, 0};
		in->ver = (struct evid){0, 0};
		r = 0;
	}
	if (r < 0)
		return r;
	in->ids_cached = 1;
	ev->fid = in->fid;
	ev->base = in->ver;
	if (st && fstat(fd >= 0 ? fd : in->fd, st) < 0)
		return -errno;
	return 0;
}

/* Commit an event about the existing object in; its cached version follows. */
static int commit_existing(struct lfs_fs *fs, struct lfs_inode *in, int fd, struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int r;

	ctx.fd = fd;
	r = node_commit_locked(fs->node, ev, &ctx);
	if (r == 0)
		in->ver = (struct evid){ev->origin, ev->seq};
	return r;
}

/*
 * Check the space and fill an event about the existing object in; node
 * lock held.  ev->path is then malloc'd or NULL, for the caller to free.
 */
static int prepare_locked(struct lfs_fs *fs, struct lfs_inode *in, int fd, struct event *ev,
			  uint64_t grow)
{
	int keeps_mtime = fs->writeback && event_type_is(ev->type, EVENT_T_CONTENT);
	char *path = NULL;
	struct stat st;
	int r;

	ev->path = NULL;
	r = space_check(fs, grow);
	if (r == 0)
		r = fill_existing(fs, in, fd, ev, &path, keeps_mtime ? &st : NULL);
	/*
	 * With the writeback cache the kernel owns a file's mtime: it stamps
	 * the time of the write(2) itself and sends it in a setattr of its
	 * own, which may reach us before the write's pages do.  So a data
	 * change keeps the store's mtime, and the kernel's setattr moves it.
	 */
	if (r == 0 && keeps_mtime) {
		ev->mtime_sec = st.st_mtim.tv_sec;
		ev->mtime_nsec = (uint32_t)st.st_mtim.tv_nsec;
	}
	if (r < 0 || ev->path != path) {
		free(path);
		ev->path = r < 0 ? NULL : ev->path;
	}
	return r;
}

/* Commit one change to an existing object, under the node lock. */
static int change_locked(struct lfs_fs *fs, struct lfs_inode *in, int fd, struct event *ev,
			 uint64_t grow)
{
	int r = prepare_locked(fs, in, fd, ev, grow);

	if (r == 0)
		r = commit_existing(fs, in, fd, ev);
	free(ev->path);
	ev->path = NULL;
	return r;
}

/*
 * Commit a data write: journaled under the node lock, applied outside it
 * (node_write_lock() in node.h), so writers of different files overlap.
 * The inode's write lock keeps this object's changes in journal order.
 */
static int change_data(struct lfs_fs *fs, struct lfs_inode *in, int fd, struct event *ev,
		       uint64_t grow)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int r;

	pthread_mutex_lock(&in->wlock);
	node_write_lock(fs->node);
	r = prepare_locked(fs, in, fd, ev, grow);
	if (r == 0)
		r = node_write_begin_locked(fs->node, ev);
	node_write_unlock(fs->node);
	if (r == 0) {
		ctx.fd = fd;
		r = node_write_finish(fs->node, ev, &ctx);
	}
	pthread_mutex_unlock(&in->wlock);
	free(ev->path);
	ev->path = NULL;
	return r;
}

static int change(struct lfs_fs *fs, struct lfs_inode *in, int fd, struct event *ev, uint64_t grow)
{
	int r;

	node_lock(fs->node);
	r = change_locked(fs, in, fd, ev, grow);
	node_unlock(fs->node);
	return r;
}

/*
 * Commit an event whose fields depend on the object's current state:
 * fill() sees the state under the node lock and returns 0 to commit, 1 when
 * the change would change nothing (no event is worth journaling), or a
 * negative errno.
 */
static int change_state(struct lfs_fs *fs, struct lfs_inode *in, int fd, struct event *ev,
			int (*fill)(struct event *ev, const struct stat *st))
{
	char *path = NULL;
	struct stat st;
	int r;

	node_lock(fs->node);
	r = fill_existing(fs, in, fd, ev, &path, &st);
	if (r == 0)
		r = fill(ev, &st);
	if (r == 0)
		r = commit_existing(fs, in, fd, ev);
	/*
	 * A change that changes nothing is not journaled, but on ext4 it
	 * still moves the object's ctime, which is each node's own and not
	 * replicated.
	 */
	if (r == 1)
		r = store_touch_ctime(in->fd);
	node_unlock(fs->node);
	free(path);
	return r < 0 ? r : 0;
}

static int fill_chmod(struct event *ev, const struct stat *st)
{
	return (st->st_mode & 07777) == (ev->mode & 07777);
}

/*
 * chown resolves "unchanged" (-1) to the current owner and records the mode
 * the object will have: changing a regular file's owner clears set-user-ID
 * and, when group-executable, set-group-ID, as Linux does for every caller.
 */
static int fill_chown(struct event *ev, const struct stat *st)
{
	mode_t mode = st->st_mode & 07777;

	ev->uid = ev->uid == (uint32_t)-1 ? st->st_uid : ev->uid;
	ev->gid = ev->gid == (uint32_t)-1 ? st->st_gid : ev->gid;
	if (S_ISREG(st->st_mode)) {
		mode &= ~(mode_t)S_ISUID;
		if (mode & S_IXGRP)
			mode &= ~(mode_t)S_ISGID;
	}
	ev->mode = mode;
	return ev->uid == st->st_uid && ev->gid == st->st_gid && mode == (st->st_mode & 07777);
}

static int same_time(int64_t sec, uint32_t nsec, const struct timespec *ts)
{
	return nsec == UTIME_OMIT || (ts->tv_sec == sec && (uint32_t)ts->tv_nsec == nsec);
}

/* The writeback cache resends the kernel's times whenever the inode was dirtied. */
static int fill_utimens(struct event *ev, const struct stat *st)
{
	return same_time(ev->atime_sec, ev->atime_nsec, &st->st_atim) &&
	       same_time(ev->mtime_sec, ev->mtime_nsec, &st->st_mtim);
}

static int do_utimens(struct lfs_fs *fs, struct lfs_inode *in, int fd, const struct stat *attr,
		      int valid)
{
	struct event ev = {.type = EV_UTIMENS};
	int64_t sec;
	uint32_t nsec;

	/* "Now" is resolved here so that every node records the same instant. */
	now_ts(&sec, &nsec);
	ev.atime_nsec = UTIME_OMIT;
	ev.mtime_nsec = UTIME_OMIT;
	if (valid & FUSE_SET_ATTR_ATIME_NOW) {
		ev.atime_sec = sec;
		ev.atime_nsec = nsec;
	} else if (valid & FUSE_SET_ATTR_ATIME) {
		ev.atime_sec = attr->st_atim.tv_sec;
		ev.atime_nsec = (uint32_t)attr->st_atim.tv_nsec;
	}
	if (valid & FUSE_SET_ATTR_MTIME_NOW) {
		ev.mtime_sec = sec;
		ev.mtime_nsec = nsec;
	} else if (valid & FUSE_SET_ATTR_MTIME) {
		ev.mtime_sec = attr->st_mtim.tv_sec;
		ev.mtime_nsec = (uint32_t)attr->st_mtim.tv_nsec;
	}
	return change_state(fs, in, fd, &ev, fill_utimens);
}

/* A setattr becomes one event per kind of change, in the order chmod, chown, size, times. */
/* Move the object's ctime in the store, as ext4 does for a change of nothing. */
static int touch_ctime(struct lfs_fs *fs, struct lfs_inode *in)
{
	int r;

	node_lock(fs->node);
	r = store_touch_ctime(in->fd);
	node_unlock(fs->node);
	return r;
}

static void lfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
			struct fuse_file_info *fi)
{
	struct lfs_fs *fs = req_fs(req);
	struct lfs_inode *in = req_inode(req, ino);
	int fd = fi ? ((struct lfs_file *)(uintptr_t)fi->fh)->fd : -1;
	int r = 0;

	if (valid & FUSE_SET_ATTR_MODE) {
		struct event ev = {.type = EV_CHMOD, .mode = attr->st_mode & 07777};

		r = change_state(fs, in, fd, &ev, fill_chmod);
	}
	if (r == 0 && (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		struct event ev = {.type = EV_CHOWN};

		ev.uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uint32_t)-1;
		ev.gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (uint32_t)-1;
		r = change_state(fs, in, fd, &ev, fill_chown);
	}
	if (r == 0 && (valid & FUSE_SET_ATTR_SIZE)) {
		struct event ev = {.type = EV_TRUNCATE, .length = (uint64_t)attr->st_size};

		if (attr->st_size < 0)
			r = -EINVAL;
		now_ts(&ev.mtime_sec, &ev.mtime_nsec);
		if (r == 0)
			r = change(fs, in, fd, &ev, 0);
	}
	if (r == 0 && (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
				FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)))
		r = do_utimens(fs, in, fd, attr, valid);
	/* chown(path, -1, -1) sends nothing to change, and moves only the ctime. */
	if (!(valid & ~FUSE_SET_ATTR_CTIME))
		r = touch_ctime(fs, in);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	lfs_getattr(req, ino, fi);
}

static void lfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX];
	ssize_t n = readlinkat(req_inode(req, ino)->fd, "", buf, sizeof(buf) - 1);

	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

/*
 * Owner and mode of a new object: the caller's uid, and its gid unless the
 * parent directory is setgid, which passes on its group (and, to new
 * directories, the setgid bit), as on ext4.
 */
static int new_owner(fuse_req_t req, struct lfs_inode *parent, struct event *ev)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	struct stat st;

	ev->uid = fc->uid;
	ev->gid = fc->gid;
	if (fstat(parent->fd, &st) < 0)
		return -errno;
	if (st.st_mode & S_ISGID) {
		ev->gid = st.st_gid;
		if (S_ISDIR(ev->mode))
			ev->mode |= S_ISGID;
	}
	return 0;
}

/*
 * Shared body of mknod, mkdir, symlink and create: commit the creating
 * event, then look the new name up for the reply.  ctx may be NULL.
 */
static int make_new(fuse_req_t req, fuse_ino_t parent, const char *name, struct event *ev,
		    struct apply_ctx *ctx, struct fuse_entry_param *e)
{
	struct apply_ctx local = APPLY_CTX_INIT;
	struct lfs_fs *fs = req_fs(req);
	struct lfs_inode *dir = req_inode(req, parent);
	char *path = NULL;
	int r;

	r = check_name(name);
	if (r < 0)
		return r;
	now_ts(&ev->mtime_sec, &ev->mtime_nsec);
	node_lock(fs->node);
	r = path_of_child(&fs->inodes, dir, name, &path);
	if (r == 0)
		r = new_owner(req, dir, ev);
	if (r == 0)
		r = space_check(fs, 0);
	if (r == 0) {
		ev->path = path;
		r = node_commit_locked(fs->node, ev, ctx ? ctx : &local);
	}
	node_unlock(fs->node);
	ev->path = NULL;
	free(path);
	if (r == 0)
		r = do_lookup(fs, dir, name, e);
	return r;
}

static void reply_entry_or_err(fuse_req_t req, int r, const struct fuse_entry_param *e)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, e);
}

static void lfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct event ev = {.type = EV_MKNOD, .mode = mode, .rdev = rdev};
	struct fuse_entry_param e;

	reply_entry_or_err(req, make_new(req, parent, name, &ev, NULL, &e), &e);
}

static void lfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct event ev = {.type = EV_MKDIR, .mode = (mode & 07777) | S_IFDIR};
	struct fuse_entry_param e;

	reply_entry_or_err(req, make_new(req, parent, name, &ev, NULL, &e), &e);
}

static void lfs_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	struct event ev = {.type = EV_SYMLINK, .mode = S_IFLNK | 0777};
	struct fuse_entry_param e;
	size_t len = strlen(target);

	if (len >= PATH_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	ev.data = (uint8_t *)target;
	ev.data_len = (uint32_t)len;
	reply_entry_or_err(req, make_new(req, parent, name, &ev, NULL, &e), &e);
}

static void lfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_CREATE, .mode = (mode & 07777) | S_IFREG};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	struct fuse_entry_param e;
	struct lfs_file *h = malloc(sizeof(*h));
	int r;

	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ctx.want_fd = 1;
	r = make_new(req, parent, name, &ev, &ctx, &e);
	if (r < 0) {
		if (ctx.out_fd >= 0)
			close(ctx.out_fd);
		free(h);
		fuse_reply_err(req, -r);
		return;
	}
	h->fd = ctx.out_fd;
	fi->fh = (uintptr_t)h;
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) < 0) {
		close(h->fd);
		free(h);
	}
}

/* Fid and version of the entry name in dir; zero fid for an object without one. */
static int ids_of_entry(struct lfs_inode *dir, const char *name, struct fid *fid, struct evid *ver)
{
	int fd = openat(dir->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = store_get_ids(fd, fid, ver);
	if (r == -ENODATA) {
		/* Placed in the store behind ledgerfs's back: fsck reports it. */
		*fid = (struct fid){0, 0};
		*ver = (struct evid){0, 0};
		r = 0;
	}
	close(fd);
	return r;
}

/* Shared body of unlink and rmdir. */
static void remove_entry(fuse_req_t req, fuse_ino_t parent, const char *name, unsigned type)
{
	struct lfs_fs *fs = req_fs(req);
	struct lfs_inode *dir = req_inode(req, parent);
	struct event ev = {.type = (uint8_t)type};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	char *path = NULL;
	int r = check_name(name);

	if (r == 0) {
		node_lock(fs->node);
		r = path_of_child(&fs->inodes, dir, name, &path);
		if (r == 0)
			r = ids_of_entry(dir, name, &ev.fid, &ev.base);
		if (r == 0) {
			ev.path = path;
			r = node_commit_locked(fs->node, &ev, &ctx);
		}
		node_unlock(fs->node);
	}
	free(path);
	fuse_reply_err(req, -r);
}

static void lfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_entry(req, parent, name, EV_UNLINK);
}

static void lfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_entry(req, parent, name, EV_RMDIR);
}

static void lfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	struct lfs_fs *fs = req_fs(req);
	struct lfs_inode *from = req_inode(req, parent), *to = req_inode(req, newparent);
	struct event ev = {.type = EV_RENAME, .op_flags = flags};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	char *path = NULL, *path2 = NULL;
	struct evid ver;
	int r;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = check_name(name);
	if (r == 0)
		r = check_name(newname);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	node_lock(fs->node);
	r = path_of_child(&fs->inodes, from, name, &path);
	if (r == 0)
		r = path_of_child(&fs->inodes, to, newname, &path2);
	if (r == 0)
		r = ids_of_entry(from, name, &ev.fid, &ev.base);
	if (r == 0) {
		r = ids_of_entry(to, newname, &ev.fid2, &ver);
		if (r == -ENOENT && !(flags & RENAME_EXCHANGE))
			r = 0;
		else if (r == 0 && (flags & RENAME_NOREPLACE))
			r = -EEXIST;
	}
	if (r == 0) {
		ev.path = path;
		ev.path2 = path2;
		r = node_commit_locked(fs->node, &ev, &ctx);
	}
	/* Files keep their names for path_of_inode(), which /proc cannot always tell. */
	if (r == 0) {
		inodes_moved(&fs->inodes, to, newname);
		if (flags & RENAME_EXCHANGE)
			inodes_moved(&fs->inodes, from, name);
	}
	node_unlock(fs->node);
	free(path2);
	free(path);
	fuse_reply_err(req, -r);
}

static void lfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct lfs_fs *fs = req_fs(req);
	struct lfs_inode *in = req_inode(req, ino), *dir = req_inode(req, newparent);
	struct event ev = {.type = EV_LINK};
	struct apply_ctx ctx = APPLY_CTX_INIT;
	struct fuse_entry_param e;
	char *path = NULL, *path2 = NULL;
	int r = check_name(newname);

	if (r == 0) {
		node_lock(fs->node);
		r = fill_existing(fs, in, -1, &ev, &path, NULL);
		if (r == 0)
			r = path_of_child(&fs->inodes, dir, newname, &path2);
		if (r == 0) {
			ev.path2 = path2;
			r = node_commit_locked(fs->node, &ev, &ctx);
		}
		node_unlock(fs->node);
	}
	free(path2);
	free(path);
	if (r == 0)
		r = do_lookup(fs, dir, newname, &e);
	reply_entry_or_err(req, r, &e);
}

/*
 * Readahead for the mount.  Reads are spliced from the store file through
 * a pipe, which can grow to pipe-max-size (1 MiB); a 1 MiB read plus its
 * reply header no longer fits, and libfuse then falls back to a fresh
 * 1 MiB buffer per read, five times slower (measured).  Half a MiB fits.
 */
#define READAHEAD_KB 512

/*
 * Raise the kernel's readahead for the mount from 128 KiB: fewer, larger
 * read requests (measured: 1.4 times the sequential read rate).  FUSE's
 * INIT reply resets the knob, so this waits for the first open, after INIT.
 */
static void raise_readahead(struct lfs_fs *fs)
{
	FILE *f;

	if (!fs->readahead_knob[0] || __atomic_exchange_n(&fs->readahead_set, 1, __ATOMIC_RELAXED))
		return;
	f = fopen(fs->readahead_knob, "w");
	if (!f || (fprintf(f, "%d\n", READAHEAD_KB) < 0) | (fclose(f) != 0))
		log_warn("%s: cannot raise readahead: %s", fs->readahead_knob, strerror(errno));
}

static void lfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char proc[PATH_PROCFD_LEN];
	struct lfs_file *h;
	int flags = fi->flags, fd;

	if (((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) &&
	    !node_is_primary(req_fs(req)->node)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/*
	 * The writeback cache reads pages of files opened write-only and
	 * computes append offsets itself; truncation arrives as a setattr.
	 * O_DIRECT is the kernel's business on the mount side: the payloads
	 * this process writes to the store come from FUSE's buffers, which
	 * meet no alignment rule, and ext4 moves a file's mtime before it
	 * refuses a misaligned direct write.
	 */
	flags &= ~(O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_NOCTTY | O_ACCMODE | O_NOFOLLOW |
		   O_DIRECT);
	path_procfd(req_inode(req, ino)->fd, proc);
	fd = open(proc, flags | O_RDWR | O_CLOEXEC);
	if (fd < 0 && (errno == EISDIR || errno == EACCES || errno == EPERM || errno == EROFS ||
		       errno == ETXTBSY))
		fd = open(proc, flags | O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	h = malloc(sizeof(*h));
	if (!h) {
		close(fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->fd = fd;
	fi->fh = (uintptr_t)h;
	raise_readahead(req_fs(req));
	/*
	 * Cached pages stay true: the primary is the only writer of its store,
	 * and a replica invalidates what each applied remote event touched.
	 */
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) < 0) {
		close(fd);
		free(h);
	}
}

static void lfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = ((struct lfs_file *)(uintptr_t)fi->fh)->fd;
	bv.buf[0].pos = off;
	fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

/* One write event carrying buf; returns the bytes written or a negative errno. */
static ssize_t write_event(struct lfs_fs *fs, struct lfs_inode *in, int fd, const void *buf,
			   size_t size, off_t off)
{
	struct event ev = {.type = EV_WRITE, .offset = (uint64_t)off};
	int r;

	if (off < 0)
		return -EINVAL;
	if (size > EVENT_MAX_DATA)
		size = EVENT_MAX_DATA;
	ev.data = (uint8_t *)buf;
	ev.data_len = (uint32_t)size;
	now_ts(&ev.mtime_sec, &ev.mtime_nsec);
	/* The payload lands twice: in the journal and in the store. */
	r = change_data(fs, in, fd, &ev, 2 * (uint64_t)size);
	return r < 0 ? r : (ssize_t)size;
}

static void lfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	ssize_t r = write_event(req_fs(req), req_inode(req, ino),
				((struct lfs_file *)(uintptr_t)fi->fh)->fd, buf, size, off);

	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void lfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void lfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct lfs_file *h = (struct lfs_file *)(uintptr_t)fi->fh;

	close(h->fd);
	free(h);
	fuse_reply_err(req, 0);
}

/*
 * fsync makes the journal durable, which makes every change journaled so
 * far durable: the journal is the store's write-ahead log, and the store
 * is flushed in checkpoints (node/checkpoint.c), so one disk flush serves
 * the call.  With sync_peers it also waits for that many peers to confirm
 * (node_wait_peers()).  The store file is not flushed: after a power loss
 * the redo of the data events since the last checkpoint brings its bytes
 * back.
 */
static void sync_journal(fuse_req_t req)
{
	struct node *n = req_fs(req)->node;
	int r = node_sync_wait(n, node_sync_start(n));
	if (r == 0)
		r = node_wait_peers(n);
	fuse_reply_err(req, -r);
}

static void lfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	sync_journal(req);
}

static void lfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char proc[PATH_PROCFD_LEN];
	struct lfs_dir *d = calloc(1, sizeof(*d));
	int fd;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = open(path_procfd(req_inode(req, ino)->fd, proc), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d->dp = fdopendir(fd))) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, e);
		return;
	}
	fi->fh = (uintptr_t)d;
	if (fuse_reply_open(req, fi) < 0) {
		closedir(d->dp);
		free(d);
	}
}

static void lfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct lfs_dir *d = (struct lfs_dir *)(uintptr_t)fi->fh;
	char *buf = malloc(size), *p = buf;
	size_t left = size;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	for (;;) {
		struct stat st = {0};
		size_t n;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				if (errno && p == buf) {
					free(buf);
					fuse_reply_err(req, errno);
					return;
				}
				break;
			}
		}
		st.st_ino = d->entry->d_ino;
		st.st_mode = (mode_t)DTTOIF(d->entry->d_type);
		n = fuse_add_direntry(req, p, left, d->entry->d_name, &st, d->entry->d_off);
		if (n > left)
			break;
		p += n;
		left -= n;
		d->offset = d->entry->d_off;
		d->entry = NULL;
	}
	fuse_reply_buf(req, buf, (size_t)(p - buf));
	free(buf);
}

static void lfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct lfs_dir *d = (struct lfs_dir *)(uintptr_t)fi->fh;

	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void lfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	sync_journal(req);
}

static void lfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (fstatvfs(node_store(req_fs(req)->node)->root, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

/* True if in's xattr name holds exactly value (size bytes). */
static int xattr_holds(struct lfs_inode *in, const char *name, const char *value, size_t size)
{
	char proc[PATH_PROCFD_LEN], *have;
	ssize_t n;
	int same;

	if (size > XATTR_SIZE_MAX)
		return 0;
	have = malloc(size + 1);
	if (!have)
		return 0;
	n = lgetxattr(path_procfd(in->fd, proc), name, have, size + 1);
	same = n == (ssize_t)size && memcmp(have, value, size) == 0;
	free(have);
	return same;
}

static void lfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	struct event ev = {.type = EV_SETXATTR, .op_flags = (uint32_t)flags};
	int r = 0;

	if (xattr_is_ledgerfs(name, strlen(name)))
		r = -EPERM;
	else if (strlen(name) > XATTR_NAME_MAX)
		r = -ERANGE;
	else if (size > XATTR_SIZE_MAX)
		r = -E2BIG;
	if (r == 0 && !(flags & XATTR_CREATE) && xattr_holds(req_inode(req, ino), name, value, size)) {
		/* ext4 leaves an object alone, ctime included, when the value is the same. */
		fuse_reply_err(req, 0);
		return;
	}
	if (r == 0) {
		ev.name = (char *)name;
		ev.data = (uint8_t *)value;
		ev.data_len = (uint32_t)size;
		r = change(req_fs(req), req_inode(req, ino), -1, &ev, size);
	}
	fuse_reply_err(req, -r);
}

static void lfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct event ev = {.type = EV_REMOVEXATTR};
	int r = -ENODATA;

	if (!xattr_is_ledgerfs(name, strlen(name))) {
		ev.name = (char *)name;
		r = change(req_fs(req), req_inode(req, ino), -1, &ev, 0);
	}
	fuse_reply_err(req, -r);
}

/* Answer an xattr query of size bytes with what len/buf hold (or an error). */
static void reply_xattr(fuse_req_t req, size_t size, ssize_t len, const char *buf)
{
	if (len < 0)
		fuse_reply_err(req, (int)-len);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else if ((size_t)len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, (size_t)len);
}

#define XATTR_CAPS "security.capability"

static void lfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct lfs_inode *in = req_inode(req, ino);
	struct store *store = node_store(req_fs(req)->node);
	int caps = strcmp(name, XATTR_CAPS) == 0;
	uint64_t gen = store_xattrs(store) + 1;
	char proc[PATH_PROCFD_LEN];
	char *buf = NULL;
	ssize_t len;

	if (xattr_is_ledgerfs(name, strlen(name)) ||
	    (caps && __atomic_load_n(&in->nocap, __ATOMIC_ACQUIRE) == gen)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (size && !(buf = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	len = getxattr(path_procfd(in->fd, proc), name, buf, size);
	if (len < 0 && errno == ENODATA && caps)
		__atomic_store_n(&in->nocap, gen, __ATOMIC_RELEASE);
	reply_xattr(req, size, len < 0 ? -errno : len, buf);
	free(buf);
}

/* The object's xattr names without ledgerfs's own. */
static void lfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char proc[PATH_PROCFD_LEN];
	char *all = NULL, *out = NULL;
	size_t used = 0;
	ssize_t len;

	path_procfd(req_inode(req, ino)->fd, proc);
	for (;;) {
		len = listxattr(proc, NULL, 0);
		if (len < 0)
			goto fail;
		free(all);
		all = malloc((size_t)len + 1);
		if (!all) {
			errno = ENOMEM;
			goto fail;
		}
		len = listxattr(proc, all, (size_t)len);
		if (len >= 0)
			break;
		if (errno != ERANGE)
			goto fail;
	}
	out = malloc((size_t)len + 1);
	if (!out) {
		errno = ENOMEM;
		goto fail;
	}
	for (char *p = all; p < all + len; p += strlen(p) + 1) {
		size_t n = strlen(p) + 1;

		if (xattr_is_ledgerfs(p, n - 1))
			continue;
		memcpy(out + used, p, n);
		used += n;
	}
	reply_xattr(req, size, (ssize_t)used, out);
	free(out);
	free(all);
	return;
fail:
	fuse_reply_err(req, errno);
	free(all);
}

static void lfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			  struct fuse_file_info *fi)
{
	struct event ev = {.type = EV_FALLOCATE, .op_flags = (uint32_t)mode};
	int r = -EINVAL;

	if (off >= 0 && len > 0) {
		ev.offset = (uint64_t)off;
		ev.length = (uint64_t)len;
		now_ts(&ev.mtime_sec, &ev.mtime_nsec);
		r = change(req_fs(req), req_inode(req, ino),
			   ((struct lfs_file *)(uintptr_t)fi->fh)->fd, &ev,
			   mode & FALLOC_FL_PUNCH_HOLE ? 0 : (uint64_t)len);
	}
	fuse_reply_err(req, -r);
}

/*
 * A copy becomes a write event carrying the bytes read from the source, so
 * that replaying it never depends on the source's later state.
 */
static void lfs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
				struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
				struct fuse_file_info *fi_out, size_t len, int flags)
{
	size_t want = len < COPY_CHUNK ? len : COPY_CHUNK;
	char *buf;
	ssize_t got, r;

	if (flags) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	buf = malloc(want ? want : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	got = pread(((struct lfs_file *)(uintptr_t)fi_in->fh)->fd, buf, want, off_in);
	if (got < 0)
		r = -errno;
	else if (got == 0)
		r = 0;
	else
		r = write_event(req_fs(req), req_inode(req, ino_out),
				((struct lfs_file *)(uintptr_t)fi_out->fh)->fd, buf, (size_t)got,
				off_out);
	free(buf);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void lfs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	off_t r = lseek(((struct lfs_file *)(uintptr_t)fi->fh)->fd, off, whence);

	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

static void lfs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct lfs_fs *fs = userdata;

	/*
	 * With the writeback cache the kernel owns a cached file's size and
	 * ignores the one we report, so a replica, whose files change behind
	 * the kernel's back, must go without it; it does not write anyway.
	 */
	fs->writeback = (conn->capable & FUSE_CAP_WRITEBACK_CACHE) &&
			node_is_primary(fs->node);
	if (fs->writeback)
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	/* O_TRUNC must arrive as a setattr so that it becomes an event. */
	conn->want &= ~(unsigned)FUSE_CAP_ATOMIC_O_TRUNC;
}

static const struct fuse_lowlevel_ops lfs_ops = {
    .init = lfs_init,
    .lookup = lfs_lookup,
    .forget = lfs_forget,
    .forget_multi = lfs_forget_multi,
    .getattr = lfs_getattr,
    .setattr = lfs_setattr,
    .readlink = lfs_readlink,
    .mknod = lfs_mknod,
    .mkdir = lfs_mkdir,
    .unlink = lfs_unlink,
    .rmdir = lfs_rmdir,
    .symlink = lfs_symlink,
    .rename = lfs_rename,
    .link = lfs_link,
    .open = lfs_open,
    .read = lfs_read,
    .write = lfs_write,
    .flush = lfs_flush,
    .release = lfs_release,
    .fsync = lfs_fsync,
    .opendir = lfs_opendir,
    .readdir = lfs_readdir,
    .releasedir = lfs_releasedir,
    .fsyncdir = lfs_fsyncdir,
    .statfs = lfs_statfs,
    .setxattr = lfs_setxattr,
    .getxattr = lfs_getxattr,
    .listxattr = lfs_listxattr,
    .removexattr = lfs_removexattr,
    .create = lfs_create,
    .fallocate = lfs_fallocate,
    .copy_file_range = lfs_copy_file_range,
    .lseek = lfs_lseek,
};

const struct fuse_lowlevel_ops *lfs_fuse_operations(void)
{
	return &lfs_ops;
}
