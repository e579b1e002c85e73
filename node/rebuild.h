/*
 * rebuild.h - rebuilding a node's store without its kept-aside events.
 *
 * After a failover a node may hold events beyond a promotion's fence (its
 * own unreplicated tail as an old primary, or part of one it received):
 * they are kept aside in the journal (journal.h: tails), but the store
 * still shows their effects, and the new primary's events build on a
 * history without them.  So the store is moved aside, kept as
 * NODE_DIR/store.fenced-<term>-<UTC yyyymmddThhmmss> for a person to merge
 * from ('ledgerctl tail-export'), never deleted, and a new store is built
 * by replaying the journal, up to the applied marks, without the tails.
 *
 * Each step is a rename, so a crash leaves a state the next attempt reads
 * from the names alone:
 *   1. remove a leftover NODE_DIR/store.rebuilding (an attempt cut short)
 *   2. build NODE_DIR/store.rebuilding and sync it
 *   3. rename store -> store.fenced-...   (skipped if a crash after it left
 *                                          no store: it is kept already)
 *   4. rename store.rebuilding -> store, sync NODE_DIR
 *   5. clear the journal's rebuild flag (synced)
 * A crash between 4 and 5 only costs a second rebuild, which keeps the
 * first rebuilt store as one more store.fenced-... copy.
 */
#ifndef LEDGERFS_REBUILD_H
#define LEDGERFS_REBUILD_H

#include <stddef.h>

#include "node/node.h"

#define REBUILD_WORK_DIR      "store.rebuilding"
#define REBUILD_FENCED_PREFIX "store.fenced-"
#define REBUILD_KEEP_WORK_DIR "store.fencing"

/*
 * Rebuild n's store as above when n->rebuild_needed; 0 at once otherwise.
 * Meant for node_open() before anything else uses the store: it takes
 * n->lock, needs only n->dir, n->cfg and n->journal, and works whether
 * n->store is open or NULL (NODE_DIR/store may be missing after a crash
 * in step 3); on success n->store is the new store.  Progress goes to
 * stderr when it is a terminal; the kept copy's path is logged.  On failure
 * err (errlen bytes) says why, naming the path, and the flag stays set.
 */
int rebuild_store(struct node *n, char *err, size_t errlen);

/*
 * Keep the store as it is now in NODE_DIR/store.fenced-<term>-<time> (the
 * path goes to kept), made of hard links to its files and copies of its
 * directories, built in store.fencing and renamed when whole.  For a live
 * node about to drop kept-aside events from its store by a snapshot
 * resync: the snapshot replaces changed files by rename, so the links
 * keep what the tail made, for tail-export.  n->lock held.  0 or a
 * negative errno, logged with the path.
 */
int rebuild_keep_links(struct node *n, char *kept, size_t len);

#endif
