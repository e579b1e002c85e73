/*
 * snapshot.h - the store side of a snapshot resync: reading an entry to
 * send, staging what a peer sent, and the install plan that switches it in.
 *
 * A node that is missing events its peers already trimmed (or a new node)
 * compares its store with a peer's by hash tree (merkle.h) and receives
 * only the entries that differ.  Nothing of the live store changes while
 * they arrive: each received entry is staged whole under NODE_DIR/snap/,
 * and only when every entry is there does the install move them in, in
 * the order of a plan written beforehand.  The install is idempotent, so a
 * crash in the middle of it is repaired by running it again from the plan
 * before the store is used; a crash before it leaves the store as it was,
 * and the staged entries are reused by the next attempt instead of being
 * sent again (they are named by the sender's digest of the entry).
 *
 * NODE_DIR/snap/ layout:
 *   obj/<64 hex>   a received non-directory entry, complete: contents (regular
 *                  file), target (symlink), device number, mode, owner, xattrs
 *                  (fid and version included) and, for a regular file, mtime;
 *                  named by the sender's merkle digest of the entry.  Written
 *                  as obj/tmp.<anything> and renamed once whole and on disk
 *                  (a batch at a time: snap_stage_flush()).
 *   plan           the install plan (below), written whole: tmp, fsync, rename.
 *
 * Xattr blob: what replication carries of an entry's xattrs, every xattr
 * but the node's own trusted.ledgerfs.* ones (the fid and version xattrs
 * ARE carried), names sorted byte-wise, little-endian:
 *   u16 count, count x { u8 name_len (1..255), name, u32 value_len, value }
 *
 * Plan file, little-endian:
 *   u32 magic "LFSP", u16 version 1, u32 count,
 *   count x step { u8 op, u16 path_len, path, then per op:
 *     DELETE: u8[16] fid (origin, counter LE) of what is deleted, all zero = any
 *     DIR:    u32 mode, u32 uid, u32 gid, u32 xattrs_len, xattr blob
 *     OBJ:    u8[32] digest
 *     LINK:   u16 len, store path of the entry to link to }
 *   u32 CRC32C of everything before it
 */
#ifndef LEDGERFS_SNAPSHOT_H
#define LEDGERFS_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "journal/event.h"

#define SNAP_DIR	"snap"
#define SNAP_DIGEST_LEN 32

/* An entry's metadata as a resync carries it. */
struct snap_meta {
	uint32_t mode; /* st_mode: type and permission bits */
	uint32_t uid, gid;
	uint64_t size; /* regular file: st_size; symlink: target length; else 0 */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t rdev;	 /* character and block devices */
	struct fid fid;	 /* from the fid xattr; zero if it has none */
	struct evid ver; /* from the version xattr; zero if it has none */
	char *target;	 /* symlink target, NUL-terminated; NULL otherwise */
	uint8_t *xattrs; /* xattr blob, see above; NULL when xattrs_len is 0 */
	size_t xattrs_len;
};

/*
 * A mode a peer may send for an entry: one known file type and no bits
 * beyond 07777.  Shared by the hash-tree listings and the snapshot frames.
 */
static inline int snap_mode_valid(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
	case S_IFLNK:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		return (mode & ~(uint32_t)(S_IFMT | 07777)) == 0;
	default:
		return 0;
	}
}

/* Frees target and xattrs and zeroes *m.  Safe on a zeroed meta. */
void snap_meta_free(struct snap_meta *m);

/*
 * *dst becomes a copy of *src with its own target and xattrs (the caller
 * frees them with snap_meta_free(), also after -ENOMEM).  0 or -ENOMEM.
 */
int snap_meta_copy(struct snap_meta *dst, const struct snap_meta *src);

/*
 * Read the xattrs of fd into a blob.  opath: fd is an O_PATH descriptor
 * (reached through /proc/self/fd).  0 with *blob (malloc'd, caller frees;
 * NULL when there are none) and *len, or a negative errno.
 */
int snap_xattrs_read(int fd, int opath, uint8_t **blob, size_t *len);

/*
 * Check a blob received from a peer: structure, lengths, sorted names, no
 * NUL in a name, no node-own trusted.ledgerfs.* name.  0, or -EBADMSG with
 * *why naming the problem.  Also fills *fid and *ver (either may be NULL)
 * from the fid and version xattrs it carries, zero when absent.
 */
int snap_xattrs_check(const uint8_t *blob, size_t len, struct fid *fid, struct evid *ver,
		      const char **why);

/*
 * Read the entry at path (a store path as path_check() accepts; "." is the
 * root) beneath root_fd, for sending.  The xattrs are read before the
 * contents can be, so the contents reflect at least the version they
 * carry.  Symlinks are not followed.  0 with *m filled (snap_meta_free())
 * and, for a regular file, *fd a read-only descriptor for its contents
 * (the caller closes it; -1 for other types); or a negative errno:
 * -ENOENT when the path is gone, -EINVAL for a bad path.
 */
int snap_read_entry(int root_fd, const char *path, struct snap_meta *m, int *fd);

/* The staging area NODE_DIR/snap/ of a resync in progress. */
struct snap_stage;

