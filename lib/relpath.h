/*
 * relpath.h - a relative path grown and cut back as a walk goes down and up.
 *
 * A walk keeps the path of where it is in one buffer: going down appends
 * "/name" at the parent's length, going up cuts back to it.  No length
 * limit but memory; "" is the top of the walk.
 */
#ifndef LEDGERFS_RELPATH_H
#define LEDGERFS_RELPATH_H

#include <stddef.h>

/* Start from all zero; p is malloc'd, owned by the relpath, and freed with free(). */
struct relpath {
	char *p;    /* NUL-terminated; NULL until the first relpath_set() */
	size_t len; /* strlen(p), 0 at the top */
	size_t cap;
};

/*
 * Make rp its first len bytes (len <= rp->len), then "/name" ("name" when
 * len is 0).  0, or -ENOMEM with rp unchanged.
 */
int relpath_set(struct relpath *rp, size_t len, const char *name);

/* Cut rp back to its first len bytes (len <= rp->len). */
void relpath_cut(struct relpath *rp, size_t len);

/* rp as messages show it: "." at the top. */
const char *relpath_str(const struct relpath *rp);

#endif
