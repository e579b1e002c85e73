/*
 * digest.h - a tree digest for comparing two directory trees.
 *
 * SHA-256 over every entry below a root, in sorted name order: relative
 * path, type, mode, uid, gid, xattrs (sorted, ledgerfs's own trusted.ledgerfs.*
 * left out), symlink target, and for regular files size, contents and mtime
 * (nanoseconds).  Directory mtimes, atimes, ctimes and inode numbers are
 * left out: they differ between replicas by nature.  Hard links count as
 * separate entries with the same contents.
 */
#ifndef LEDGERFS_DIGEST_H
#define LEDGERFS_DIGEST_H

#include <stdio.h>

#define DIGEST_LEN 32

/*
 * Digest the tree at root into out.  When list is non-NULL, one line per
 * entry is written to it: "<sha256 hex of the entry> <type> <mode octal>
 * <uid>:<gid> <size> <mtime ns> <path>" with the path escaped (\n, \\,
 * non-printable bytes as \xNN).  Returns 0 or a negative errno; on failure
 * the failing path is written to stderr.
 */
int digest_tree(const char *root, unsigned char out[DIGEST_LEN], FILE *list);

/* Lower-case hex of a digest into hex (2 * DIGEST_LEN + 1 bytes). */
void digest_hex(const unsigned char d[DIGEST_LEN], char *hex);

#endif
