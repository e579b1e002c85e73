/*
 * dirscan.h - calling a function for each entry of an open directory.
 */
#ifndef LEDGERFS_DIRSCAN_H
#define LEDGERFS_DIRSCAN_H

/*
 * Call fn(dfd, name, arg) for each entry of the directory open at dfd but
 * "." and "..".  A fresh descriptor each time, so every scan starts at the
 * first entry and dfd's own position is untouched.  name is valid during
 * the call only.  Stops at fn's first nonzero return and returns it; 0
 * after the last entry, or -errno if the directory cannot be read.
 */
int dir_scan(int dfd, int (*fn)(int dfd, const char *name, void *arg), void *arg);

#endif
