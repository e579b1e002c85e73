/*
 * inodes.h - the table of store objects the kernel currently knows.
 *
 * FUSE's low-level protocol names objects by inode numbers we hand out and
 * counts lookups on them.  We use the store's own inode number (as libfuse's
 * passthrough_ll does), so every hard link of a file is one kernel inode and
 * shares one page cache, and keep an O_PATH descriptor per object: it
 * follows the object through renames, which is how an event learns the
 * object's current path (path_of_fd()).
 */
#ifndef LEDGERFS_INODES_H
#define LEDGERFS_INODES_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "ledgerfs/event.h"

struct lfs_inode {
	struct lfs_inode *next; /* hash chain; guarded by the table lock */
	ino_t ino;
	dev_t dev;
	int fd;		  /* O_PATH descriptor of the object in the store */
	uint64_t nlookup; /* guarded by the table lock */
	/*
	 * The object's fid, read once (ids_cached), and its version as last
	 * read from the store, which every event reads afresh; guarded by the
	 * node lock.
	 */
	int ids_cached;
	struct fid fid;
	struct evid ver;
};

struct inode_table {
	pthread_mutex_t lock;
	struct lfs_inode **buckets; /* guarded by lock */
	size_t nbuckets;	    /* guarded by lock */
	size_t count;		    /* guarded by lock */
	struct lfs_inode root;	    /* never freed; fd is the store root */
	char *root_path;	    /* the store root as /proc/self/fd shows it */
	size_t root_len;
};

/*
 * Set up the table around the store root descriptor (borrowed: the table
 * does not close it).  0 or a negative errno.
 */
int inodes_init(struct inode_table *t, int root_fd);
void inodes_destroy(struct inode_table *t);

/* The object for a FUSE inode number (1 is the root). */
struct lfs_inode *inodes_get(struct inode_table *t, uint64_t nodeid);

/* The FUSE inode number of an object. */
uint64_t inodes_nodeid(struct inode_table *t, struct lfs_inode *in);

/*
 * Find the object open at fd (with stat st) or add it, and count one
 * lookup.  Takes ownership of fd: it is either kept or closed.
 */
int inodes_lookup_fd(struct inode_table *t, int fd, const struct stat *st, struct lfs_inode **out);

/*
 * For an object changed behind the kernel's back (a remote event): its
 * FUSE inode number in *nodeid if the kernel knows it, and its cached ids
 * dropped.  Call with the node lock held.  0, or -ENOENT if unknown.
 */
int inodes_touch(struct inode_table *t, const struct stat *st, uint64_t *nodeid);

/* Objects the kernel holds besides the root. */
size_t inodes_count(struct inode_table *t);

/* Drop n lookups; the object is freed when none remain. */
void inodes_forget(struct inode_table *t, uint64_t nodeid, uint64_t n);

/*
 * The store-relative path of the object whose O_PATH descriptor is fd (an
 * lfs_inode's), into buf (PATH_MAX): "." for the root.  -ENOENT when the
 * object has no name any more (a file unlinked while open), -ENAMETOOLONG
 * past PATH_MAX.  When the name fd was opened through is gone but the object
 * has other links, the store is searched for one and fd is pointed at it.
 */
int path_of_fd(struct inode_table *t, int fd, char *buf);

/* path_of_fd() of dir joined with name; -ENAMETOOLONG past PATH_MAX or NAME_MAX. */
int path_of_child(struct inode_table *t, struct lfs_inode *dir, const char *name, char *buf);

#endif
