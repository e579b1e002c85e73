/*
 * treewalk.h - walking a directory tree with one directory descriptor.
 *
 * A walk enters a subdirectory by opening its name relative to the
 * directory it is in, with O_NOFOLLOW, and closes the parent; it comes back
 * up through "..", and only after checking that ".." is the directory it
 * came down from (it is not when the subtree was moved meanwhile).  So
 * neither PATH_MAX nor the number of descriptors limits the depth, no
 * symlink below the root is followed, and the walk never leaves the tree.
 * What the walk remembers of the directories above is on the heap: no
 * recursion, however deep.
 *
 * Two ways to drive it: step by step with treewalk_down() and
 * treewalk_up(), the caller choosing where to go (removing a tree does);
 * or treewalk_run(), which visits every entry below, names sorted
 * byte-wise, a directory's entries right after the directory itself, and
 * calls back on the way.
 */
#ifndef LEDGERFS_TREEWALK_H
#define LEDGERFS_TREEWALK_H

#include <stddef.h>
#include <sys/stat.h>

#include "lib/relpath.h"

/* What treewalk_run() keeps of each directory from the root to where it is. */
struct treewalk_level;

/*
 * A walk.  Callers and callbacks read fd, depth, path and arg; the rest is
 * the walk's own.  Start from treewalk_open(), end with treewalk_close().
 */
struct treewalk {
	int fd;	      /* the directory the walk is in; -1 when none */
	size_t depth; /* how many directories below the root it is */
	/*
	 * treewalk_run(): the path, relative to where the run started, of the
	 * entry a callback is called for (of the directory, for enter and
	 * leave); length 0 there (relpath_str() shows it as ".").
	 */
	struct relpath path;
	void *arg; /* treewalk_run()'s, for the callbacks */

	struct treewalk_level *lv; /* lv[0] the root ... lv[depth] where the walk is */
	size_t lv_cap;
};

/* An entry callback's return that makes treewalk_run() walk into the directory. */
#define TREEWALK_DESCEND 1

/*
 * Callbacks of treewalk_run(); any may be NULL.  Each returns 0 to go on
 * or a negative errno, which ends the walk and is what treewalk_run()
 * returns.  dir is the caller's pointer for the directory concerned: the
 * root's is treewalk_run()'s, a subdirectory's what its entry callback
 * left in *sub.
 */
struct treewalk_ops {
	/*
	 * The walk has just entered a directory (the root first), before
	 * reading its names: fd is open on it, st its fstat().
	 */
	int (*enter)(struct treewalk *tw, int fd, const struct stat *st, void *dir);
	/*
	 * An entry of the directory open at dfd: its name, st from fstatat()
	 * without following a symlink, and index, its place among the count
	 * entries of the directory.  *sub starts as dir.  TREEWALK_DESCEND, for
	 * a directory only, walks into it before the next entry.
	 */
	int (*entry)(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		     size_t index, size_t count, void *dir, void **sub);
	/*
	 * All the entries of the directory open at fd are done; st is the
	 * fstat() enter was given.  The walk goes up afterwards.
	 */
	int (*leave)(struct treewalk *tw, int fd, const struct stat *st, void *dir);
	/*
	 * The walk itself failed, at tw->path: err is -errno of a stat, open
	 * or read, -ENOMEM, or -EAGAIN with why "moved while being read"
	 * (".." was not the directory the walk came down from); why is NULL
	 * otherwise.  Returns what the walk ends with.  NULL: err.
	 */
	int (*fail)(struct treewalk *tw, int err, const char *why);
};

/*
 * Start a walk at the directory name relative to dirfd (AT_FDCWD: the
 * working directory), opened with O_RDONLY | O_DIRECTORY | O_CLOEXEC and
 * flags (O_NOFOLLOW: not even name may be a symlink).  0 or -errno;
 * treewalk_close() after either.
 */
int treewalk_open(struct treewalk *tw, int dirfd, const char *name, int flags);

/*
 * Enter the subdirectory name of the directory the walk is in, without
 * following a symlink.  0, or -errno with the walk where it was.
 */
int treewalk_down(struct treewalk *tw, const char *name);

/*
 * Go back to the directory treewalk_down() came from.  0; -ESTALE when
 * ".." is another directory (what the walk is in was moved), -EINVAL at
 * the root, or -errno; the walk is then where it was.
 */
int treewalk_up(struct treewalk *tw);

/* The fstat() of the directory the walk is in, taken when it entered it. */
const struct stat *treewalk_stat(const struct treewalk *tw);

/*
 * Visit everything below the directory the walk is in, calling ops back
 * with arg in tw->arg and dir for that directory (see struct
 * treewalk_ops).  0 with the walk back where it started; otherwise the
 * first error, with the walk and tw->path where it happened.
 */
int treewalk_run(struct treewalk *tw, const struct treewalk_ops *ops, void *arg, void *dir);

/* Close the walk's descriptor and free what it holds; tw may be used for a new walk. */
void treewalk_close(struct treewalk *tw);

#endif
