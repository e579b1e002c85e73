/*
 * dirscan.h - calling a function for each entry of an open directory.
 */
#ifndef LEDGERFS_DIRSCAN_H
#define LEDGERFS_DIRSCAN_H

#include <dirent.h>

/*
 * Call fn(dfd, name, arg) for each entry of the directory open at dfd but
 * "." and "..".  A fresh descriptor each time, so every scan starts at the
 * first entry and dfd's own position is untouched.  name is valid during
 * the call only.  Stops at fn's first nonzero return and returns it; 0
 * after the last entry, or -errno if the directory cannot be read.
 */
int dir_scan(int dfd, int (*fn)(int dfd, const char *name, void *arg), void *arg);

/*
 * dir_scan() handing fn the whole entry, for callers that can skip a stat
 * by its d_ino or d_type (which may be DT_UNKNOWN).  de is valid during
 * the call only.
 */
int dir_scan_entries(int dfd, int (*fn)(int dfd, const struct dirent *de, void *arg), void *arg);

#endif
