/*
 * store.c - the apply engine: the only code that changes the store.
 *
 * Each event names the fids it touches; before changing anything the engine
 * checks that the store holds them where the event says.  That makes replay
 * safe: an event that already reached the store before a crash is
 * recognised (the new name already holds the fid, the version xattr already
 * names the event) and skipped rather than applied twice.  A replica
 * journals a frame's events before applying them, so a crash can leave a
 * run of them applied but not marked: replay then meets names that a later
 * event of the run moved, removed or replaced, and a directory above them
 * whose version names that later event proves the run applied.  Events
 * built a moment ago under the node lock (ctx->fresh) skip those checks:
 * the FUSE layer has just read the same state.
 *
 * Objects are reached through O_PATH descriptors opened beneath the root
 * (path.c) and their parents' descriptors, never through a path string
 * handed to a plain syscall, so no event can reach outside the store.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "store/path.h"
#include "store/store.h"
#include "store/xattr_at.h"

/* Count an xattr change, after it is made (store->xattr_changes). */
static void xattrs_changed(struct store *s)
{
	__atomic_add_fetch(&s->xattr_changes, 1, __ATOMIC_SEQ_CST);
}

/*
 * The f*xattr calls refuse O_PATH descriptors (EBADF); those are
 * reached through /proc/self/fd instead, which costs a path walk, so the
 * direct call is tried first.
 */
static int set_pair(int fd, const char *name, uint64_t a, uint64_t b)
{
	char proc[PATH_PROCFD_LEN];
	uint8_t buf[16];

	put_le64(buf, a);
	put_le64(buf + 8, b);
	if (fsetxattr(fd, name, buf, sizeof(buf), 0) == 0)
		return 0;
	if (errno != EBADF || setxattr(path_procfd(fd, proc), name, buf, sizeof(buf), 0) < 0)
		return -errno;
	return 0;
}

static int get_pair(int fd, const char *name, uint64_t *a, uint64_t *b)
{
	char proc[PATH_PROCFD_LEN];
	uint8_t buf[16];
	ssize_t n = fgetxattr(fd, name, buf, sizeof(buf));

	if (n < 0 && errno == EBADF)
		n = getxattr(path_procfd(fd, proc), name, buf, sizeof(buf));
	if (n < 0)
		return errno == ERANGE ? -ENODATA : -errno;
	if (n != (ssize_t)sizeof(buf))
		return -ENODATA;
	*a = get_le64(buf);
	*b = get_le64(buf + 8);
	return 0;
}

int store_get_ids(int fd, struct fid *fid, struct evid *ver)
{
	int r = get_pair(fd, STORE_XATTR_FID, &fid->origin, &fid->counter);

	if (r < 0 || !ver)
		return r;
	r = get_pair(fd, STORE_XATTR_VER, &ver->origin, &ver->seq);
	if (r == -ENODATA) {
		ver->origin = ver->seq = 0;
		r = 0;
	}
	return r;
}

int store_get_ver(int fd, struct evid *ver)
{
	int r = get_pair(fd, STORE_XATTR_VER, &ver->origin, &ver->seq);

	if (r == -ENODATA) {
		ver->origin = ver->seq = 0;
		r = 0;
	}
	return r;
}

