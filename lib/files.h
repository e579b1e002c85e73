/*
 * files.h - small file-system chores several modules share.
 */
#ifndef LEDGERFS_FILES_H
#define LEDGERFS_FILES_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Replace path with len bytes of data, mode exactly, atomically: a temp
 * file beside it, fsync, rename, fsync of the directory.  A crash leaves
 * the old file or the new one, never a mix.  0 or a negative errno.
 */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* Write all len bytes to fd at its offset, going on after EINTR and short writes.  0 or a negative errno. */
int file_write_all(int fd, const void *data, size_t len);

/* 1 if dir has no entries, 0 if it has some, a negative errno if it cannot be read. */
int dir_is_empty(const char *dir);

#endif
