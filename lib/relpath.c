/*
 * relpath.c - a relative path grown and cut back as a walk goes down and
 * up (see relpath.h).
 */
#include <string.h>

#include "lib/grow.h"
#include "lib/relpath.h"

int relpath_set(struct relpath *rp, size_t len, const char *name)
{
	size_t nlen = strlen(name);
	int err;

	err = grow_array(&rp->p, &rp->cap, len + 1 + nlen + 1);
	if (err)
		return err;
	rp->len = len;
	if (len)
		rp->p[rp->len++] = '/';
	memcpy(rp->p + rp->len, name, nlen + 1);
	rp->len += nlen;
	return 0;
}

void relpath_cut(struct relpath *rp, size_t len)
{
	rp->len = len;
	if (rp->p)
		rp->p[len] = '\0';
}

const char *relpath_str(const struct relpath *rp)
{
	return rp->len ? rp->p : ".";
}