int store_touch_ctime(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	/*
	 * ext4 skips an xattr write of the value an object has, and times
	 * all omitted, so neither moves the ctime; a chmod to the mode it has
	 * does, and as root it keeps set-id bits (a chown would clear them).
	 * A symlink has no mode to set, and no set-id bits to lose.
	 */
	if (S_ISLNK(st.st_mode)) {
		if (fchownat(fd, "", (uid_t)-1, (gid_t)-1, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		return 0;
	}
	return path_fchmod(fd, st.st_mode);
}

int store_set_fid(int fd, const struct fid *fid)
{
	return set_pair(fd, STORE_XATTR_FID, fid->origin, fid->counter);
}

static int set_ver(int fd, const struct event *ev)
{
	return set_pair(fd, STORE_XATTR_VER, ev->origin, ev->seq);
}

/*
 * Events of one origin reach the store in seq order (only data writes to
 * different files, which commute, may overlap: node.h's parallel writes,
 * never with a namespace event), so a
 * directory whose version names this event, or a later one of the same
 * origin, proves that the event was applied.  Namespace events stamp the
 * directories they change for this reason; a name alone cannot tell "made
 * and then moved away" from "never made".
 */
static int dir_says_applied(int dirfd, const struct event *ev)
{
	uint64_t origin, seq;

	return get_pair(dirfd, STORE_XATTR_VER, &origin, &seq) == 0 && origin == ev->origin &&
	       seq >= ev->seq;
}

/*
 * Stamp a directory the event changed.  The change itself is done; a failed
 * stamp only weakens the replay evidence, so it must not fail the event.
 */
static void stamp_dir(int dirfd, const struct event *ev)
{
	if (set_ver(dirfd, ev) < 0)
		return;
}

/*
 * Does the nearest directory above rel that still exists carry a version
 * proving ev applied (dir_says_applied())?  Replay after a crash may take
 * up a frame's worth of events that already reached the store, and a
 * later one of them may have moved, removed or replaced ev's target.
 */
static int ancestor_says_applied(struct store *s, const char *rel, const struct event *ev)
{
	char *dir = strdup(rel), *slash;
	int fd, yes = -1;

	/* Without memory the answer is no: the event then fails, and nothing is skipped wrongly. */
	if (!dir)
		return 0;
	while (yes < 0 && (slash = strrchr(dir, '/'))) {
		*slash = '\0';
		if (path_open(s->root, dir, O_PATH | O_DIRECTORY, 0, &fd) == 0) {
			yes = dir_says_applied(fd, ev);
			close(fd);
		}
	}
	free(dir);
	return yes < 0 ? dir_says_applied(s->root, ev) : yes;
}

void apply_cache_init(struct apply_cache *c)
{
	c->changes = 0;
	c->dirfd = -1;
	c->fd = -1;
	c->ids = 0;
	c->ver_dirty = 0;
	c->fid_dirty = 0;
	c->times[0] = c->times[1] = (struct timespec){.tv_nsec = UTIME_OMIT};
	c->dir_plain = -1;
	c->dir_ver_ok = 0;
	c->stamp_dirty = 0;
	c->dir[0] = '\0';
	c->obj[0] = '\0';
}

/* Set the times, the version and last the fid deferred for the file at obj. */
static int flush_file(struct apply_cache *c)
{
	int r = 0;

	if (c->times[0].tv_nsec != UTIME_OMIT || c->times[1].tv_nsec != UTIME_OMIT) {
		if (futimens(c->fd, c->times) < 0)
			r = -errno;
		c->times[0] = c->times[1] = (struct timespec){.tv_nsec = UTIME_OMIT};
	}
	if (r == 0 && c->ver_dirty)
		r = set_pair(c->fd, STORE_XATTR_VER, c->ver.origin, c->ver.seq);
	if (r == 0 && c->fid_dirty)
		r = store_set_fid(c->fd, &c->fid);
	/* The directory's deferred stamp may name the file's creation: replay must redo it. */
	if (r < 0 && c->fid_dirty)
		c->stamp_dirty = 0;
	c->ver_dirty = 0;
	c->fid_dirty = 0;
	return r;
}

/*
 * Write directory dir's deferred stamp; forget its version and whether it
 * is plain, which others may change.
 */
static void flush_dir(struct apply_cache *c)
{
	if (c->stamp_dirty)
		set_pair(c->dirfd, STORE_XATTR_VER, c->dir_ver.origin, c->dir_ver.seq);
	c->stamp_dirty = 0;
	c->dir_ver_ok = 0;
	c->dir_plain = -1;
}

int apply_cache_flush(struct apply_cache *c)
{
	int r = 0;

	if (c->fd >= 0)
		r = flush_file(c);
	if (c->dirfd >= 0)
		flush_dir(c);
	return r;
}

void apply_cache_release(struct apply_cache *c)
{
	apply_cache_flush(c);
	if (c->dirfd >= 0)
		close(c->dirfd);
	if (c->fd >= 0)
		close(c->fd);
	apply_cache_init(c);
}

/* dir_says_applied() for (dirfd), read once per directory the cache holds. */
static int dir_applied(struct apply_cache *c, int dirfd, const struct event *ev)
{
	if (!c || dirfd != c->dirfd)
		return dir_says_applied(dirfd, ev);
	if (!c->dir_ver_ok) {
		if (get_pair(dirfd, STORE_XATTR_VER, &c->dir_ver.origin, &c->dir_ver.seq) < 0)
			c->dir_ver = (struct evid){0, 0};
		c->dir_ver_ok = 1;
	}
	return c->dir_ver.origin == ev->origin && c->dir_ver.seq >= ev->seq;
}

/* stamp_dir(), deferred while dirfd is the cache's directory. */
static void stamp_dir_cached(struct apply_cache *c, int dirfd, const struct event *ev)
{
	if (!c || dirfd != c->dirfd) {
		stamp_dir(dirfd, ev);
		return;
	}
	c->dir_ver = (struct evid){ev->origin, ev->seq};
	c->dir_ver_ok = 1;
	c->stamp_dirty = 1;
}

/*
 * path_at_open() through the cache: the parent directory comes from it
 * when it is the same, and is kept there otherwise, so at never owns it;
 * a parent whose path is too long to keep is not cached.
 */
static int cache_at_open(struct store *s, struct apply_cache *c, const char *rel,
			 struct path_at *at)
{
	const char *slash = strrchr(rel, '/');
	size_t n = slash ? (size_t)(slash - rel) : 0;
	int r;

	if (!c || !slash || n >= sizeof(c->dir))
		return path_at_open(s->root, rel, at);
	if (c->dirfd >= 0 && strlen(c->dir) == n && memcmp(c->dir, rel, n) == 0) {
		*at = (struct path_at){.dirfd = c->dirfd, .owned = 0, .base = slash + 1};
		return 0;
	}
	r = path_at_open(s->root, rel, at);
	if (r < 0)
		return r;
	if (c->dirfd >= 0) {
		flush_dir(c);
		close(c->dirfd);
	}
	c->dirfd = at->dirfd;
	memcpy(c->dir, rel, n);
	c->dir[n] = '\0';
	at->owned = 0;
	return 0;
}

/*
 * Can cache c keep the file EV_CREATE ev makes?  Only a read-write
 * descriptor the caller does not want, at a path short enough to keep.
 */
static int cache_keeps_file(const struct apply_cache *c, const struct event *ev,
			    const struct apply_ctx *ctx)
{
	return c && ev->type == EV_CREATE && !ctx->want_fd && strlen(ev->path) < sizeof(c->obj);
}

/*
 * Keep the read-write descriptor, fid and version of the file ev just
 * created; with deferred, its times, version and fid are still to write
 * (finish_object() left them).  What the cache deferred for the file it
 * held before was written by cache_before().
 */
static void cache_keep_file(struct apply_cache *c, const struct event *ev, struct fid fid,
			    int deferred, int *fd)
{
	struct timespec t = {.tv_sec = ev->mtime_sec, .tv_nsec = ev->mtime_nsec};

	if (c->fd >= 0)
		close(c->fd);
	c->fd = *fd;
	strcpy(c->obj, ev->path);
	c->ids = 1;
	c->fid = fid;
	c->ver = (struct evid){ev->origin, ev->seq};
	if (deferred) {
		c->fid_dirty = c->ver_dirty = 1;
		c->times[0] = c->times[1] = t;
	}
	*fd = -1;
}

/*
 * Does directory dirfd give a file made in it this process's owner and
 * exactly the mode asked for, less the umask?  Not when it is set-group-ID
 * or of another group (some mounts give new files the directory's group),
 * nor when it has a default ACL, which replaces the umask.
 */
static int dir_is_plain(struct store *s, int dirfd)
{
	char proc[PATH_PROCFD_LEN];
	struct stat st;

	if (fstat(dirfd, &st) < 0 || (st.st_mode & S_ISGID) || st.st_gid != s->gid)
		return 0;
	if (getxattr(path_procfd(dirfd, proc), "system.posix_acl_default", NULL, 0) >= 0)
		return 0;
	return errno == ENODATA || errno == EOPNOTSUPP;
}

/* dir_is_plain() for (dirfd), asked once per directory the cache holds. */
static int dir_plain(struct store *s, struct apply_cache *c, int dirfd)
{
	if (!c || dirfd != c->dirfd)
		return 0;
	if (c->dir_plain < 0)
		c->dir_plain = dir_is_plain(s, dirfd);
	return c->dir_plain;
}

/* The umask from /proc/self/status, or -1. */
static int process_umask(void)
{
	char line[128];
	unsigned m;
	int r = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Umask: %o", &m) == 1) {
			r = (int)(m & 0777);
			break;
		}
	fclose(f);
	return r;
}

int store_open(const char *dir, struct store **out)
{
	struct store *s = calloc(1, sizeof(*s));
	int r = 0;

	if (!s)
		return -ENOMEM;
	s->root = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->root < 0) {
		r = -errno;
		free(s);
		goto out;
	}
	s->umask = process_umask();
	s->uid = geteuid();
	s->gid = getegid();
	*out = s;
out:
	return r;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	close(s->root);
	free(s);
}

