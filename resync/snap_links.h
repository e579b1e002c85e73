/*
 * snap_links.h - in a snapshot resync, a new name of a file the node
 * already has becomes a hard link to it.
 *
 * The peer's listings mark hard-link groups, but only among the entries
 * that differ: a name added to a file whose other name is unchanged (and
 * so never listed) would be fetched as a copy, and the two names would be
 * two inodes with one fid, so later events through one name would miss
 * the other.  The fid tells which file the node already has.
 */
#ifndef LEDGERFS_SNAP_LINKS_H
#define LEDGERFS_SNAP_LINKS_H

#include <stddef.h>
#include <stdint.h>

#include "resync/merkle.h"
#include "resync/snapshot.h"

/*
 * For each plan step listed in steps (OBJ steps of entries the peer says
 * have other names, their fid filled in from the entry received), find a
 * regular file of mine, the node's own tree, with the same fid at a path
 * no step of the plan replaces or removes (nor a directory above it), and
 * make the step a LINK to that path: on the peer that path holds the same
 * unchanged entry, fid included, so it is the same inode.  Steps without
 * a fid (their entry was staged before and not received) stay copies.
 * *linked receives the count.  0 or -ENOMEM.
 */
int snap_link_unchanged(struct snap_plan *plan, const uint32_t *steps, size_t n,
			const struct merkle *mine, size_t *linked);

#endif
