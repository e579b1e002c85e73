/*
 * xattr_at.c - xattrs of a store object through its descriptor (see
 * xattr_at.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/xattr.h>

#include "store/path.h"
#include "store/store.h"
#include "store/xattr_at.h"

static bool same_name(const char *name, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(name, want, len) == 0;
}

bool xattr_is_ledgerfs(const char *name, size_t len)
{
	size_t plen = strlen(STORE_XATTR_PREFIX);

	return len >= plen && memcmp(name, STORE_XATTR_PREFIX, plen) == 0;
}

bool xattr_replicated(const char *name, size_t len)
{
	if (!xattr_is_ledgerfs(name, len))
		return true;
	return same_name(name, len, STORE_XATTR_FID) || same_name(name, len, STORE_XATTR_VER);
}

ssize_t xattr_at_list(int fd, bool opath, char *buf, size_t size)
{
	char proc[PATH_PROCFD_LEN];

	return opath ? listxattr(path_procfd(fd, proc), buf, size) : flistxattr(fd, buf, size);
}

ssize_t xattr_at_get(int fd, bool opath, const char *name, void *buf, size_t size)
{
	char proc[PATH_PROCFD_LEN];

	return opath ? getxattr(path_procfd(fd, proc), name, buf, size)
		     : fgetxattr(fd, name, buf, size);
}

int xattr_at_set(int fd, bool opath, const char *name, const void *value, size_t size)
{
	char proc[PATH_PROCFD_LEN];
	int r = opath ? setxattr(path_procfd(fd, proc), name, value, size, 0)
		      : fsetxattr(fd, name, value, size, 0);

	return r < 0 ? -errno : 0;
}

int xattr_at_remove(int fd, bool opath, const char *name)
{
	char proc[PATH_PROCFD_LEN];
	int r = opath ? removexattr(path_procfd(fd, proc), name) : fremovexattr(fd, name);

	return r < 0 && errno != ENODATA ? -errno : 0;
}
