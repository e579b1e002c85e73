/*
 * node_snap.c - a node's snapshot resync state (see node.h).
 *
 * The store a snapshot installs is the sender's store at the snapshot's
 * position (the applied vector under which its hash tree was built), except
 * for files, which are sent as they are when asked for and may show later
 * changes.  So after the install the node resumes each origin from that
 * position, and until it has replayed up to the sender's vector at the end
 * of the resync, an event whose apply finds its change already made (the
 * name already gone, the fid already elsewhere) is counted as applied.
 * Past that vector every event is applied strictly again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bytes.h"
#include "lib/log.h"
#include "node/checkpoint.h"
#include "node/node_int.h"
#include "resync/snapshot.h"

#define SNAP_META_ENTRY 24
#define UNTIL_ENTRY	16

int node_snap_load(struct node *n)
{
	uint8_t *val = NULL;
	size_t len = 0, i;
	int r;

	r = journal_meta_get(n->journal, JOURNAL_META_SNAP, (void **)&val, &len);
	if (r == 0 && len >= 1)
		n->snap_state = val[0];
	free(val);
	val = NULL;
	if (r < 0 && r != -ENOENT)
		return r;
	r = journal_meta_get(n->journal, JOURNAL_META_SNAPUNTIL, (void **)&val, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (len < 4 || (len - 4) % UNTIL_ENTRY || get_le32(val) != (len - 4) / UNTIL_ENTRY ||
	    get_le32(val) > NODE_MAX_FENCES) {
		free(val);
		return -EBADMSG;
	}
	n->nsnap_until = get_le32(val);
	for (i = 0; i < n->nsnap_until; i++) {
		n->snap_until[i].origin = get_le64(val + 4 + i * UNTIL_ENTRY);
		n->snap_until[i].seq = get_le64(val + 12 + i * UNTIL_ENTRY);
	}
	free(val);
	return 0;
}

int node_snap_request(struct node *n)
{
	uint8_t v[5] = {NODE_SNAP_NEEDED, 0, 0, 0, 0};
	int r = 0;

	node_lock(n);
	if (n->snap_state == NODE_SNAP_NONE) {
		r = journal_meta_put(n->journal, JOURNAL_META_SNAP, v, sizeof(v), 1);
		if (r == 0)
			n->snap_state = NODE_SNAP_NEEDED;
	}
	node_unlock(n);
	return r;
}

int node_snap_install_begin(struct node *n, const struct evid *from, const struct evid *until,
			    uint32_t count)
{
	size_t len = 5 + (size_t)count * SNAP_META_ENTRY;
	uint8_t *v = malloc(len);
	uint32_t i;
	int r;

	if (!v)
		return -ENOMEM;
	v[0] = NODE_SNAP_INSTALLING;
	put_le32(v + 1, count);
	for (i = 0; i < count; i++) {
		uint8_t *p = v + 5 + (size_t)i * SNAP_META_ENTRY;

		put_le64(p, from[i].origin);
		put_le64(p + 8, from[i].seq);
		put_le64(p + 16, until[i].seq > from[i].seq ? until[i].seq : from[i].seq);
	}
	node_lock(n);
	r = journal_meta_put(n->journal, JOURNAL_META_SNAP, v, len, 1);
	if (r == 0)
		n->snap_state = NODE_SNAP_INSTALLING;
	node_unlock(n);
	free(v);
	return r;
}

/* Resume origin at from: applied there, older events gone. */
static int resume_origin(struct node *n, uint64_t origin, uint64_t from)
{
	uint64_t applied = journal_applied(n->journal, origin), trimmed = 0;
	int r;

	if (origin == n->cfg.node_id || from == 0)
		return 0;
	if (applied > from) {
		/* Cannot happen with a source chosen as the daemon does; never go back. */
		log_warn("%s: snapshot position %" PRIu64 " of %016" PRIx64
			 " is behind what this node applied (%" PRIu64 "); keeping that",
			 n->dir, from, origin, applied);
		return 0;
	}
	journal_mark_applied(n->journal, origin, from);
	r = journal_trimmed(n->journal, origin, &trimmed);
	if (r == 0 && trimmed < from)
		r = journal_trim(n->journal, origin, from, NULL);
	return r;
}

