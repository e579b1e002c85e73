/*
 * path.h - resolving event and request paths strictly beneath the store.
 *
 * Paths in events are relative to the store root: components separated by
 * single slashes, no leading slash, no "." or ".." components, each at most
 * NAME_MAX bytes, the whole at most PATH_REL_MAX.  The root itself is ".".
 * Resolution uses openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS, so neither a hostile event nor a symlink planted in
 * the store can lead outside it: the kernel never sends us a path through a
 * symlink, so refusing every symlink on the way costs nothing legitimate.
 *
 * PATH_MAX limits a path handed to one system call, not the depth of a tree:
 * ext4 holds deeper ones, and a file made through the mount by relative
 * calls can sit deeper.  A path of PATH_MAX bytes or more is resolved in
 * pieces shorter than PATH_MAX, each split at a slash and resolved with the
 * same restrictions beneath the directory the one before it reached.
 */
#ifndef LEDGERFS_PATH_H
#define LEDGERFS_PATH_H

#include <sys/types.h>

/* Path of the store root in events. */
#define PATH_ROOT "."

/*
 * Longest store path, in bytes: what the u16 length fields of events and
 * replication frames can carry.  A deeper object cannot be replicated, so
 * the mount refuses to make one (ENAMETOOLONG).
 */
#define PATH_REL_MAX 65535

/*
 * Check that rel is a valid store path.  0, -ENAMETOOLONG (component over
 * NAME_MAX or path over PATH_REL_MAX) or -EINVAL, with *why naming the problem.
 */
int path_check(const char *rel, const char **why);

/* True if rel names the store root. */
int path_is_root(const char *rel);

/*
 * Make the store path p its parent, in place: "." for a top-level name
 * and for the root (p is not empty, so its buffer holds the 2 bytes of ".").
 */
void path_up(char *p);

/*
 * Open rel beneath root with flags (O_NOFOLLOW is always added, so a final
 * symlink can only be opened with O_PATH).  *fd is the caller's to close.
 * A path over PATH_REL_MAX gives -ENAMETOOLONG; one of PATH_MAX bytes or
 * more is resolved in pieces, and its components must pass path_check()
 * (-EINVAL or -ENAMETOOLONG otherwise).
 */
int path_open(int root, const char *rel, int flags, mode_t mode, int *fd);

/*
 * The parent directory of rel and rel's last component.  at->dirfd is
 * either root itself or a read-only directory descriptor released by
 * path_at_release().
 * at->base points into rel.  rel must not be the root.
 */
struct path_at {
	int dirfd;
	int owned;
	const char *base;
};

int path_at_open(int root, const char *rel, struct path_at *at);
void path_at_release(struct path_at *at);

/*
 * A /proc/self/fd path for fd, so the l*xattr calls can reach an O_PATH
 * descriptor (symlinks included).  buf must hold PATH_PROCFD_LEN bytes.
 */
#define PATH_PROCFD_LEN 32
const char *path_procfd(int fd, char *buf);

/*
 * chmod through any descriptor, O_PATH included (not a symlink's: those
 * have no mode of their own).  fchmod() refuses O_PATH descriptors; for
 * those fchmodat2(fd, "", AT_EMPTY_PATH) (Linux 6.6) is tried, then a
 * chmod through /proc/self/fd, which costs a path walk.  0 or -errno.
 */
int path_fchmod(int fd, mode_t mode);

#endif
