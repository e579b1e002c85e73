/*
 * dirscan.c - calling a function for each entry of an open directory
 * (see dirscan.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "lib/dirscan.h"

int dir_scan_entries(int dfd, int (*fn)(int dfd, const struct dirent *de, void *arg), void *arg)
{
	struct dirent *de;
	int fd, r = 0;
	DIR *d;

	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		close(fd);
		return r;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			r = errno ? -errno : 0;
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		r = fn(dfd, de, arg);
		if (r)
			break;
	}
	closedir(d);
	return r;
}

/* dir_scan()'s function and argument, called by name from dir_scan_entries(). */
struct by_name {
	int (*fn)(int dfd, const char *name, void *arg);
	void *arg;
};

static int call_by_name(int dfd, const struct dirent *de, void *arg)
{
	const struct by_name *b = arg;

	return b->fn(dfd, de->d_name, b->arg);
}

int dir_scan(int dfd, int (*fn)(int dfd, const char *name, void *arg), void *arg)
{
	struct by_name b = {fn, arg};

	return dir_scan_entries(dfd, call_by_name, &b);
}