/*
 * Open the staging area of node_dir, making it if needed, and delete
 * leftover obj/tmp.* files of an interrupted attempt.  0 with *out
 * (snap_stage_close()), or a negative errno.
 */
int snap_stage_open(const char *node_dir, struct snap_stage **out);
void snap_stage_close(struct snap_stage *s);

/* 1 if the object of digest is staged, 0 if not, or a negative errno. */
int snap_stage_has(struct snap_stage *s, const uint8_t digest[SNAP_DIGEST_LEN]);

/* Bytes staged so far in obj/ (for progress), 0 on error. */
uint64_t snap_stage_bytes(struct snap_stage *s);

/*
 * Bytes free for an unprivileged user on the filesystem of obj/
 * (statvfs), into *bytes.  0 or a negative errno.
 */
int snap_stage_room(struct snap_stage *s, uint64_t *bytes);

/* A non-directory entry being received. */
struct snap_obj;

/*
 * Start staging the object of digest with metadata m (copied; checked:
 * type not a directory, xattr blob valid, symlink target present and
 * without NUL for a symlink).  A regular file's contents then come through
 * snap_obj_write().  0 with *out, or a negative errno with *why set.
 */
int snap_obj_begin(struct snap_stage *s, const uint8_t digest[SNAP_DIGEST_LEN],
		   const struct snap_meta *m, struct snap_obj **out, const char **why);

/* Write contents at off; -EINVAL (with *why) if it would go past m->size. */
int snap_obj_write(struct snap_obj *o, uint64_t off, const void *buf, size_t len, const char **why);

/*
 * Finish: the file gets exactly m->size bytes (holes where nothing was
 * written), then owner, mode, xattrs and mtime.  It keeps its temporary
 * name until snap_stage_flush() (or snap_plan_save()) has made it durable
 * and renamed it to obj/<hex>; snap_stage_has() does not see it before.
 * Frees o whatever happens.  0 or a negative errno with *why.
 */
int snap_obj_commit(struct snap_obj *o, const char **why);

/*
 * One syncfs() for every object committed since the last flush, then their
 * renames to obj/<hex>: an object under its final name is whole on disk.
 * snap_obj_commit() and this may run on several threads at once.  0 or a
 * negative errno.
 */
int snap_stage_flush(struct snap_stage *s);

/* Objects committed and not yet flushed. */
size_t snap_stage_pending(struct snap_stage *s);

/* Drop an unfinished object and its temporary file; NULL is fine. */
void snap_obj_abort(struct snap_obj *o);

enum snap_op {
	SNAP_OP_DELETE = 1, /* remove path and everything beneath it, if it holds fid */
	SNAP_OP_DIR = 2,    /* make path a directory with this mode, owner and xattrs */
	SNAP_OP_OBJ = 3,    /* move the staged object digest to path, replacing what is there */
	SNAP_OP_LINK = 4,   /* make path a hard link of link_to */
};

struct snap_step {
	uint8_t op;		 /* enum snap_op */
	char *path;		 /* store path */
	struct fid fid;		 /* DELETE: what path must hold to be deleted; zero = anything */
	uint32_t mode, uid, gid; /* DIR */
	uint8_t *xattrs;	 /* DIR: xattr blob */
	size_t xattrs_len;	 /* DIR */
	uint8_t digest[SNAP_DIGEST_LEN]; /* OBJ */
	char *link_to;			 /* LINK: store path */
};

/* Steps in install order; start from a zeroed struct. */
struct snap_plan {
	struct snap_step *v;
	size_t n, cap;
};

/* Append a copy of *step (its strings and blob copied).  0, -ENOMEM, -EINVAL for a bad path. */
int snap_plan_add(struct snap_plan *p, const struct snap_step *step);

/* Free every step; *p is zeroed. */
void snap_plan_free(struct snap_plan *p);

/* Write the plan to snap/plan durably (tmp, fsync, rename, directory fsync). */
int snap_plan_save(struct snap_stage *s, const struct snap_plan *p);

/*
 * Read snap/plan of node_dir into *p (zeroed first; snap_plan_free()).
 * -ENOENT when there is none, -EBADMSG (with *why) for a damaged one: bad
 * magic, version, CRC, lengths, paths that path_check() refuses.
 */
int snap_plan_load(const char *node_dir, struct snap_plan *p, const char **why);

/*
 * Carry out the plan in the store whose root is root_fd, in order.  Every
 * step is idempotent and a step already done is recognised: DELETE only
 * removes what still holds its fid, OBJ finds its object gone once moved,
 * DIR and LINK compare before changing.  So after a crash mid-install,
 * running it again from the same plan finishes it.  touched, when not
 * NULL, is called with each path that changed (for kernel cache
 * invalidation).  Ends with syncfs() of the store.  0, or a negative errno
 * with *why and *path_out (the step's path, valid while p is) naming the
 * step that failed.
 */
int snap_install(const char *node_dir, int root_fd, const struct snap_plan *p,
		 void (*touched)(void *arg, const char *path), void *arg, const char **why,
		 const char **path_out);

/* Remove NODE_DIR/snap/ and everything in it; 0 if it was not there. */
int snap_stage_remove(const char *node_dir);

#endif
