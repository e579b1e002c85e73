/*
 * tree.h - building and removing test trees for the unit tests.
 *
 * Every helper asserts (Criterion) instead of returning an error: a tree
 * that cannot be built is a failed test, named with the path involved.
 * Paths are "root/rel" and must fit in PATH_MAX.
 */
#ifndef LEDGERFS_TESTS_TREE_H
#define LEDGERFS_TESTS_TREE_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

/* rm -rf of path: rm(1) copes with trees deeper than PATH_MAX. */
void tree_remove(const char *path);

/* out (PATH_MAX bytes) = root/rel. */
void tree_at(char *out, const char *root, const char *rel);

/* root/rel made (or truncated) with exactly the bytes of data, mode 0644. */
void tree_put_file(const char *root, const char *rel, const char *data);

void tree_make_dir(const char *root, const char *rel, mode_t mode);

/*
 * levels directories named name, each in the one before, the first in dir:
 * made relative to each other, so the chain may go deeper than PATH_MAX.
 */
void tree_make_chain(const char *dir, const char *name, int levels);
void tree_make_symlink(const char *root, const char *rel, const char *target);

/* Sets mtime and atime to sec.nsec, not following a symlink. */
void tree_set_mtime(const char *root, const char *rel, time_t sec, long nsec);

/* lsetxattr(root/rel, name, v, n). */
void tree_xset(const char *root, const char *rel, const char *name, const void *v, size_t n);
void tree_xset_str(const char *root, const char *rel, const char *name, const char *v);

#endif
