/*
 * inodes.h - the table of store objects the kernel currently knows.
 *
 * FUSE's low-level protocol names objects by inode numbers we hand out and
 * counts lookups on them.  We use the store's own inode number (as libfuse's
 * passthrough_ll does), so every hard link of a file is one kernel inode and
 * shares one page cache, and keep an O_PATH descriptor per object: it
 * follows the object through renames, which is how an event learns the
 * object's current path (path_of_inode()).
 *
 * /proc/self/fd tells that path only while the store root's absolute path
 * and it fit in PATH_MAX together.  Deeper, a directory's path is found by
 * climbing ".." and naming each directory by its inode number in its
 * parent; a file, whose parent the kernel does not give, keeps the last
 * directory and name it was looked up or renamed through, checked before use.
 */
#ifndef LEDGERFS_INODES_H
#define LEDGERFS_INODES_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "journal/event.h"
#include "store/store.h"

struct lfs_inode {
	struct lfs_inode *next; /* hash chain; guarded by the table lock */
	ino_t ino;
	dev_t dev;
	int fd;		  /* O_PATH descriptor of the object in the store */
	uint64_t nlookup; /* guarded by the table lock */
	/*
	 * Held by a data write from before it reads the version until its
	 * apply ends (node_write_lock() in node.h): one object's writes
	 * apply in journal order while other objects' run beside them.
	 */
	pthread_mutex_t wlock;
	/*
	 * The object's fid, read once (ids_cached), and its version as last
	 * read from the store, which every event reads afresh; guarded by the
	 * node lock.
	 */
	int ids_cached;
	struct fid fid;
	struct evid ver;
	/*
	 * 1 + store_xattrs() as it was before a read found no
	 * security.capability here, or 0: the kernel asks for it before every
	 * write(2), and while the count stays the same the answer stands.
	 * Read and written atomically.
	 */
	uint64_t nocap;
	/*
	 * The path path_of_inode() last found, while store_names() was
	 * path_gen, or NULL.  Guarded by the node lock.
	 */
	char *path;
	uint64_t path_gen;
	/*
	 * A non-directory's last known name: the directory (pdev, pino) and
	 * name it was looked up or renamed through; name is NULL when none is
	 * known.  Guarded by the table lock.
	 */
	dev_t pdev;
	ino_t pino;
	char *name;
};

struct inode_table {
	pthread_mutex_t lock;
	struct lfs_inode **buckets; /* guarded by lock */
	size_t nbuckets;	    /* guarded by lock */
	size_t count;		    /* guarded by lock */
	struct lfs_inode root;	    /* never freed; fd is the store root */
	char *root_path;	    /* the store root as /proc/self/fd shows it, or NULL */
	size_t root_len;
	struct store *store;	    /* borrowed: its root, and store_names() */
};

/*
 * Set up the table around the store's root (borrowed: the table does not
 * close it).  0 or a negative errno.
 */
int inodes_init(struct inode_table *t, struct store *store);
void inodes_destroy(struct inode_table *t);

/* The object for a FUSE inode number (1 is the root). */
struct lfs_inode *inodes_get(struct inode_table *t, uint64_t nodeid);

/* The FUSE inode number of an object. */
uint64_t inodes_nodeid(struct inode_table *t, struct lfs_inode *in);

/*
 * Find the object open at fd (with stat st), found as name in directory
 * parent, or add it, and count one lookup.  Takes ownership of fd: it is
 * either kept or closed.
 */
int inodes_lookup_fd(struct inode_table *t, struct lfs_inode *parent, const char *name, int fd,
		     const struct stat *st, struct lfs_inode **out);

/*
 * The object now at name in directory dir was renamed there: remember that
 * name for it, if it is known.  Call with the node lock held.
 */
void inodes_moved(struct inode_table *t, struct lfs_inode *dir, const char *name);

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
 * The store-relative path of object in ("." for the root) into *out,
 * malloc'd: the caller frees it.  -ENOENT when the object has no name any
 * more (a file unlinked while open), -ENAMETOOLONG past PATH_REL_MAX.  When
 * the name in's descriptor was opened through is gone but the object has
 * other links, one is found and the descriptor is pointed at it.  Call with
 * the node lock held, so that no name moves meanwhile.
 */
int path_of_inode(struct inode_table *t, struct lfs_inode *in, char **out);

/*
 * path_of_inode() of dir joined with name, malloc'd into *out;
 * -ENAMETOOLONG past PATH_REL_MAX or NAME_MAX.
 */
int path_of_child(struct inode_table *t, struct lfs_inode *dir, const char *name, char **out);

#endif
