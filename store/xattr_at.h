/*
 * xattr_at.h - xattrs of a store object through its descriptor, which of
 * them are ledgerfs's own, and which of them replication carries.
 *
 * The hash tree (merkle.c) and the snapshot transfer (snapshot.c) must
 * agree on both, or a resync would send what the tree never compared.
 */
#ifndef LEDGERFS_XATTR_AT_H
#define LEDGERFS_XATTR_AT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Whether the xattr name (len bytes, no NUL needed) is one of ledgerfs's
 * own, under STORE_XATTR_PREFIX (the fid, the version, the root's cluster
 * stamp): the mount hides them from its users and refuses to change them,
 * and a tree digest leaves them out.
 */
bool xattr_is_ledgerfs(const char *name, size_t len);

/*
 * Whether replication carries the xattr name (len bytes, no NUL needed):
 * every xattr but the node's own (the cluster stamp of the root); the fid
 * and version are carried.
 */
bool xattr_replicated(const char *name, size_t len);

/*
 * flistxattr/fgetxattr/fsetxattr/fremovexattr on fd.  An O_PATH descriptor
 * (opath: symlinks, devices, fifos, directories opened so) reaches its
 * xattrs through /proc/self/fd.  list and get return what the system call
 * does (errno set on -1); set and remove return 0 or -errno, and remove
 * counts an xattr already gone as removed.
 */
ssize_t xattr_at_list(int fd, bool opath, char *buf, size_t size);
ssize_t xattr_at_get(int fd, bool opath, const char *name, void *buf, size_t size);
int xattr_at_set(int fd, bool opath, const char *name, const void *value, size_t size);
int xattr_at_remove(int fd, bool opath, const char *name);

#endif
