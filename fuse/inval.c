/*
 * inval.c - kernel cache invalidation for remote events (see inval.h).
 *
 * Objects are found by their store inode in the mount's inode table: what
 * the kernel never looked up it cannot have cached, and a directory entry
 * the kernel never saw costs one harmless -ENOENT from the notify call.
 * While the table holds nothing but the root, as on a replica that nobody
 * reads, events below the root cost no lookup at all.
 * Notifications are sent without the node lock: the kernel may call back
 * into the filesystem while it handles them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuse/inval.h"
#include "lib/log.h"
#include "store/path.h"

/* Note the object of stat st if the kernel knows it.  Node lock held. */
static void note_inode(struct lfs_fs *fs, const struct stat *st, struct inval_note *note)
{
	uint64_t nodeid;

	if (note->ninodes < INVAL_MAX && inodes_touch(&fs->inodes, st, &nodeid) == 0)
		note->inodes[note->ninodes++] = nodeid;
}

/*
 * Note the object at rel, its directory entry and its parent directory,
 * resolving the parent once.  Node lock held.
 */
static void note_path(struct lfs_fs *fs, const char *rel, struct inval_note *note)
{
	int root = node_store(fs->node)->root, dirfd = root;
	struct path_at at = {.dirfd = -1};
	struct stat st;
	uint64_t nodeid;

	if (path_is_root(rel)) {
		if (fstat(root, &st) == 0)
			note_inode(fs, &st, note);
		return;
	}
	if (path_at_open(root, rel, &at) < 0)
		return;
	dirfd = at.dirfd;
	if (fstatat(dirfd, at.base, &st, AT_SYMLINK_NOFOLLOW) == 0)
		note_inode(fs, &st, note);
	if (note->nentries < 2 && strlen(at.base) <= NAME_MAX && fstat(dirfd, &st) == 0 &&
	    inodes_touch(&fs->inodes, &st, &nodeid) == 0) {
		note->entries[note->nentries].parent = nodeid;
		strcpy(note->entries[note->nentries].name, at.base);
		note->nentries++;
		if (note->ninodes < INVAL_MAX)
			note->inodes[note->ninodes++] = nodeid;
	}
	path_at_release(&at);
}

/*
 * Could the kernel hold anything of rel?  Each object it holds is in the
 * inode table, the root apart, and it reaches an object only through its
 * parent: with the table empty, only names in the root can be cached.
 */
static int maybe_cached(struct lfs_fs *fs, const char *rel)
{
	return inodes_count(&fs->inodes) > 0 || !strchr(rel, '/');
}

void inval_before(struct lfs_fs *fs, const struct event *ev, struct inval_note **out)
{
	struct inval_note *note;

	*out = NULL;
	if (!fs->se || !((ev->path && maybe_cached(fs, ev->path)) ||
			 (ev->path2 && maybe_cached(fs, ev->path2))))
		return;
	note = calloc(1, sizeof(*note));
	if (!note)
		return;
	node_lock(fs->node);
	if (ev->path)
		note_path(fs, ev->path, note);
	if (ev->path2)
		note_path(fs, ev->path2, note);
	node_unlock(fs->node);
	if (note->ninodes == 0 && note->nentries == 0) {
		free(note);
		return;
	}
	*out = note;
}

void inval_after(struct lfs_fs *fs, struct inval_note *note)
{
	unsigned i;
	int r;

	if (!note)
		return;
	for (i = 0; fs->se && i < note->nentries; i++) {
		r = fuse_lowlevel_notify_inval_entry(fs->se, note->entries[i].parent,
						     note->entries[i].name,
						     strlen(note->entries[i].name));
		if (r < 0 && r != -ENOENT)
			log_warn("cannot invalidate the kernel's entry %s: %s",
				 note->entries[i].name, strerror(-r));
	}
	for (i = 0; fs->se && i < note->ninodes; i++) {
		r = fuse_lowlevel_notify_inval_inode(fs->se, note->inodes[i], 0, 0);
		if (r < 0 && r != -ENOENT)
			log_warn("cannot invalidate a kernel inode: %s", strerror(-r));
	}
	free(note);
}
