/*
 * treewalk.c - walking a directory tree with one directory descriptor
 * (see treewalk.h).
 *
 * Each level of the walk keeps the stat of its directory (to check the way
 * back up) and, under treewalk_run(), the sorted names of its entries and
 * which one is next.  A level's name buffers stay allocated when the walk
 * goes up, so the next directory at that depth reuses them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/dirscan.h"
#include "lib/grow.h"
#include "lib/relpath.h"
#include "lib/treewalk.h"

struct treewalk_level {
	struct stat st; /* the directory's, from when the walk entered it */
	char *names;	/* its entries' names, NUL-separated */
	size_t names_len, names_cap;
	char **sorted; /* pointers into names, sorted byte-wise */
	size_t sorted_cap;
	size_t count, next; /* how many names; the index of the next one to visit */
	size_t path_len;    /* the length of the directory's path in tw->path */
	void *dir;	    /* the caller's pointer for the directory */
};

int treewalk_open(struct treewalk *tw, int dirfd, const char *name, int flags)
{
	*tw = (struct treewalk){.fd = -1};
	if (grow_array(&tw->lv, &tw->lv_cap, 1) < 0)
		return -ENOMEM;
	memset(tw->lv, 0, tw->lv_cap * sizeof(*tw->lv));
	tw->fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | flags);
	if (tw->fd < 0)
		return -errno;
	if (fstat(tw->fd, &tw->lv[0].st) < 0)
		return -errno;
	return 0;
}

int treewalk_down(struct treewalk *tw, const char *name)
{
	size_t old_cap = tw->lv_cap;
	struct stat st;
	int sub, err;

	err = grow_array(&tw->lv, &tw->lv_cap, tw->depth + 2);
	if (err)
		return err;
	memset(tw->lv + old_cap, 0, (tw->lv_cap - old_cap) * sizeof(*tw->lv));
	sub = openat(tw->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return -errno;
	if (fstat(sub, &st) < 0) {
		err = -errno;
		close(sub);
		return err;
	}
	close(tw->fd);
	tw->fd = sub;
	tw->lv[++tw->depth].st = st;
	return 0;
}

int treewalk_up(struct treewalk *tw)
{
	const struct stat *want;
	struct stat st;
	int up;

	if (tw->depth == 0)
		return -EINVAL;
	want = &tw->lv[tw->depth - 1].st;
	up = openat(tw->fd, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (up < 0)
		return -errno;
	if (fstat(up, &st) < 0 || st.st_dev != want->st_dev || st.st_ino != want->st_ino) {
		close(up);
		return -ESTALE;
	}
	close(tw->fd);
	tw->fd = up;
	tw->depth--;
	return 0;
}

const struct stat *treewalk_stat(const struct treewalk *tw)
{
	return &tw->lv[tw->depth].st;
}

void treewalk_close(struct treewalk *tw)
{
	size_t i;

	if (tw->fd >= 0)
		close(tw->fd);
	for (i = 0; tw->lv && i < tw->lv_cap; i++) {
		free(tw->lv[i].names);
		free(tw->lv[i].sorted);
	}
	free(tw->lv);
	free(tw->path.p);
	*tw = (struct treewalk){.fd = -1};
}

static int name_add(int dfd, const char *name, void *arg)
{
	struct treewalk_level *l = arg;
	size_t len = strlen(name) + 1;
	int err;

	(void)dfd;
	err = grow_array(&l->names, &l->names_cap, l->names_len + len);
	if (err)
		return err;
	memcpy(l->names + l->names_len, name, len);
	l->names_len += len;
	l->count++;
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read and sort the names of the directory the walk is in into its level. */
static int level_list(struct treewalk *tw)
{
	struct treewalk_level *l = &tw->lv[tw->depth];
	size_t i;
	char *p;
	int err;

	l->names_len = l->count = l->next = 0;
	err = dir_scan(tw->fd, name_add, l);
	if (err)
		return err;
	err = grow_array(&l->sorted, &l->sorted_cap, l->count);
	if (err)
		return err;
	for (i = 0, p = l->names; i < l->count; i++, p += strlen(p) + 1)
		l->sorted[i] = p;
	if (l->count > 1)
		qsort(l->sorted, l->count, sizeof(*l->sorted), cmp_name);
	return 0;
}

static int fail(struct treewalk *tw, const struct treewalk_ops *ops, int err, const char *why)
{
	return ops->fail ? ops->fail(tw, err, why) : err;
}

/* Just entered the directory at tw->depth, whose caller pointer is dir: call enter, list it. */
static int level_enter(struct treewalk *tw, const struct treewalk_ops *ops, void *dir)
{
	struct treewalk_level *l = &tw->lv[tw->depth];
	int err;

	l->dir = dir;
	l->path_len = tw->path.len;
	l->count = l->next = 0;
	if (ops->enter) {
		err = ops->enter(tw, tw->fd, &l->st, dir);
		if (err)
			return err;
	}
	err = level_list(tw);
	return err ? fail(tw, ops, err, NULL) : 0;
}

/* Visit the next entry of the directory the walk is in, walking into it if asked. */
static int visit_next(struct treewalk *tw, const struct treewalk_ops *ops)
{
	struct treewalk_level *l = &tw->lv[tw->depth];
	size_t index = l->next++;
	const char *name = l->sorted[index];
	void *sub = l->dir;
	struct stat st;
	int r;

	r = relpath_set(&tw->path, l->path_len, name);
	if (r)
		return fail(tw, ops, r, NULL);
	if (fstatat(tw->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(tw, ops, -errno, NULL);
	r = ops->entry ? ops->entry(tw, tw->fd, name, &st, index, l->count, l->dir, &sub) : 0;
	if (r != TREEWALK_DESCEND)
		return r;
	if (!S_ISDIR(st.st_mode))
		return fail(tw, ops, -ENOTDIR, NULL);
	r = treewalk_down(tw, name);
	if (r)
		return fail(tw, ops, r, NULL);
	return level_enter(tw, ops, sub);
}

int treewalk_run(struct treewalk *tw, const struct treewalk_ops *ops, void *arg, void *dir)
{
	size_t base = tw->depth;
	struct treewalk_level *l;
	int err;

	tw->arg = arg;
	relpath_cut(&tw->path, 0);
	err = level_enter(tw, ops, dir);
	while (!err) {
		l = &tw->lv[tw->depth];
		if (l->next < l->count) {
			err = visit_next(tw, ops);
			continue;
		}
		relpath_cut(&tw->path, l->path_len);
		if (ops->leave) {
			err = ops->leave(tw, tw->fd, &l->st, l->dir);
			if (err)
				break;
		}
		if (tw->depth == base)
			break;
		err = treewalk_up(tw);
		if (err == -ESTALE)
			err = fail(tw, ops, -EAGAIN, "moved while being read");
		else if (err)
			err = fail(tw, ops, err, NULL);
	}
	return err;
}
