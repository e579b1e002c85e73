/*
 * inval.h - keeping a replica's kernel caches true as remote events land.
 *
 * The kernel caches pages, attributes and names of a FUSE mount for as
 * long as the mount's timeouts allow (a day by default).  Before a remote
 * event is applied we note which objects and directory entries it touches,
 * while the old names still resolve (an unlink or a rename takes them
 * away); after it is applied we tell the kernel to drop exactly those.
 */
#ifndef LEDGERFS_INVAL_H
#define LEDGERFS_INVAL_H

#include <limits.h>
#include <stdint.h>

#include "journal/event.h"
#include "fuse/fuse_ops.h"

#define INVAL_MAX 6

struct inval_note {
	unsigned nentries;
	struct {
		uint64_t parent; /* FUSE inode number of the directory */
		char name[NAME_MAX + 1];
	} entries[2];
	unsigned ninodes;
	uint64_t inodes[INVAL_MAX]; /* FUSE inode numbers of touched objects and dirs */
};

/*
 * Note what ev touches, as the store stands before it is applied.  *out
 * is malloc'd (NULL when out of memory or nothing is cached): pass it to
 * inval_after(), which frees it.
 */
void inval_before(struct lfs_fs *fs, const struct event *ev, struct inval_note **out);

/* Invalidate what note names in the kernel (fs->se must be set); frees note. */
void inval_after(struct lfs_fs *fs, struct inval_note *note);

#endif
