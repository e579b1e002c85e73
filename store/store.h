/*
 * store.h - the backing directory and the one apply engine that changes it.
 *
 * Every change to the store goes through apply_event(): local writes from
 * the FUSE layer, events from peers, crash-tail replay, fsck and journal
 * rebuilds.  Each object in the store carries two xattrs:
 *   trusted.ledgerfs.fid  its fid (16 bytes: origin LE, counter LE); hard
 *                         links share it since they share the inode
 *   trusted.ledgerfs.ver  the (origin, seq) of the last event that changed it
 * and the root also carries trusted.ledgerfs.node, the cluster id, so that a
 * node never serves a directory that is not its store.  The trusted
 * namespace needs CAP_SYS_ADMIN: ledgerfs runs as root, as a filesystem
 * serving several users must.
 *
 * Fids: a new object's fid is (origin, seq of its creating event), unique
 * without a separate counter.  The root's fid is STORE_ROOT_FID everywhere.
 */
#ifndef LEDGERFS_STORE_H
#define LEDGERFS_STORE_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "journal/event.h"

#define STORE_XATTR_PREFIX "trusted.ledgerfs."
#define STORE_XATTR_FID	   "trusted.ledgerfs.fid"
#define STORE_XATTR_VER	   "trusted.ledgerfs.ver"
#define STORE_XATTR_NODE   "trusted.ledgerfs.node"

#define STORE_ROOT_FID ((struct fid){0, 1})

/* Returned by apply_event() when the store shows the event is already applied. */
#define APPLY_SKIPPED 1

struct store {
	int root;	  /* O_PATH descriptor of the store directory */
	uint64_t changes; /* apply_event() calls so far (atomic): tells a stale apply_cache */
	/*
	 * Renames and links begun so far, counted atomically before the store
	 * changes: a hash tree built without the node lock was walked while no
	 * object moved if store_moves() is the same before and after the walk.
	 */
	uint64_t moves;
	/*
	 * Changes of any object's xattrs so far, counted atomically after
	 * each one (store_xattrs_changed()): an absence of an xattr read
	 * while store_xattrs() stayed the same is still true.
	 */
	uint64_t xattr_changes;
	/*
	 * Changes that may take an existing object's path away (renames,
	 * unlinks, rmdirs, installs) so far, counted atomically: they are all
	 * made under the node lock, so a path found under it while
	 * store_names() stayed the same still holds.
	 */
	uint64_t name_changes;
	/* What a file this process makes gets, read when the store was opened. */
	int umask; /* -1 if unknown */
	uid_t uid;
	gid_t gid;
};

/* store->moves, without any lock. */
uint64_t store_moves(struct store *s);

/* store->xattr_changes and store->name_changes, without any lock. */
uint64_t store_xattrs(struct store *s);
uint64_t store_names(struct store *s);

/*
 * Count up both: whoever replaces objects of the store outside
 * apply_event() (a snapshot install) calls it after the change.
 */
void store_replaced(struct store *s);

/* Open the store directory.  *out is freed with store_close(). */
int store_open(const char *dir, struct store **out);
void store_close(struct store *s);

/* Mark dir as the store of cluster (root fid and cluster id). */
int store_stamp(struct store *s, const uint8_t cluster[16]);

/*
 * 0 if the store carries cluster's stamp, -ENODATA if it carries none
 * (an empty mount point, a fresh directory), -ESTALE if another cluster's.
 */
int store_check_stamp(struct store *s, const uint8_t cluster[16]);

/*
 * Read the fid and version of the object open at fd (any kind of
 * descriptor, O_PATH included).  ver may be NULL.  -ENODATA when the object
 * has no fid; a missing version reads as zero.
 */
int store_get_ids(int fd, struct fid *fid, struct evid *ver);

/* Read only the version of the object open at fd; a missing one reads as zero. */
int store_get_ver(int fd, struct evid *ver);

/*
 * Move the ctime of the object open at fd (any descriptor) and nothing
 * else, as ext4 does for a chmod, chown or utimes that changes nothing.
 */
int store_touch_ctime(int fd);

/* Set the fid xattr of the object open at fd. */
int store_set_fid(int fd, const struct fid *fid);

static inline int fid_eq(struct fid a, struct fid b)
{
	return a.origin == b.origin && a.counter == b.counter;
}

static inline int fid_is_zero(struct fid a)
{
	return a.origin == 0 && a.counter == 0;
}

