/*
 * inval.c - kernel cache invalidation for remote events (see inval.h).
 *
 * Objects are found by their store inode in the mount's inode table: what
 * the kernel never looked up it cannot have cached, and a directory entry
 * the kernel never saw costs one harmless -ENOENT from the notify call.
 * Notifications are sent without the node lock: the kernel may call back
 * into the filesystem while it handles them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledgerfs/inval.h"
#include "ledgerfs/log.h"
#include "ledgerfs/path.h"

/* Note the object at rel (if the kernel knows it).  Node lock held. */
static void note_object(struct lfs_fs *fs, const char *rel, struct inval_note *note)
{
	struct stat st;
	uint64_t nodeid;
	int fd;

	if (note->ninodes == INVAL_MAX)
		return;
	if (path_open(fs->node->store->root, rel, O_PATH, 0, &fd) < 0)
		return;
	if (fstat(fd, &st) == 0 && inodes_touch(&fs->inodes, &st, &nodeid) == 0)
		note->inodes[note->ninodes++] = nodeid;
	close(fd);
}

/* Note rel's directory entry and its parent directory.  Node lock held. */
static void note_entry(struct lfs_fs *fs, const char *rel, struct inval_note *note)
{
	const char *slash = strrchr(rel, '/'), *base = slash ? slash + 1 : rel;
	char dir[PATH_MAX];
	struct stat st;
	uint64_t nodeid;
	int fd;

	if (path_is_root(rel) || note->nentries == 2 || strlen(base) > NAME_MAX)
		return;
	if (slash) {
		if ((size_t)(slash - rel) >= sizeof(dir))
			return;
		memcpy(dir, rel, (size_t)(slash - rel));
		dir[slash - rel] = '\0';
	} else {
		strcpy(dir, PATH_ROOT);
	}
	if (path_open(fs->node->store->root, dir, O_PATH | O_DIRECTORY, 0, &fd) < 0)
		return;
	if (fstat(fd, &st) == 0 && inodes_touch(&fs->inodes, &st, &nodeid) == 0) {
		note->entries[note->nentries].parent = nodeid;
		strcpy(note->entries[note->nentries].name, base);
		note->nentries++;
		if (note->ninodes < INVAL_MAX)
			note->inodes[note->ninodes++] = nodeid;
	}
	close(fd);
}

void inval_before(struct lfs_fs *fs, const struct event *ev, struct inval_note **out)
{
	struct inval_note *note = calloc(1, sizeof(*note));

	*out = NULL;
	if (!note)
		return;
	pthread_mutex_lock(&fs->node->lock);
	if (ev->path) {
		note_object(fs, ev->path, note);
		note_entry(fs, ev->path, note);
	}
	if (ev->path2) {
		note_object(fs, ev->path2, note);
		note_entry(fs, ev->path2, note);
	}
	pthread_mutex_unlock(&fs->node->lock);
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
