/*
 * fuse_ops.h - the FUSE low-level operations of a mounted node.
 *
 * Reads go straight to the store through per-object O_PATH descriptors;
 * every mutation becomes one event that is journaled and then applied under
 * the node lock (node_commit_locked()).
 */
#ifndef LEDGERFS_FUSE_OPS_H
#define LEDGERFS_FUSE_OPS_H

#include <fuse_lowlevel.h>

#include "fuse/inodes.h"
#include "node/node.h"

/*
 * Seconds the kernel may cache names and attributes by default.  Only this
 * node changes its store, through the mount, so nothing goes stale; a
 * replica that applies remote events invalidates what they touch.
 */
#define LFS_CACHE_TIMEOUT 86400.0

/* What the operations share; passed as userdata to fuse_session_new(). */
struct lfs_fs {
	struct node *node;
	struct fuse_session *se;  /* for cache invalidation; set once mounted */
	struct inode_table inodes;
	double entry_timeout;	  /* seconds the kernel may cache names */
	double attr_timeout;	  /* seconds the kernel may cache attributes */
	uint64_t space_margin;	  /* guarded by node->lock: bytes writable before statvfs again */
	uint64_t space_since;	  /* guarded by node->lock: bytes committed since then */
	char readahead_knob[128]; /* sysfs read_ahead_kb of the mount, or empty */
	int readahead_set;	  /* atomic: the knob was written */
	int writeback;		  /* set once in init: the kernel's writeback cache is on */
};

/* Set up fs around an open node.  0 or a negative errno. */
int lfs_fs_init(struct lfs_fs *fs, struct node *node);
void lfs_fs_destroy(struct lfs_fs *fs);

const struct fuse_lowlevel_ops *lfs_fuse_operations(void);

#endif