/*
 * Descriptors apply_event() keeps from one event to the next while a caller
 * applies a run of events (a received frame), so that a create, its write
 * and its utimens resolve their path once: the parent directory of the
 * last path resolved, and the file the last EV_CREATE made.  A descriptor
 * stands for its path only while no name was removed or moved, so an
 * unlink, rmdir or rename empties the cache, and so does a failed event or
 * any apply_event() made without this cache in between (store->changes).
 * The fid and version of the file at obj are known without reading them
 * back while every event since its creation changed it through fd alone.
 *
 * Writes to the replay evidence are deferred while consecutive events go
 * through the cache: the version of the file at obj after writes,
 * truncates, utimens, chmods and chowns (re-applying those in order from
 * any later state ends in the same state, so a version that lags its
 * content only makes replay redo them), its mtime and atime after those
 * (the last one wins), and the version stamp of directory dir after
 * creates in it.  A file the cache's EV_CREATE makes gets its times,
 * version and fid deferred too: a file without a fid is one whose creation
 * did not complete, which replay adopts and finishes, so the flush writes
 * the fid last.  Any other event, a change of file or directory, and
 * apply_cache_flush() write them, times before versions, so that no
 * version ever names an event whose effect is not in the store.  A caller
 * flushes before it lets go of the node lock.
 */
struct apply_cache {
	uint64_t changes; /* store->changes after the last event applied through it */
	int dirfd;	  /* O_PATH descriptor of directory dir, -1 if none */
	int fd;		  /* read-write descriptor of the file created at obj, -1 if none */
	int ids;	  /* fid and ver hold what the file at obj carries */
	struct fid fid;
	struct evid ver;
	int ver_dirty;		  /* ver is not written to fd yet */
	int fid_dirty;		  /* fid is not written to fd yet: its creation is not complete */
	struct timespec times[2]; /* atime, mtime not set on fd yet; UTIME_OMIT if none */
	int dir_plain;		  /* dir_is_plain() of dir; -1 until asked */
	int dir_ver_ok;		  /* dir_ver holds directory dir's version */
	int stamp_dirty;	  /* dir_ver is not written to dirfd yet */
	struct evid dir_ver;
	char dir[PATH_MAX];
	char obj[PATH_MAX];
};

/* An empty cache. */
void apply_cache_init(struct apply_cache *c);

/*
 * Write what the cache deferred (see struct apply_cache).  0, or a negative
 * errno if the file's times or version could not be set; a directory stamp
 * that cannot be written only weakens replay evidence and is not an error.
 */
int apply_cache_flush(struct apply_cache *c);

/*
 * Write what the cache deferred, close what it holds and empty it.  A
 * caller that must know whether the write worked flushes first.
 */
void apply_cache_release(struct apply_cache *c);

struct apply_ctx {
	/*
	 * An open read-write descriptor of the file a data event concerns
	 * (write, truncate, fallocate, utimens, xattrs), used instead of the
	 * path; needed for files unlinked while open.  -1 when none.
	 */
	int fd;
	/*
	 * The event was just built under the node lock from the store's
	 * current state, so the already-applied checks can be skipped.
	 */
	int fresh;
	/*
	 * EV_CREATE only: when set, out_fd receives a read-write descriptor
	 * of the new file (the FUSE create handle).  Otherwise out_fd is -1.
	 */
	int want_fd;
	int out_fd;
	/* Descriptors kept across a run of events; NULL for none. */
	struct apply_cache *cache;
};

#define APPLY_CTX_INIT                                                                             \
	{                                                                                          \
		.fd = -1, .fresh = 0, .want_fd = 0, .out_fd = -1, .cache = NULL                    \
	}

/*
 * Apply ev to the store.  Returns 0 when applied, APPLY_SKIPPED when the
 * store shows it was applied before (replay after a crash), or a negative
 * errno, the store unchanged: -ESTALE when the store contradicts the event
 * (fid or base version mismatch), -EINVAL for a path that does not pass
 * path_check(), or what the kernel returned (-ENOSPC, -EEXIST, ...).
 * *why, when non-NULL, names the failing step.
 */
int apply_event(struct store *s, const struct event *ev, struct apply_ctx *ctx, const char **why);

/*
 * The data change alone of EV_WRITE, EV_TRUNCATE or EV_FALLOCATE ev on the
 * regular file open for writing at fd: no check, no times, no version
 * (apply_event() does those; node/checkpoint.c's redo wants none).  0 or a
 * negative errno; -EINVAL for another type.
 */
int store_data_change(int fd, const struct event *ev);

#endif