int store_stamp(struct store *s, const uint8_t cluster[16])
{
	char proc[PATH_PROCFD_LEN];
	struct fid root = STORE_ROOT_FID;
	int r = store_set_fid(s->root, &root);

	if (r < 0)
		return r;
	if (setxattr(path_procfd(s->root, proc), STORE_XATTR_NODE, cluster, 16, 0) < 0)
		return -errno;
	return 0;
}

int store_check_stamp(struct store *s, const uint8_t cluster[16])
{
	char proc[PATH_PROCFD_LEN];
	uint8_t buf[16];
	ssize_t n = getxattr(path_procfd(s->root, proc), STORE_XATTR_NODE, buf, sizeof(buf));

	if (n < 0)
		return errno == ENODATA || errno == ERANGE ? -ENODATA : -errno;
	if (n != 16 || memcmp(buf, cluster, 16) != 0)
		return -ESTALE;
	return 0;
}

/* The object at (dirfd, name) without following a final symlink; -ENOENT if absent. */
static int open_entry(int dirfd, const char *name, int *fd)
{
	int r = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

	if (r < 0)
		return -errno;
	*fd = r;
	return 0;
}

/* What entry_holds() found at a name besides the fid asked for or nothing. */
#define HOLDS_OTHER  0
#define HOLDS_FID    1
#define HOLDS_NO_FID 2

/*
 * HOLDS_FID if (dirfd, name) holds fid, HOLDS_OTHER if it holds an object
 * with another fid, HOLDS_NO_FID if one without a fid, -ENOENT if absent.
 */
static int entry_holds(int dirfd, const char *name, struct fid fid)
{
	struct fid have;
	int fd = -1, r;

	r = open_entry(dirfd, name, &fd);
	if (r < 0)
		return r;
	r = store_get_ids(fd, &have, NULL);
	close(fd);
	if (r == -ENODATA)
		return HOLDS_NO_FID;
	if (r < 0)
		return r;
	return fid_eq(have, fid) ? HOLDS_FID : HOLDS_OTHER;
}