int node_snap_finish_locked(struct node *n)
{
	uint8_t *val = NULL, *until = NULL;
	size_t len = 0, i, count;
	int r;

	r = journal_meta_get(n->journal, JOURNAL_META_SNAP, (void **)&val, &len);
	if (r < 0)
		return r;
	if (len < 5 || val[0] != NODE_SNAP_INSTALLING || (len - 5) % SNAP_META_ENTRY ||
	    get_le32(val + 1) != (len - 5) / SNAP_META_ENTRY ||
	    get_le32(val + 1) > NODE_MAX_FENCES) {
		r = -EBADMSG;
		goto out;
	}
	count = get_le32(val + 1);
	until = malloc(4 + count * UNTIL_ENTRY);
	if (!until) {
		r = -ENOMEM;
		goto out;
	}
	put_le32(until, (uint32_t)count);
	for (i = 0; i < count && r == 0; i++) {
		const uint8_t *p = val + 5 + i * SNAP_META_ENTRY;

		r = resume_origin(n, get_le64(p), get_le64(p + 8));
		put_le64(until + 4 + i * UNTIL_ENTRY, get_le64(p));
		put_le64(until + 12 + i * UNTIL_ENTRY, get_le64(p + 16));
		n->snap_until[i] = (struct evid){get_le64(p), get_le64(p + 16)};
	}
	if (r < 0)
		goto out;
	/* The store is the sender's: no redo may reach below what it shows. */
	r = node_checkpoint(n, 0);
	if (r < 0)
		goto out;
	n->nsnap_until = (unsigned)count;
	r = journal_meta_put(n->journal, JOURNAL_META_SNAPUNTIL, until, 4 + count * UNTIL_ENTRY, 0);
	if (r == 0)
		r = journal_meta_put(n->journal, JOURNAL_META_SNAP, (uint8_t[5]){0}, 5, 0);
	/* The store is the sender's now: no kept-aside event is left in it. */
	if (r == 0 && n->rebuild_needed)
		r = journal_meta_put_u64(n->journal, JOURNAL_META_REBUILD, 0, 0);
	if (r == 0)
		n->rebuild_needed = 0;
	if (r == 0)
		r = journal_sync(n->journal);
	if (r == 0)
		n->snap_state = NODE_SNAP_NONE;
out:
	free(until);
	free(val);
	return r;
}

int node_snap_repair_begin(struct journal *j)
{
	uint8_t v[5] = {NODE_SNAP_REPAIRING, 0, 0, 0, 0};

	return journal_meta_put(j, JOURNAL_META_SNAP, v, sizeof(v), 1);
}

int node_snap_repair_end(struct journal *j)
{
	return journal_meta_put(j, JOURNAL_META_SNAP, (uint8_t[5]){NODE_SNAP_NONE}, 5, 1);
}

int node_snap_pending(struct journal *j, int *state)
{
	uint8_t *val = NULL;
	size_t len = 0;
	int r;

	*state = NODE_SNAP_NONE;
	r = journal_meta_get(j, JOURNAL_META_SNAP, (void **)&val, &len);
	if (r == -ENOENT)
		return 0;
	if (r == 0 && len >= 1)
		*state = val[0];
	free(val);
	return r;
}

int node_snap_lenient_err(int r)
{
	switch (r) {
	case -ESTALE:
	case -ENOENT:
	case -EEXIST:
	case -ENOTEMPTY:
	case -ENODATA:
	case -ENOTDIR:
	case -EISDIR:
		return 1;
	default:
		return 0;
	}
}

int node_snap_lenient_locked(struct node *n, const struct event *ev, int r)
{
	unsigned i;

	if (!node_snap_lenient_err(r))
		return 0;
	for (i = 0; i < n->nsnap_until; i++)
		if (n->snap_until[i].origin == ev->origin)
			return ev->seq <= n->snap_until[i].seq;
	return 0;
}

int node_snap_recover(struct node *n, char *err, size_t errlen)
{
	struct snap_plan plan = {0};
	const char *why = NULL, *path = NULL;
	int r;

	if (n->snap_state != NODE_SNAP_INSTALLING && n->snap_state != NODE_SNAP_REPAIRING)
		return 0;
	r = snap_plan_load(n->dir, &plan, &why);
	if (r < 0) {
		snprintf(err, errlen,
			 "%s/%s/plan: cannot read the interrupted snapshot install: %s", n->dir,
			 SNAP_DIR, why ? why : strerror(-r));
		goto out;
	}
	log_warn("%s: finishing %s a stop interrupted (%zu steps)", n->dir,
		 n->snap_state == NODE_SNAP_REPAIRING ? "the install of an fsck --against repair"
						      : "a snapshot install",
		 plan.n);
	node_lock(n);
	r = snap_install(n->dir, n->store->root, &plan, NULL, NULL, &why, &path);
	store_replaced(n->store);
	if (r == 0 && n->snap_state == NODE_SNAP_REPAIRING) {
		r = node_snap_repair_end(n->journal);
		if (r == 0)
			n->snap_state = NODE_SNAP_NONE;
	} else if (r == 0) {
		r = node_snap_finish_locked(n);
	}
	node_unlock(n);
	if (r < 0) {
		snprintf(err, errlen, "%s: snapshot install failed at %s: %s: %s", n->dir,
			 path ? path : "(end)", why ? why : "finishing", strerror(-r));
		goto out;
	}
	r = snap_stage_remove(n->dir);
	if (r < 0)
		log_warn("%s/%s: cannot remove the finished snapshot's staging area: %s", n->dir,
			 SNAP_DIR, strerror(-r));
	r = 0;
out:
	snap_plan_free(&plan);
	return r;
}
