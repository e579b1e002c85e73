/*
 * fuse_ops.h - the FUSE operations of a mounted node.
 *
 * libfuse's high-level API hands us paths, which are what events record.
 * Reads go straight to the store; every mutation becomes one event that is
 * journaled and then applied under the node lock (node_commit_locked()).
 */
#ifndef LEDGERFS_FUSE_OPS_H
#define LEDGERFS_FUSE_OPS_H

#include <fuse.h>

#include "ledgerfs/node.h"

/* The operations table; private_data passed to fuse_new() is the struct node. */
const struct fuse_operations *lfs_fuse_operations(void);

#endif
