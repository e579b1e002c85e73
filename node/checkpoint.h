/*
 * checkpoint.h - the journal as the store's write-ahead log (checkpoint.c
 * says how): store checkpoints, the floor they put under trimming, and the
 * redo of data events after an unclean stop.
 */
#ifndef LEDGERFS_CHECKPOINT_H
#define LEDGERFS_CHECKPOINT_H

#include <stdint.h>

#include "node/node.h"

/* node_checkpoint() flags. */
#define NODE_CKPT_SYNC	   0x1 /* record the new position with a synced journal write */
#define NODE_CKPT_IF_MOVED 0x2 /* nothing when no applied mark moved since the last one */

/*
 * Checkpoint the store: copy the applied marks, syncfs(2) the store, then
 * record the marks as its durable position.  Needs no node lock (the marks
 * only count events already in the store); checkpoints run one at a time.
 * 0 or a negative errno, logged.
 */
int node_checkpoint(struct node *n, int flags);

/*
 * Have the checkpointer thread checkpoint now rather than at its next
 * interval (retention does when it would trim past the store's durable
 * position).  No-op without the thread.
 */
void node_checkpoint_soon(struct node *n);

/*
 * bound, lowered to the store's durable position for origin: events above
 * it may be needed by the redo, so they are not trimmed.  bound itself on
 * a node that never checkpointed.
 */
uint64_t node_stored_floor(struct node *n, uint64_t origin, uint64_t bound);

/*
 * For node.c: load the durable position at open; on a node that never
 * checkpointed, record its applied marks as it (what such a node's store
 * was taken to hold, and nothing on a new node); start and stop the
 * periodic checkpoints.
 */
int node_stored_load(struct node *n);
int node_checkpoint_first(struct node *n);
int node_checkpointer_start(struct node *n);
void node_checkpointer_stop(struct node *n);

/*
 * At start, with the node lock held and the replay done:
 * write every data event above the durable position again, in order
 * (checkpoint.c).  *redone counts them.  0 or a negative errno.
 */
int node_redo_data(struct node *n, uint64_t *redone);

#endif