static int full_pwrite(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int store_data_change(int fd, const struct event *ev)
{
	switch (ev->type) {
	case EV_WRITE:
		return full_pwrite(fd, ev->data, ev->data_len, ev->offset);
	case EV_TRUNCATE:
		return ftruncate(fd, (off_t)ev->length) < 0 ? -errno : 0;
	case EV_FALLOCATE:
		return fallocate(fd, (int)ev->op_flags, (off_t)ev->offset, (off_t)ev->length) < 0
			   ? -errno
			   : 0;
	default:
		return -EINVAL;
	}
}

/*
 * Set the times ts (either may be UTIME_OMIT) of the object at fd, or
 * leave them to apply_cache_flush() when defer is the cache holding fd.
 */
static int set_times(int fd, const struct timespec ts[2], struct apply_cache *defer)
{
	if (defer) {
		for (int i = 0; i < 2; i++)
			if (ts[i].tv_nsec != UTIME_OMIT)
				defer->times[i] = ts[i];
		return 0;
	}
	if (utimensat(fd, "", ts, AT_EMPTY_PATH) < 0)
		return -errno;
	return 0;
}

static int set_mtime(int fd, const struct event *ev, struct apply_cache *defer)
{
	struct timespec ts[2] = {
	    {.tv_nsec = UTIME_OMIT},
	    {.tv_sec = ev->mtime_sec, .tv_nsec = ev->mtime_nsec},
	};

	return set_times(fd, ts, defer);
}

static int chown_fd(int fd, uint32_t uid, uint32_t gid)
{
	if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

/*
 * Create the object of a create/mknod/mkdir/symlink event at (dirfd, name)
 * and return an O_PATH descriptor of it (or a read-write one for EV_CREATE).
 */
static int make_object(const struct event *ev, const char *target, int dirfd, const char *name,
		       int *fd)
{
	int r;

	switch (ev->type) {
	case EV_CREATE:
		r = openat(dirfd, name, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC,
			   ev->mode & 07777);
		if (r < 0)
			return -errno;
		*fd = r;
		return 0;
	case EV_MKNOD:
		if (mknodat(dirfd, name, ev->mode, (dev_t)ev->rdev) < 0)
			return -errno;
		break;
	case EV_MKDIR:
		if (mkdirat(dirfd, name, ev->mode & 07777) < 0)
			return -errno;
		break;
	case EV_SYMLINK:
		if (symlinkat(target, dirfd, name) < 0)
			return -errno;
		break;
	default:
		return -EINVAL;
	}
	return open_entry(dirfd, name, fd);
}

/*
 * The object a crash left half made: the creation reached the store but
 * the fid, which apply_new() sets last, did not.  Adopted only if it is of
 * the kind the event makes.
 */
static int adopt_object(const struct event *ev, const char *target, int dirfd, const char *name,
			int *fd)
{
	char have[PATH_MAX];
	struct stat st;
	mode_t want;
	ssize_t n;
	int r;

	want = ev->type == EV_CREATE	? S_IFREG
	       : ev->type == EV_MKDIR	? S_IFDIR
	       : ev->type == EV_SYMLINK ? S_IFLNK
					: (ev->mode & S_IFMT);
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if ((st.st_mode & S_IFMT) != want)
		return -EEXIST;
	if (ev->type == EV_SYMLINK) {
		n = readlinkat(dirfd, name, have, sizeof(have) - 1);
		if (n < 0 || (size_t)n != strlen(target) || memcmp(have, target, (size_t)n))
			return -EEXIST;
	}
	if (ev->type == EV_CREATE) {
		r = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (r < 0)
			return -errno;
		*fd = r;
		return 0;
	}
	return open_entry(dirfd, name, fd);
}

/* What finish_object() may leave out. */
#define FINISH_OWNER 1 /* the object has the owner and mode the event gives it */
#define FINISH_IDS   2 /* times, version and fid: the cache defers them */

/*
 * What a file just made in directory dirfd already has right: with a
 * plain directory, no set-id bits and a umask that clears none of the
 * mode's bits, the owner and mode the event gives it.
 */
static int made_right(struct store *s, struct apply_cache *c, const struct event *ev, int dirfd)
{
	mode_t mode = ev->mode & 07777;

	if (ev->type != EV_CREATE || ev->uid != s->uid || ev->gid != s->gid || (mode & 07000) ||
	    s->umask < 0 || (mode & (mode_t)s->umask))
		return 0;
	return dir_plain(s, c, dirfd) ? FINISH_OWNER : 0;
}

/*
 * Give a new object its owner, exact mode, times and version, and last its
 * fid: a fid in the store means the creation is complete.  skip (FINISH_*)
 * says what it has already or what is left to the cache.
 */
static int finish_object(const struct event *ev, int fd, struct fid fid, int skip, const char **why)
{
	int r;

	r = skip & FINISH_OWNER ? 0 : chown_fd(fd, ev->uid, ev->gid);
	if (r < 0) {
		*why = "chown";
		return r;
	}
	/*
	 * chown may clear set-id bits and mkdir ignores them; set the exact
	 * mode the event carries so every node ends with the same bits.
	 */
	if (ev->type != EV_SYMLINK && !(skip & FINISH_OWNER)) {
		r = path_fchmod(fd, ev->mode);
		if (r < 0) {
			*why = "chmod";
			return r;
		}
	}
	if (skip & FINISH_IDS)
		return 0;
	if (ev->type == EV_CREATE || (ev->type == EV_MKNOD && S_ISREG(ev->mode))) {
		struct timespec ts[2] = {
		    {.tv_sec = ev->mtime_sec, .tv_nsec = ev->mtime_nsec},
		    {.tv_sec = ev->mtime_sec, .tv_nsec = ev->mtime_nsec},
		};

		if (utimensat(fd, "", ts, AT_EMPTY_PATH) < 0) {
			*why = "set mtime";
			return -errno;
		}
	}
	r = set_ver(fd, ev);
	if (r == 0)
		r = store_set_fid(fd, &fid);
	if (r < 0)
		*why = "set fid";
	return r;
}

static int apply_new(struct store *s, const struct event *ev, struct apply_ctx *ctx,
		     const char **why)
{
	struct path_at at = {.dirfd = -1};
	struct fid fid = fid_is_zero(ev->fid) ? (struct fid){ev->origin, ev->seq} : ev->fid;
	char target[PATH_MAX] = "";
	int fd = -1, made = 0, skip = 0, r;

	if (ev->type == EV_SYMLINK) {
		if (ev->data_len == 0 || ev->data_len >= sizeof(target) ||
		    memchr(ev->data, 0, ev->data_len)) {
			*why = "bad symlink target";
			return -EINVAL;
		}
		memcpy(target, ev->data, ev->data_len);
		target[ev->data_len] = '\0';
	}
	r = cache_at_open(s, ctx->cache, ev->path, &at);
	if (r == -ENOENT && !ctx->fresh && ancestor_says_applied(s, ev->path, ev)) {
		r = APPLY_SKIPPED;
		goto out;
	}
	if (r < 0) {
		*why = "resolve parent";
		goto out;
	}
	if (!ctx->fresh && dir_applied(ctx->cache, at.dirfd, ev)) {
		r = APPLY_SKIPPED;
		goto out;
	}
	/* A name already there is looked at only then: on replay, or a conflict. */
	r = make_object(ev, target, at.dirfd, at.base, &fd);
	made = r == 0;
	if (r == -EEXIST && !ctx->fresh) {
		r = entry_holds(at.dirfd, at.base, fid);
		if (r == HOLDS_FID) {
			r = APPLY_SKIPPED;
			goto out;
		}
		if (r == HOLDS_NO_FID)
			r = adopt_object(ev, target, at.dirfd, at.base, &fd);
		else if (r == HOLDS_OTHER || r == -ENOENT)
			r = -EEXIST;
		if (r < 0) {
			*why = "name taken by another object";
			goto out;
		}
	} else if (r < 0) {
		*why = "create";
		goto out;
	}
	if (made)
		skip = made_right(s, ctx->cache, ev, at.dirfd);
	/*
	 * Deferred only in the cache's directory, whose stamp, which tells
	 * replay the creation is done, is then deferred too and written after
	 * the fid.
	 */
	if (cache_keeps_file(ctx->cache, ev, ctx) && at.dirfd == ctx->cache->dirfd)
		skip |= FINISH_IDS;
	r = finish_object(ev, fd, fid, skip, why);
	if (r < 0)
		goto out;
	stamp_dir_cached(ctx->cache, at.dirfd, ev);
	if (ev->type == EV_CREATE && ctx->want_fd) {
		ctx->out_fd = fd;
		fd = -1;
	} else if (cache_keeps_file(ctx->cache, ev, ctx)) {
		cache_keep_file(ctx->cache, ev, fid, skip & FINISH_IDS, &fd);
	}
out:
	if (r < 0 && made)
		unlinkat(at.dirfd, at.base, ev->type == EV_MKDIR ? AT_REMOVEDIR : 0);
	if (fd >= 0)
		close(fd);
	path_at_release(&at);
	return r;
}

static int apply_remove(struct store *s, const struct event *ev, struct apply_ctx *ctx,
			const char **why)
{
	struct path_at at = {.dirfd = -1};
	int r;

	if (path_is_root(ev->path)) {
		*why = "cannot remove the root";
		return -EBUSY;
	}
	r = path_at_open(s->root, ev->path, &at);
	if (r == -ENOENT && !ctx->fresh) {
		/* A later event removed the parent, and with it this entry. */
		r = APPLY_SKIPPED;
		goto out;
	}
	if (r < 0) {
		*why = "resolve parent";
		goto out;
	}
	if (!ctx->fresh) {
		r = entry_holds(at.dirfd, at.base, ev->fid);
		if (r == -ENOENT || dir_says_applied(at.dirfd, ev)) {
			r = APPLY_SKIPPED;
			goto out;
		}
		if (r < 0)
			goto out;
		if (r != HOLDS_FID) {
			*why = "name holds another object";
			r = -ESTALE;
			goto out;
		}
	}
	r = 0;
	if (unlinkat(at.dirfd, at.base, ev->type == EV_RMDIR ? AT_REMOVEDIR : 0) < 0) {
		r = -errno;
		*why = ev->type == EV_RMDIR ? "rmdir" : "unlink";
	} else {
		stamp_dir(at.dirfd, ev);
	}
out:
	path_at_release(&at);
	return r;
}

/*
 * Open the parents of a two-name event.  On replay, a source parent that a
 * later event removed is not an error yet: the target side may show the
 * event applied (from->dirfd is then -1).
 */
static int open_two(struct store *s, const struct event *ev, struct apply_ctx *ctx,
		    struct path_at *from, struct path_at *to)
{
	int r = path_at_open(s->root, ev->path2, to);

	if (r < 0)
		return r;
	r = path_at_open(s->root, ev->path, from);
	if (r == -ENOENT && !ctx->fresh) {
		from->dirfd = -1;
		return 0;
	}
	return r;
}

static int apply_link(struct store *s, const struct event *ev, struct apply_ctx *ctx,
		      const char **why)
{
	struct path_at from = {.dirfd = -1}, to = {.dirfd = -1};
	int r;

	r = open_two(s, ev, ctx, &from, &to);
	if (r == -ENOENT && !ctx->fresh && ancestor_says_applied(s, ev->path2, ev)) {
		r = APPLY_SKIPPED;
		goto out;
	}
	if (r < 0) {
		*why = "resolve parent";
		goto out;
	}
	if (!ctx->fresh) {
		r = entry_holds(to.dirfd, to.base, ev->fid);
		if (r == HOLDS_FID || dir_says_applied(to.dirfd, ev)) {
			r = APPLY_SKIPPED;
			goto out;
		}
		if (r >= 0) {
			*why = "new name taken";
			r = -EEXIST;
			goto out;
		}
		if (r != -ENOENT)
			goto out;
		r = from.dirfd < 0 ? -ENOENT : entry_holds(from.dirfd, from.base, ev->fid);
		if (r != HOLDS_FID) {
			*why = "link source does not hold the fid";
			r = r < 0 ? r : -ESTALE;
			goto out;
		}
	}
	r = 0;
	if (linkat(from.dirfd, from.base, to.dirfd, to.base, 0) < 0) {
		r = -errno;
		*why = "link";
	} else {
		stamp_dir(to.dirfd, ev);
	}
out:
	path_at_release(&to);
	path_at_release(&from);
	return r;
}

/*
 * Replay check for a rename: APPLY_SKIPPED if the names already show its
 * result, 0 if they show the state it expects, -ESTALE/-EEXIST otherwise.
 */
static int rename_state(const struct event *ev, struct path_at *from, struct path_at *to,
			const char **why)
{
	int exchange = (ev->op_flags & RENAME_EXCHANGE) != 0;
	int src = from->dirfd < 0 ? -ENOENT : entry_holds(from->dirfd, from->base, ev->fid);
	int dst = entry_holds(to->dirfd, to->base, ev->fid);
	int dst2;

	if (dir_says_applied(to->dirfd, ev) ||
	    (from->dirfd >= 0 && dir_says_applied(from->dirfd, ev)))
		return APPLY_SKIPPED;

	if (src < 0 && src != -ENOENT)
		return src;
	if (dst < 0 && dst != -ENOENT)
		return dst;
	if (src != HOLDS_FID && dst == HOLDS_FID) {
		if (!exchange)
			return APPLY_SKIPPED;
		if (from->dirfd >= 0 && entry_holds(from->dirfd, from->base, ev->fid2) == HOLDS_FID)
			return APPLY_SKIPPED;
	}
	if (src != HOLDS_FID) {
		*why = "rename source does not hold the fid";
		return -ESTALE;
	}
	if (fid_is_zero(ev->fid2)) {
		if (dst != -ENOENT) {
			*why = "rename target appeared";
			return -EEXIST;
		}
		return 0;
	}
	dst2 = entry_holds(to->dirfd, to->base, ev->fid2);
	if (dst2 != HOLDS_FID) {
		*why = "rename target does not hold the expected fid";
		return dst2 < 0 && dst2 != -ENOENT ? dst2 : -ESTALE;
	}
	return 0;
}

static int apply_rename(struct store *s, const struct event *ev, struct apply_ctx *ctx,
			const char **why)
{
	struct path_at from = {.dirfd = -1}, to = {.dirfd = -1};
	int r;

	if (path_is_root(ev->path) || path_is_root(ev->path2)) {
		*why = "cannot rename the root";
		return -EBUSY;
	}
	r = open_two(s, ev, ctx, &from, &to);
	if (r == -ENOENT && !ctx->fresh && ancestor_says_applied(s, ev->path2, ev)) {
		r = APPLY_SKIPPED;
		goto out;
	}
	if (r < 0) {
		*why = "resolve parent";
		goto out;
	}
	if (!ctx->fresh) {
		r = rename_state(ev, &from, &to, why);
		if (r != 0)
			goto out;
	}
	if (renameat2(from.dirfd, from.base, to.dirfd, to.base, ev->op_flags) < 0) {
		r = -errno;
		*why = "rename";
	} else {
		stamp_dir(from.dirfd, ev);
		stamp_dir(to.dirfd, ev);
	}
out:
	path_at_release(&to);
	path_at_release(&from);
	return r;
}

/* An O_PATH descriptor of the object at rel, its parent resolved through the cache. */
static int open_object(struct store *s, struct apply_cache *c, const char *rel, int *fd)
{
	struct path_at at = {.dirfd = -1};
	int r;

	if (!c || path_is_root(rel))
		return path_open(s->root, rel, O_PATH, 0, fd);
	r = cache_at_open(s, c, rel, &at);
	if (r == 0)
		r = open_entry(at.dirfd, at.base, fd);
	path_at_release(&at);
	return r;
}

/*
 * The descriptor an attribute or data event works on: the caller's open
 * file, or the object at ev->path (read-write for data events, O_PATH
 * otherwise).  *fd is -1 and APPLY_SKIPPED returned for an event about a
 * file unlinked while open: on replay that file is gone with its data.
 */
static int target_fd(struct store *s, const struct event *ev, struct apply_ctx *ctx, int *fd,
		     int *owned)
{
	struct apply_cache *c = ctx->cache;
	char proc[PATH_PROCFD_LEN];
	struct stat st;
	int opath = -1, r;

	*owned = 0;
	if (ctx->fd >= 0) {
		*fd = ctx->fd;
		return 0;
	}
	if (!ev->path)
		return APPLY_SKIPPED;
	if (c && c->fd >= 0 && strcmp(c->obj, ev->path) == 0) {
		*fd = c->fd;
		return 0;
	}
	r = open_object(s, c, ev->path, &opath);
	if (r < 0 || !event_type_is(ev->type, EVENT_T_CONTENT)) {
		*fd = opath;
		*owned = r == 0;
		return r;
	}
	/*
	 * Data goes to regular files only: opening a device node or a fifo
	 * for writing would reach a device or block the engine.
	 */
	if (fstat(opath, &st) < 0) {
		r = -errno;
	} else if (!S_ISREG(st.st_mode)) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	} else {
		r = open(path_procfd(opath, proc), O_WRONLY | O_CLOEXEC);
		r = r < 0 ? -errno : r;
	}
	close(opath);
	if (r < 0)
		return r;
	*fd = r;
	*owned = 1;
	return 0;
}

/*
 * Make the change ev describes on the object at fd.  With defer (the
 * cache holding fd), the times it sets are left to apply_cache_flush().
 */
static int apply_change(struct store *s, const struct event *ev, int fd, struct apply_cache *defer,
			const char **why)
{
	int r = 0;

	switch (ev->type) {
	case EV_WRITE:
	case EV_TRUNCATE:
	case EV_FALLOCATE:
		*why = event_type_name(ev->type);
		r = store_data_change(fd, ev);
		if (r == 0)
			r = set_mtime(fd, ev, defer);
		break;
	case EV_CHMOD:
		*why = "chmod";
		r = path_fchmod(fd, ev->mode);
		break;
	case EV_CHOWN: {
		struct stat st;

		*why = "chown";
		r = chown_fd(fd, ev->uid, ev->gid);
		if (r == 0 && fstat(fd, &st) < 0)
			r = -errno;
		if (r == 0 && !S_ISLNK(st.st_mode) && (st.st_mode & 07777) != (ev->mode & 07777))
			r = path_fchmod(fd, ev->mode);
		break;
	}
	case EV_UTIMENS: {
		struct timespec ts[2] = {
		    {.tv_sec = ev->atime_sec, .tv_nsec = ev->atime_nsec},
		    {.tv_sec = ev->mtime_sec, .tv_nsec = ev->mtime_nsec},
		};

		*why = "utimens";
		r = set_times(fd, ts, defer);
		break;
	}
	case EV_SETXATTR: {
		char proc[PATH_PROCFD_LEN];

		*why = "setxattr";
		if (setxattr(path_procfd(fd, proc), ev->name, ev->data, ev->data_len,
			     (int)ev->op_flags) < 0)
			r = -errno;
		xattrs_changed(s);
		break;
	}
	case EV_REMOVEXATTR: {
		char proc[PATH_PROCFD_LEN];

		*why = "removexattr";
		if (removexattr(path_procfd(fd, proc), ev->name) < 0)
			r = -errno;
		xattrs_changed(s);
		break;
	}
	default:
		*why = "unknown event type";
		r = -EINVAL;
	}
	return r;
}

static int apply_existing(struct store *s, const struct event *ev, struct apply_ctx *ctx,
			  const char **why)
{
	struct apply_cache *defer = NULL;
	struct fid fid;
	struct evid ver;
	int fd = -1, owned = 0, cached, r;

	if ((ev->type == EV_SETXATTR || ev->type == EV_REMOVEXATTR) &&
	    xattr_is_ledgerfs(ev->name, strlen(ev->name))) {
		*why = "xattr name reserved for ledgerfs";
		return -EPERM;
	}
	r = target_fd(s, ev, ctx, &fd, &owned);
	if (r == -ENOENT && !ctx->fresh && ancestor_says_applied(s, ev->path, ev))
		r = APPLY_SKIPPED;
	if (r != 0) {
		*why = "open target";
		goto out;
	}
	cached = ctx->cache && ctx->cache->ids && fd == ctx->cache->fd;
	if (cached) {
		fid = ctx->cache->fid;
		ver = ctx->cache->ver;
	}
	if (!ctx->fresh) {
		r = cached ? 0 : store_get_ids(fd, &fid, &ver);
		if (r < 0) {
			*why = "read fid";
			goto out;
		}
		if (!fid_eq(fid, ev->fid) && ancestor_says_applied(s, ev->path, ev)) {
			r = APPLY_SKIPPED;
			goto out;
		}
		if (!fid_eq(fid, ev->fid)) {
			*why = "target does not hold the fid";
			r = -ESTALE;
			goto out;
		}
		/*
		 * A version from this origin at or after the event means the
		 * event, and maybe later ones, already changed the object.
		 */
		if (ver.origin == ev->origin && ver.seq >= ev->seq) {
			r = APPLY_SKIPPED;
			goto out;
		}
		if ((ev->base.origin || ev->base.seq) &&
		    (ver.origin != ev->base.origin || ver.seq != ev->base.seq)) {
			*why = "base version mismatch";
			r = -ESTALE;
			goto out;
		}
	}
	/* Re-applied in order from a later state, these end in the same state. */
	if (cached && (ev->type == EV_WRITE || ev->type == EV_TRUNCATE || ev->type == EV_UTIMENS ||
		       ev->type == EV_CHMOD || ev->type == EV_CHOWN))
		defer = ctx->cache;
	/* Any other change must not be redone, so its version is written now, after the times. */
	if (cached && !defer) {
		r = flush_file(ctx->cache);
		if (r < 0) {
			*why = "set deferred times and version";
			goto out;
		}
	}
	r = apply_change(s, ev, fd, defer, why);
	if (r == 0 && !defer) {
		r = set_ver(fd, ev);
		if (r < 0)
			*why = "set version";
	}
	if (r == 0 && cached) {
		ctx->cache->ver = (struct evid){ev->origin, ev->seq};
		ctx->cache->ver_dirty = defer != NULL;
	}
out:
	if (owned && fd >= 0)
		close(fd);
	return r;
}

/*
 * Ready cache c for ev: empty it if a name may move or someone else changed
 * the store, and write what it deferred for objects ev may reach another
 * way.  0, or a negative errno from the deferred writes.
 */
static int cache_before(struct store *s, struct apply_cache *c, const struct event *ev)
{
	int on_obj, r = 0;

	if (c->changes != __atomic_load_n(&s->changes, __ATOMIC_RELAXED) || ev->type == EV_UNLINK || ev->type == EV_RMDIR ||
	    ev->type == EV_RENAME) {
		r = apply_cache_flush(c);
		apply_cache_release(c);
		return r;
	}
	/*
	 * Another name of the file (a hard link) would change its version
	 * behind the cache: only events on obj itself keep what it knows.
	 */
	on_obj = c->fd >= 0 && ev->path && strcmp(ev->path, c->obj) == 0 && ev->type != EV_LINK &&
		 !event_type_is(ev->type, EVENT_T_CREATES);
	if (!on_obj) {
		if (c->fd >= 0)
			r = flush_file(c);
		c->ids = 0;
	}
	/* Creates stamp the directory through the cache; others may stamp it directly. */
	if (!on_obj && !event_type_is(ev->type, EVENT_T_CREATES) && c->dirfd >= 0)
		flush_dir(c);
	return r;
}

uint64_t store_moves(struct store *s)
{
	return __atomic_load_n(&s->moves, __ATOMIC_SEQ_CST);
}

uint64_t store_xattrs(struct store *s)
{
	return __atomic_load_n(&s->xattr_changes, __ATOMIC_SEQ_CST);
}

uint64_t store_names(struct store *s)
{
	return __atomic_load_n(&s->name_changes, __ATOMIC_SEQ_CST);
}

void store_replaced(struct store *s)
{
	__atomic_add_fetch(&s->name_changes, 1, __ATOMIC_SEQ_CST);
	xattrs_changed(s);
}

int apply_event(struct store *s, const struct event *ev, struct apply_ctx *ctx, const char **why)
{
	struct apply_cache *c;
	const char *dummy;
	int r;

	if (!why)
		why = &dummy;
	*why = NULL;
	ctx->out_fd = -1;
	if (!event_type_mutates(ev->type))
		return 0;
	if (ev->type == EV_RENAME || ev->type == EV_LINK)
		__atomic_add_fetch(&s->moves, 1, __ATOMIC_SEQ_CST);
	if (ev->type == EV_RENAME || ev->type == EV_UNLINK || ev->type == EV_RMDIR)
		__atomic_add_fetch(&s->name_changes, 1, __ATOMIC_SEQ_CST);
	if (ev->path && (r = path_check(ev->path, why)) < 0)
		return r;
	if (ev->path2 && (r = path_check(ev->path2, why)) < 0)
		return r;
	c = ctx->cache;
	if (c) {
		r = cache_before(s, c, ev);
		if (r < 0) {
			*why = "set deferred times and version";
			apply_cache_release(c);
			return r;
		}
	}
	__atomic_add_fetch(&s->changes, 1, __ATOMIC_RELAXED);
	switch (ev->type) {
	case EV_CREATE:
	case EV_MKNOD:
	case EV_MKDIR:
	case EV_SYMLINK:
		if (path_is_root(ev->path)) {
			*why = "cannot create the root";
			r = -EEXIST;
		} else {
			r = apply_new(s, ev, ctx, why);
		}
		break;
	case EV_UNLINK:
	case EV_RMDIR:
		r = apply_remove(s, ev, ctx, why);
		break;
	case EV_LINK:
		r = apply_link(s, ev, ctx, why);
		break;
	case EV_RENAME:
		r = apply_rename(s, ev, ctx, why);
		break;
	default:
		r = apply_existing(s, ev, ctx, why);
	}
	if (c && r < 0)
		apply_cache_release(c);
	if (c)
		c->changes = __atomic_load_n(&s->changes, __ATOMIC_RELAXED);
	return r;
}
