/*
 * snap_links.c - a new name of a file the node already has becomes a
 * hard link to it (see snap_links.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/relpath.h"
#include "resync/snap_links.h"
#include "store/store.h"

struct cand {
	struct fid fid;
	uint32_t step;
};

struct walk {
	struct snap_plan *plan;
	struct cand *c; /* sorted by fid */
	size_t n;
	size_t linked;
	struct relpath path; /* of the entry visited */
};

static int cmp_fid(const struct fid *a, const struct fid *b)
{
	if (a->origin != b->origin)
		return a->origin < b->origin ? -1 : 1;
	if (a->counter != b->counter)
		return a->counter < b->counter ? -1 : 1;
	return 0;
}

static int cmp_cand(const void *a, const void *b)
{
	return cmp_fid(&((const struct cand *)a)->fid, &((const struct cand *)b)->fid);
}

/* Whether a step of the plan (but a DIR, which keeps what is in it) replaces path or a parent. */
static bool touched(const struct snap_plan *p, const char *path)
{
	size_t i, n;

	for (i = 0; i < p->n; i++) {
		if (p->v[i].op == SNAP_OP_DIR)
			continue;
		n = strlen(p->v[i].path);
		if (strncmp(p->v[i].path, path, n) == 0 && (path[n] == '\0' || path[n] == '/'))
			return true;
	}
	return false;
}

/* The first candidate with fid, or w->n. */
static size_t first_with(const struct walk *w, const struct fid *fid)
{
	size_t lo = 0, hi = w->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cmp_fid(&w->c[mid].fid, fid) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Make the candidates with the fid of the file at w->path links to it. */
static int link_to_file(struct walk *w, const struct merkle_entry *e)
{
	size_t i;

	for (i = first_with(w, &e->fid); i < w->n && !cmp_fid(&w->c[i].fid, &e->fid); i++) {
		struct snap_step *st = &w->plan->v[w->c[i].step];
		char *to;

		if (st->op != SNAP_OP_OBJ || !strcmp(st->path, w->path.p) ||
		    touched(w->plan, w->path.p))
			continue;
		to = strdup(w->path.p);
		if (!to)
			return -ENOMEM;
		st->op = SNAP_OP_LINK;
		st->link_to = to;
		w->linked++;
	}
	return 0;
}

/* Visit the entries of d, whose path (len bytes, 0 for the root) is in w->path. */
static int visit(struct walk *w, const struct merkle_dir *d, size_t len)
{
	size_t i;
	int err = 0;

	for (i = 0; i < d->n && !err; i++) {
		const struct merkle_entry *e = &d->v[i];

		err = relpath_set(&w->path, len, e->name);
		if (err)
			break;
		if (e->dir)
			err = visit(w, e->dir, w->path.len);
		else if (S_ISREG(e->mode) && !fid_is_zero(e->fid))
			err = link_to_file(w, e);
	}
	relpath_cut(&w->path, len);
	return err;
}

int snap_link_unchanged(struct snap_plan *plan, const uint32_t *steps, size_t n,
			const struct merkle *mine, size_t *linked)
{
	struct walk w = {.plan = plan};
	const struct merkle_entry *root = merkle_root(mine);
	size_t i;
	int err = 0;

	*linked = 0;
	w.c = n ? malloc(n * sizeof(*w.c)) : NULL;
	if (n && !w.c)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		if (steps[i] < plan->n && plan->v[steps[i]].op == SNAP_OP_OBJ &&
		    !fid_is_zero(plan->v[steps[i]].fid))
			w.c[w.n++] = (struct cand){plan->v[steps[i]].fid, steps[i]};
	if (w.n && root->dir) {
		qsort(w.c, w.n, sizeof(*w.c), cmp_cand);
		err = visit(&w, root->dir, 0);
	}
	*linked = w.linked;
	free(w.path.p);
	free(w.c);
	return err;
}
