/*
 * snap_recv.c - the receiving side of a snapshot resync, on an outbound link.
 *
 * A round: the peer builds its hash tree (SNAP_BEGIN -> SNAP_INFO with the
 * tree's position), we build ours and compare top-down, asking for the
 * listing of each directory whose digest differs (SNAP_LIST -> SNAP_DIR).
 * Each difference becomes a step of the install plan, in the walk's order;
 * the entries it needs are asked for as they are found (SNAP_GET, up to
 * SNAP_WINDOW outstanding) and staged whole under NODE_DIR/snap/ as they
 * arrive, so the transfer overlaps the comparison.  The staging itself
 * (files, contents, metadata, batched syncfs) runs on a worker thread
 * (snap_pipe.h) while this one reads and decrypts the next frames.  An
 * entry already staged by an earlier round or an earlier attempt (same digest) is not
 * asked for again.  If the peer says a file changed under its tree, the
 * round ends without installing and the next round compares again: what
 * arrived stays staged.
 *
 * A clean round is installed: the plan is saved, the position recorded
 * (node_snap_install_begin), the steps carried out under the node lock,
 * and the node resumes every origin from the snapshot's position.  The
 * kernel's caches of every path the plan touched are invalidated.
 *
 * Our store does not change during the rounds: this node is a replica and
 * every receiver stops applying while a resync is on (receive.c).
 *
 * A heal (snap_recv_heal()) runs the same rounds on one directory, the
 * subtree of a divergence (SNAP_SCOPE): both trees are built of that
 * subtree only, the plan's paths are relative to it until the install,
 * and the install leaves the applied vector alone.  The events after the
 * one that diverged are applied again afterwards: the versions the healed
 * objects carry make the apply engine skip those the subtree already
 * shows.  A subtree that one side does not have as a directory is
 * replaced by its parent.
 *
 * A check (snap_recv_check(), for fsck.ledgerfs --against) runs the same
 * rounds for a stopped node, with no daemon: r is NULL, nothing is locked,
 * our tree is built once (reading every file) and kept for every round.
 * Each step of the plan is also shown to the check (peer_check.c), which
 * may ask for an entry only to compare it (a probe: received, compared
 * with ours, not staged).  Without a repair nothing is staged at all and
 * NODE_DIR is not touched; with one, the steps of the differences the
 * check accepts are installed through a saved plan recorded in the
 * journal, as a resync's, but with the applied vector left alone: a stop
 * in the middle is finished by the node's next start.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/grow.h"
#include "lib/log.h"
#include "resync/merkle.h"
#include "store/path.h"
#include "node/checkpoint.h"
#include "node/rebuild.h"
#include "resync/snap_links.h"
#include "resync/snap_pipe.h"
#include "repl_int.h"

#define SNAP_WINDOW	 64	/* entries asked for and not yet received */
#define SNAP_MAX_ROUNDS	 20	/* rounds before giving up on a busy peer */
#define SNAP_TIMEOUT_MS	 120000 /* longest wait for one frame (a tree build) */
#define SNAP_PROGRESS_MS 2000	/* progress lines in the log */
#define SNAP_FLUSH_OBJS	 256	/* staged objects made durable by one syncfs */
#define SNAP_FLUSH_BYTES (64u << 20)
#define SNAP_FLUSH_MS	 500	     /* and at least this often, so an interruption loses little */
#define SNAP_PIPE_BYTES	 (32u << 20) /* contents received and not yet written */
/* Staging threads: two, so that one's syncfs does not stop the staging (measured). */
#define SNAP_PIPE_WORKERS 2
/*
 * Free space a round leaves on the staging filesystem at least: the node's
 * journal and store usually share it.  A staged file costs its size
 * rounded up to a block, and a block more for its inode and name.
 */
#define SNAP_ROOM_SPARE (16u << 20)
#define SNAP_ROOM_BLOCK 4096u

static const struct snap_pipe_limits pipe_limits = {
    .objs = SNAP_FLUSH_OBJS,
    .bytes = SNAP_FLUSH_BYTES,
    .ms = SNAP_FLUSH_MS,
    .max_bytes = SNAP_PIPE_BYTES,
    .workers = SNAP_PIPE_WORKERS,
};

/* An entry asked for: its plan step (a directory's meta is filled in there). */
struct snap_want {
	uint32_t step;
	uint8_t digest[SNAP_DIGEST_LEN];
	int dir;
	int stage; /* a non-directory to stage; 0: a check's probe, compared only */
};

struct snap_recv {
	struct repl *r; /* NULL for a check */
	struct link *l;
	const char *node_dir;	  /* where the staging area goes */
	int root_fd;		  /* our store's root */
	struct snap_check *check; /* a check (peer_check.c), else NULL */
	const char *peer;
	int64_t t0; /* when the resync or heal started, for the log */
	/* A heal: the subtree compared (NULL: the whole store), and our side of it. */
	const char *scope;
	int scope_fd;
	int absent;		/* the peer has no directory at scope */
	struct snap_heal *heal; /* a heal: what it did, scope its member; NULL otherwise */
	uint64_t origin;	/* a heal: the origin whose position it reports */
	struct snap_stage *stage;
	struct snap_pipe *pipe; /* stages what arrives, on its own thread */
	struct snap_plan plan;
	struct snap_want *q; /* FIFO of outstanding GETs: q[qhead..qn) */
	size_t qhead, qn, qcap;
	int receiving;	   /* q[qhead] is a regular file whose contents are arriving */
	uint64_t obj_left; /* its bytes still to come */
	uint32_t *links;   /* hard-link group -> 1 + plan step of its first name */
	size_t links_cap;
	uint32_t *named; /* OBJ steps of files with other names (snap_link_unchanged()) */
	size_t nnamed, named_cap;
	int dirty;
	/*
	 * A DELETE held back one change: when a FETCH of the same path follows
	 * (the name changed type), the fetch step replaces what is there by
	 * itself, and a DELETE before it could, run again after a crash,
	 * remove what the fetch had installed.
	 */
	struct snap_step del;
	char *del_path;
	uint32_t del_mode; /* our entry's mode and size there, for a check */
	uint64_t del_size;
	int64_t last_progress;
	struct repl_snap_progress prog; /* copied into r->snap under r->lock */
	/* Staging this round: free bytes at its start, bytes it needs, and for a check
	 * whether it stopped staging because they did not fit. */
	uint64_t room, need;
	int no_room;
};

static void publish(struct snap_recv *sr, int force)
{
	struct repl *r = sr->r;
	int64_t now = clock_mono_ms();

	if (sr->check) {
		snap_check_progress(sr->check, sr->prog.listed, sr->prog.bytes, sr->prog.round);
		return;
	}
	/* A heal's progress is the divergence's, not the snapshot resync's (receive.c). */
	if (!sr->scope) {
		pthread_mutex_lock(&r->lock);
		r->snap = sr->prog;
		pthread_mutex_unlock(&r->lock);
	}
	if (!force && now - sr->last_progress < SNAP_PROGRESS_MS)
		return;
	sr->last_progress = now;
	log_info("%s from %s: round %" PRIu64 ", %" PRIu64 " directories compared, %" PRIu64
		 " entries received (%" PRIu64 " bytes), %" PRIu64 " reused, %" PRIu64 " to delete",
		 sr->scope ? "heal" : "snapshot resync", sr->peer, sr->prog.round, sr->prog.listed,
		 sr->prog.fetched, sr->prog.bytes, sr->prog.reused, sr->prog.deleted);
}

static int fail(struct snap_recv *sr, int rv, const char *what)
{
	if (!sr->l->why[0])
		snprintf(sr->l->why, sizeof(sr->l->why), "snapshot resync: %s: %s", what,
			 strerror(-rv));
	return rv;
}

/* A staging error of the pipe's worker, with what it says, as the link's reason. */
static int pipe_failed(struct snap_recv *sr, int rv)
{
	const char *why = NULL;

	if (snap_pipe_error(sr->pipe, &why) && why)
		snprintf(sr->l->why, sizeof(sr->l->why), "%s", why);
	else
		snprintf(sr->l->why, sizeof(sr->l->why), "cannot queue a received entry: %s",
			 strerror(-rv));
	return rv;
}

/* The front entry arrived whole (or changed): drop it from the queue. */
static void pop(struct snap_recv *sr)
{
	sr->qhead++;
	if (sr->qhead == sr->qn)
		sr->qhead = sr->qn = 0;
}

static int take_entry(struct snap_recv *sr, struct proto_snap_entry *e)
{
	struct snap_want *w;
	struct snap_step *st;
	int rv;

	if (sr->qhead == sr->qn || sr->receiving || e->id != sr->q[sr->qhead].step) {
		snprintf(sr->l->why, sizeof(sr->l->why), "snapshot entry not asked for");
		return -EPROTO;
	}
	w = &sr->q[sr->qhead];
	st = &sr->plan.v[w->step];
	if (e->status == SNAP_ENTRY_CHANGED) {
		sr->dirty = 1;
		pop(sr);
		return 0;
	}
	if (w->dir != S_ISDIR(e->meta.mode)) {
		snprintf(sr->l->why, sizeof(sr->l->why), "snapshot entry %.200s has another type",
			 st->path);
		return -EPROTO;
	}
	if (sr->check) {
		const char *why = NULL;

		rv = snap_check_entry(sr->check, w->step, &e->meta, &why);
		if (rv < 0) {
			snprintf(sr->l->why, sizeof(sr->l->why), "%.200s: %s", st->path,
				 why ? why : strerror(-rv));
			return rv;
		}
	}
	if (w->dir) {
		st->mode = e->meta.mode;
		st->uid = e->meta.uid;
		st->gid = e->meta.gid;
		st->xattrs = e->meta.xattrs;
		st->xattrs_len = e->meta.xattrs_len;
		e->meta.xattrs = NULL;
		e->meta.xattrs_len = 0;
		pop(sr);
		return 0;
	}
	if (w->stage) {
		/* Kept for the digest cache once installed (an OBJ step's fid is unused else). */
		st->fid = e->meta.fid;
		rv = snap_pipe_begin(sr->pipe, w->digest, &e->meta, st->path);
		if (rv < 0)
			return pipe_failed(sr, rv);
	}
	sr->prog.fetched++;
	sr->obj_left = S_ISREG(e->meta.mode) ? e->meta.size : 0;
	if (sr->obj_left) {
		sr->receiving = 1;
		return 0;
	}
	if (w->stage && (rv = snap_pipe_commit(sr->pipe)) < 0)
		return pipe_failed(sr, rv);
	pop(sr);
	return 0;
}

static int take_data(struct snap_recv *sr, const struct proto_snap_data *d)
{
	struct snap_want *w;
	int rv;

	if (!sr->receiving || sr->qhead == sr->qn || d->id != sr->q[sr->qhead].step ||
	    d->len > sr->obj_left) {
		snprintf(sr->l->why, sizeof(sr->l->why), "snapshot data not asked for");
		return -EPROTO;
	}
	w = &sr->q[sr->qhead];
	if (sr->check) {
		rv = snap_check_data(sr->check, w->step, d->offset, d->data, d->len);
		if (rv < 0)
			return fail(sr, rv, "cannot compare a received file");
	}
	if (w->stage && (rv = snap_pipe_write(sr->pipe, d->offset, d->data, d->len)) < 0)
		return pipe_failed(sr, rv);
	sr->obj_left -= d->len;
	sr->prog.bytes += d->len;
	if (sr->obj_left)
		return 0;
	sr->receiving = 0;
	if (w->stage && (rv = snap_pipe_commit(sr->pipe)) < 0)
		return pipe_failed(sr, rv);
	pop(sr);
	return 0;
}

/* The next frame within SNAP_TIMEOUT_MS; -ESHUTDOWN as soon as the node stops. */
static int recv_frame(struct snap_recv *sr, struct proto_msg *m)
{
	int64_t deadline = clock_mono_ms() + SNAP_TIMEOUT_MS;
	int rv, stop = 0;

	do {
		rv = link_recv(sr->l, 500, m);
		if (sr->r) {
			pthread_mutex_lock(&sr->r->lock);
			stop = sr->r->stopping;
			pthread_mutex_unlock(&sr->r->lock);
		}
		if (rv == -EAGAIN && stop) {
			snprintf(sr->l->why, sizeof(sr->l->why), "snapshot resync: node stopping");
			return -ESHUTDOWN;
		}
	} while (rv == -EAGAIN && clock_mono_ms() < deadline);
	return rv;
}

/* Read and handle one frame; a SNAP_DIR, SNAP_INFO or SNAP_END goes to *end (NULL: refused). */
static int pump(struct snap_recv *sr, struct proto_msg *end)
{
	struct proto_msg m;
	int rv;

	if (sr->l->out.len) {
		rv = link_flush(sr->l, REPL_SEND_TIMEOUT_MS);
		if (rv < 0)
			return rv;
	}
	rv = recv_frame(sr, &m);
	if (rv == -EAGAIN) {
		snprintf(sr->l->why, sizeof(sr->l->why), "snapshot resync: peer silent for %d s",
			 SNAP_TIMEOUT_MS / 1000);
		return -ETIMEDOUT;
	}
	if (rv < 0)
		return rv;
	switch (m.type) {
	case PROTO_SNAP_ENTRY:
		rv = take_entry(sr, &m.snap_entry);
		break;
	case PROTO_SNAP_DATA:
		rv = take_data(sr, &m.snap_data);
		break;
	case PROTO_SNAP_DIR:
	case PROTO_SNAP_END:
	case PROTO_SNAP_INFO:
		if (!end) {
			snprintf(sr->l->why, sizeof(sr->l->why), "unexpected %s frame",
				 proto_type_name(m.type));
			rv = -EPROTO;
			break;
		}
		*end = m;
		return 0;
	case PROTO_PING:
		rv = proto_put_pong(&sr->l->out, m.nonce);
		break;
	case PROTO_PONG:
	case PROTO_EVENTS:
		/* EVENTS: a subscription the peer sent before it saw us stop it. */
		rv = 0;
		break;
	case PROTO_ERROR:
		snprintf(sr->l->why, sizeof(sr->l->why), "peer refused the snapshot: %s: %.180s",
			 proto_error_name(m.error.code), m.error.msg);
		rv = -ECONNRESET;
		break;
	default:
		snprintf(sr->l->why, sizeof(sr->l->why), "unexpected %s frame",
			 proto_type_name(m.type));
		rv = -EPROTO;
	}
	proto_msg_free(&m);
	if (rv == 0)
		publish(sr, 0);
	return rv;
}

/* Wait for a reply of type, handling entries meanwhile. */
static int await(struct snap_recv *sr, uint8_t type, struct proto_msg *out)
{
	int rv;

	for (;;) {
		memset(out, 0, sizeof(*out));
		rv = pump(sr, out);
		if (rv < 0)
			return rv;
		if (out->type == type)
			return 0;
		if (out->type) {
			snprintf(sr->l->why, sizeof(sr->l->why), "unexpected %s frame",
				 proto_type_name(out->type));
			proto_msg_free(out);
			return -EPROTO;
		}
	}
}

/* merkle_list_fn over the link. */
static int list(void *arg, const char *path, struct merkle_dir **out)
{
	struct snap_recv *sr = arg;
	struct proto_msg m;
	const char *why = NULL;
	int rv;

	rv = proto_put_snap_path(&sr->l->out, PROTO_SNAP_LIST, 0, path);
	if (rv == 0)
		rv = await(sr, PROTO_SNAP_DIR, &m);
	if (rv < 0)
		return rv;
	if (strcmp(m.snap_path.path, path) != 0) {
		snprintf(sr->l->why, sizeof(sr->l->why), "listing of another directory");
		rv = -EPROTO;
	} else {
		rv = merkle_dir_decode(m.snap_path.listing, m.snap_path.listing_len, out, &why);
		if (rv < 0)
			snprintf(sr->l->why, sizeof(sr->l->why), "bad listing of %.200s: %s", path,
				 why ? why : strerror(-rv));
	}
	proto_msg_free(&m);
	sr->prog.listed++;
	return rv;
}

static int ask(struct snap_recv *sr, uint32_t step, const uint8_t *digest, int dir, int stage)
{
	int rv;

	while (sr->qn - sr->qhead >= SNAP_WINDOW)
		if ((rv = pump(sr, NULL)) < 0)
			return rv;
	rv = grow_array(&sr->q, &sr->qcap, sr->qn + 1);
	if (rv < 0)
		return rv;
	sr->q[sr->qn] = (struct snap_want){.step = step, .dir = dir, .stage = stage};
	if (digest)
		memcpy(sr->q[sr->qn].digest, digest, SNAP_DIGEST_LEN);
	sr->qn++;
	return proto_put_snap_path(&sr->l->out, PROTO_SNAP_GET, step, sr->plan.v[step].path);
}

/* The first name of a hard-link group seen in this round: 1 + its step, or 0. */
static int link_seen(struct snap_recv *sr, uint32_t link, uint32_t step, uint32_t *first)
{
	size_t old_cap = sr->links_cap;

	if (grow_array(&sr->links, &sr->links_cap, (size_t)link + 1) < 0)
		return -ENOMEM;
	memset(sr->links + old_cap, 0, (sr->links_cap - old_cap) * sizeof(*sr->links));
	*first = sr->links[link];
	if (!*first)
		sr->links[link] = step + 1;
	return 0;
}

/* Note an OBJ step whose file has other names on the peer. */
static int note_named(struct snap_recv *sr, uint32_t step)
{
	int rv = grow_array(&sr->named, &sr->named_cap, sr->nnamed + 1);

	if (rv == 0)
		sr->named[sr->nnamed++] = step;
	return rv;
}

static int plan_step(struct snap_recv *sr, const struct snap_step *st)
{
	int rv = snap_plan_add(&sr->plan, st);

	if (rv < 0)
		snprintf(sr->l->why, sizeof(sr->l->why), "cannot plan %.200s: %s", st->path,
			 strerror(-rv));
	return rv;
}

/* Plan the DELETE held back, if any, unless path (may be NULL) replaces it. */
static int flush_delete(struct snap_recv *sr, const char *path)
{
	int rv = 0;

	if (!sr->del_path)
		return 0;
	if (!path || strcmp(path, sr->del_path) != 0) {
		uint32_t step = (uint32_t)sr->plan.n;
		int probe = 0;

		rv = plan_step(sr, &sr->del);
		sr->prog.deleted++;
		if (rv == 0 && sr->check)
			rv = snap_check_step(sr->check, step, sr->del_path, sr->del_mode,
					     sr->del_size, NULL, &probe);
	}
	free(sr->del_path);
	sr->del_path = NULL;
	return rv;
}

/*
 * Is there room to stage a file of size bytes?  0 yes.  When not, a check
 * stops staging (1: it goes on comparing, so that it can say how much a
 * repair needs, and repairs nothing), a resync ends with -ENOSPC.
 */
static int room_for(struct snap_recv *sr, uint64_t size)
{
	sr->need += (size + SNAP_ROOM_BLOCK - 1) / SNAP_ROOM_BLOCK * SNAP_ROOM_BLOCK +
		    SNAP_ROOM_BLOCK;
	if (sr->no_room)
		return 1;
	if (sr->need + SNAP_ROOM_SPARE <= sr->room)
		return 0;
	if (sr->check) {
		sr->no_room = 1;
		return 1;
	}
	snprintf(sr->l->why, sizeof(sr->l->why),
		 "%s: staging needs more than %" PRIu64 " bytes free in %.120s/%s (%" PRIu64
		 " free, %u MiB kept spare)",
		 sr->scope ? "heal" : "snapshot resync", sr->need, sr->node_dir, SNAP_DIR,
		 sr->room, SNAP_ROOM_SPARE >> 20);
	return -ENOSPC;
}

/* merkle_change_fn: one plan step per change, asking for what it needs. */
static int change(void *arg, enum merkle_change what, const char *path,
		  const struct merkle_entry *theirs, const struct merkle_entry *mine)
{
	struct snap_recv *sr = arg;
	struct snap_step st = {.path = (char *)path};
	uint32_t step, first = 0, mode_here = mine ? mine->mode : 0;
	uint64_t size_here = mine ? mine->size : 0;
	int rv, staged = 0, probe = 0;

	/* A name that changed type: its held-back DELETE is what is here. */
	if (what == MERKLE_FETCH && !mine && sr->del_path && !strcmp(path, sr->del_path)) {
		mode_here = sr->del_mode;
		size_here = sr->del_size;
	}
	rv = flush_delete(sr, what == MERKLE_FETCH ? path : NULL);
	if (rv < 0)
		return rv;
	step = (uint32_t)sr->plan.n;
	if (what == MERKLE_DELETE) {
		sr->del_path = strdup(path);
		if (!sr->del_path)
			return -ENOMEM;
		sr->del = (struct snap_step){.op = SNAP_OP_DELETE, .path = sr->del_path};
		sr->del_mode = mode_here;
		sr->del_size = size_here;
		if (mine)
			sr->del.fid = mine->fid;
		return 0;
	} else if (S_ISDIR(theirs->mode)) {
		st.op = SNAP_OP_DIR;
	} else {
		if (theirs->link && (rv = link_seen(sr, theirs->link, step, &first)) < 0)
			return rv;
		if (first) {
			st.op = SNAP_OP_LINK;
			st.link_to = sr->plan.v[first - 1].path;
		} else {
			if (theirs->link && (rv = note_named(sr, step)) < 0)
				return rv;
			st.op = SNAP_OP_OBJ;
			memcpy(st.digest, theirs->digest, SNAP_DIGEST_LEN);
			/* A check that does not repair stages nothing, and has no staging area. */
			staged = sr->stage ? snap_stage_has(sr->stage, theirs->digest) : 0;
			if (staged < 0)
				return staged;
			sr->prog.reused += staged;
		}
	}
	rv = plan_step(sr, &st);
	if (rv == 0 && sr->check)
		rv = snap_check_step(sr->check, step, path, mode_here, size_here, theirs, &probe);
	if (rv < 0)
		return rv;
	if (st.op == SNAP_OP_DIR)
		return ask(sr, step, NULL, 1, 0);
	if (st.op == SNAP_OP_OBJ && !staged && sr->stage) {
		rv = room_for(sr, theirs->size);
		if (rv <= 0)
			return rv ? rv : ask(sr, step, theirs->digest, 0, 1);
	}
	if (probe)
		return ask(sr, step, theirs->digest, 0, 0);
	return 0;
}

/* New names of files this node has become links to them (snap_links.h). */
static int link_named(struct snap_recv *sr, const struct merkle *mine)
{
	size_t linked = 0;
	int rv = snap_link_unchanged(&sr->plan, sr->named, sr->nnamed, mine, &linked);

	if (rv < 0)
		snprintf(sr->l->why, sizeof(sr->l->why), "cannot plan hard links: %s",
			 strerror(-rv));
	else if (linked)
		log_info("snapshot resync from %s: %zu new names of files this node has become "
			 "hard links",
			 sr->peer, linked);
	return rv;
}

/* Vectors a (the position) and b (the end) by origin, into from[] and until[]. */
static uint32_t merge_vectors(const struct proto_snap_vec *a, const struct proto_snap_vec *b,
			      struct evid *from, struct evid *until)
{
	uint32_t i = 0, j = 0, n = 0;

	while ((i < a->count || j < b->count) && n < NODE_MAX_FENCES) {
		uint64_t oa = i < a->count ? a->vec[i].origin : UINT64_MAX;
		uint64_t ob = j < b->count ? b->vec[j].origin : UINT64_MAX;
		uint64_t o = oa < ob ? oa : ob;

		from[n] = (struct evid){o, oa == o ? a->vec[i].seq : 0};
		until[n] = (struct evid){o, ob == o ? b->vec[j].seq : from[n].seq};
		i += oa == o;
		j += ob == o;
		n++;
	}
	return n;
}

/* One round: compare, fetch, end.  *info and *end are the round's vectors. */
static int run_round(struct snap_recv *sr, struct proto_msg *info, struct proto_msg *end)
{
	struct repl *r = sr->r;
	struct merkle *mine = NULL;
	struct merkle_diff_stats stats = {0};
	uint64_t entries = 0;
	int64_t t0 = clock_mono_ms(), t_mine, t_info = 0, t_recv = 0;
	int rv;

	sr->prog.round++;
	sr->prog.reused = sr->prog.deleted = 0;
	sr->dirty = 0;
	free(sr->del_path);
	sr->del_path = NULL;
	snap_plan_free(&sr->plan);
	if (sr->links)
		memset(sr->links, 0, sr->links_cap * sizeof(*sr->links));
	sr->nnamed = 0;
	if (sr->check)
		snap_check_round(sr->check);
	sr->need = 0;
	sr->no_room = 0;
	if (sr->stage && (rv = snap_stage_room(sr->stage, &sr->room)) < 0)
		return fail(sr, rv, "cannot read the staging area's free space");
	/* Both trees are built at once: the peer's while we build ours. */
	if (sr->scope)
		rv = proto_put_snap_path(&sr->l->out, PROTO_SNAP_SCOPE, (uint32_t)sr->prog.round,
					 sr->scope);
	else
		rv = proto_put_snap_round(&sr->l->out, PROTO_SNAP_BEGIN, sr->prog.round);
	if (rv == 0)
		rv = link_flush(sr->l, REPL_SEND_TIMEOUT_MS);
	if (rv < 0)
		return rv;
	if (sr->check) {
		/* The check's tree: the store does not change under a stopped node. */
		rv = snap_check_tree(sr->check, &mine, &entries);
	} else {
		node_lock(r->n);
		if (sr->scope)
			rv = merkle_build(sr->scope_fd, &mine, &entries);
		else
			rv = repl_build_tree(r, &mine, &entries);
		node_unlock(r->n);
	}
	t_mine = clock_mono_ms();
	if (rv < 0)
		return fail(sr, rv, "cannot build this store's hash tree");
	rv = await(sr, PROTO_SNAP_INFO, info);
	t_info = clock_mono_ms();
	if (rv < 0) {
		if (!sr->check)
			merkle_free(mine);
		return rv;
	}
	if (sr->scope && info->snap_vec.entries == 0) {
		merkle_free(mine);
		sr->absent = 1;
		return 0;
	}
	sr->prog.entries = info->snap_vec.entries;
	rv = merkle_diff(mine, list, sr, change, sr, &stats);
	if (rv == 0)
		rv = flush_delete(sr, NULL);
	while (rv == 0 && sr->qn > sr->qhead)
		rv = pump(sr, NULL);
	if (rv == 0 && sr->pipe && (rv = snap_pipe_drain(sr->pipe, NULL)) < 0)
		rv = pipe_failed(sr, rv);
	t_recv = clock_mono_ms();
	/* The worker is idle: the stage is ours again. */
	if (rv == 0 && sr->stage)
		rv = snap_stage_flush(sr->stage);
	if (rv == 0)
		rv = proto_put_snap_round(&sr->l->out, PROTO_SNAP_DONE, sr->prog.round);
	if (rv == 0)
		rv = await(sr, PROTO_SNAP_END, end);
	if (rv == 0 && !sr->dirty)
		rv = link_named(sr, mine);
	if (!sr->check)
		merkle_free(mine);
	if (rv < 0)
		return fail(sr, rv, "transfer failed");
	publish(sr, 1);
	/* Where a round's time went, to tell a slow peer from a slow disk here. */
	log_info("%s from %s: round %" PRIu64 ": own tree %.1f s, peer's tree %.1f s "
		 "more, transfer %.1f s, last flush and end %.1f s",
		 sr->scope ? "heal" : "snapshot resync", sr->peer, sr->prog.round,
		 (double)(t_mine - t0) / 1000.0, (double)(t_info - t_mine) / 1000.0,
		 (double)(t_recv - t_info) / 1000.0, (double)(clock_mono_ms() - t_recv) / 1000.0);
	return 0;
}

/*
 * The installed files' digests are the sender's, which name their objects:
 * remember them, so that the next resync does not read these files again.
 * Node lock held.  Best effort: a file not remembered is only read again.
 */
static void remember_digests(struct snap_recv *sr)
{
	struct repl *r = sr->r;
	char path[4096];
	size_t i;
	int rv = 0;

	pthread_mutex_lock(&r->digests_lock);
	for (i = 0; i < sr->plan.n && rv == 0 && r->digests; i++) {
		const struct snap_step *st = &sr->plan.v[i];
		struct stat sb;

		if (st->op != SNAP_OP_OBJ || fid_is_zero(st->fid) ||
		    fstatat(node_store(r->n)->root, st->path, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		rv = merkle_cache_put(r->digests, &sb, st->fid, st->digest);
	}
	snprintf(path, sizeof(path), "%s/%s", node_dir(r->n), REPL_DIGESTS_FILE);
	if (rv == 0 && r->digests)
		rv = merkle_cache_save(path, r->digests);
	pthread_mutex_unlock(&r->digests_lock);
	if (rv < 0)
		log_warn("%s: cannot remember the installed files' digests: %s", path,
			 strerror(-rv));
}

/* Invalidate the kernel's view of every path the plan changes, around the install. */
static int install(struct snap_recv *sr, const struct proto_msg *info, const struct proto_msg *end)
{
	struct repl *r = sr->r;
	struct evid from[NODE_MAX_FENCES], until[NODE_MAX_FENCES];
	char kept[PATH_MAX];
	void **cookies = calloc(sr->plan.n ? sr->plan.n : 1, sizeof(*cookies));
	const char *why = NULL, *path = NULL;
	uint32_t count;
	size_t i;
	int rv;

	if (!cookies)
		return -ENOMEM;
	count = merge_vectors(&info->snap_vec, &end->snap_vec, from, until);
	rv = snap_plan_save(sr->stage, &sr->plan);
	if (rv == 0)
		rv = node_snap_install_begin(r->n, from, until, count);
	if (rv < 0) {
		free(cookies);
		return fail(sr, rv, "cannot record the install plan");
	}
	for (i = 0; r->hooks.before && i < sr->plan.n; i++) {
		struct event ev = {.type = EV_UNLINK, .path = sr->plan.v[i].path};

		r->hooks.before(r->hooks.arg, &ev, &cookies[i]);
	}
	node_lock(r->n);
	/* Descriptors an apply_cache holds may name what the install replaces. */
	__atomic_add_fetch(&node_store(r->n)->changes, 1, __ATOMIC_RELAXED);
	/* Files a kept-aside tail made stay reachable for tail-export. */
	if (node_rebuild_needed_locked(r->n)) {
		rv = rebuild_keep_links(r->n, kept, sizeof(kept));
		if (rv == 0)
			log_info("kept the store as it was in %s (ledgerctl tail-export)", kept);
	}
	if (rv == 0)
		rv = snap_install(node_dir(r->n), node_store(r->n)->root, &sr->plan, NULL, NULL, &why, &path);
	store_replaced(node_store(r->n));
	if (rv == 0)
		rv = node_snap_finish_locked(r->n);
	if (rv == 0)
		remember_digests(sr);
	node_unlock(r->n);
	for (i = 0; r->hooks.after && i < sr->plan.n; i++) {
		struct event ev = {.type = EV_UNLINK, .path = sr->plan.v[i].path};

		r->hooks.after(r->hooks.arg, &ev, 0, cookies[i]);
	}
	free(cookies);
	if (rv < 0) {
		snprintf(sr->l->why, sizeof(sr->l->why),
			 "snapshot install failed at %.200s: %s: %s", path ? path : "(end)",
			 why ? why : "", strerror(-rv));
		return rv;
	}
	return 0;
}

/* After a resync's round: another while the peer's files changed. */
static int resync_after_round(struct snap_recv *sr)
{
	if (sr->dirty)
		log_info("snapshot resync from %s: files changed during round %" PRIu64
			 "; comparing again",
			 sr->peer, sr->prog.round);
	return sr->dirty;
}

/* Install a resync's last round, whose frames are info and end, and say so. */
static int resync_done(struct snap_recv *sr, const struct proto_msg *info,
		       const struct proto_msg *end)
{
	int rv = install(sr, info, end);

	if (rv < 0)
		return rv;
	log_info("snapshot resync from %s done in %.1f s: %" PRIu64 " entries in the tree, %" PRIu64
		 " received (%" PRIu64 " bytes), %" PRIu64 " reused, %" PRIu64
		 " deleted, %zu steps installed, %" PRIu64 " rounds",
		 sr->peer, (double)(clock_mono_ms() - sr->t0) / 1000.0, sr->prog.entries,
		 sr->prog.fetched, sr->prog.bytes, sr->prog.reused, sr->prog.deleted, sr->plan.n,
		 sr->prog.round);
	return 0;
}

static int heal_after_round(struct snap_recv *sr);
static int heal_done(struct snap_recv *sr, const struct proto_msg *info,
		     const struct proto_msg *end);

/*
 * A check's steady round: the check reports what differs and picks the
 * steps to install.  An install that fails is the check's to report; only
 * a failure to report or plan ends the check with an error.  *keep is set
 * when an install was begun and not finished: its staging area and plan
 * stay for the node's next start.
 */
static int check_done(struct snap_recv *sr, const struct proto_msg *info, int *keep)
{
	struct snap_plan accepted = {0};
	int rv;

	if (sr->no_room)
		snap_check_no_room(sr->check, sr->need + SNAP_ROOM_SPARE, sr->room);
	rv = snap_check_end(sr->check, info->snap_vec.vec, info->snap_vec.count, &sr->plan,
			    &accepted);
	if (rv < 0) {
		snap_plan_free(&accepted);
		return fail(sr, rv, "cannot plan the repair");
	}
	if (accepted.n)
		*keep = snap_check_install(sr->check, sr->stage, &accepted);
	snap_plan_free(&accepted);
	return 0;
}

/*
 * The receive shared by a resync and a heal (sr->heal): the staging area
 * and its pipe, rounds until one finds nothing changed (at most
 * SNAP_MAX_ROUNDS), the install of that round, then the staging area
 * removed.  Whatever sr holds is released on return, but for a heal's
 * scope_fd.  0, or a negative errno with the link's reason set.
 */
static int receive(struct snap_recv *sr)
{
	const char *what = sr->heal ? "heal" : sr->check ? "check" : "snapshot resync";
	struct proto_msg info = {0}, end = {0};
	struct repl *r = sr->r;
	int resync = !sr->heal && !sr->check;
	int rv, keep = 0;

	/* A check that does not repair writes nothing: no staging area. */
	if (!sr->check || snap_check_repairs(sr->check)) {
		rv = snap_stage_open(sr->node_dir, &sr->stage);
		if (rv < 0) {
			rv = fail(sr, rv, "cannot open the staging area");
			goto out;
		}
		rv = snap_pipe_start(sr->stage, &pipe_limits, &sr->pipe);
		if (rv < 0) {
			rv = fail(sr, rv, "cannot start the staging thread");
			goto out;
		}
	}
	if (resync)
		sr->prog.active = 1;
	snprintf(sr->prog.peer, sizeof(sr->prog.peer), "%s", sr->peer);
	if (resync)
		publish(sr, 0);
	do {
		proto_msg_free(&info);
		proto_msg_free(&end);
		if (sr->prog.round == SNAP_MAX_ROUNDS) {
			snprintf(sr->l->why, sizeof(sr->l->why),
				 "%s: the peer's files kept changing under %d rounds", what,
				 SNAP_MAX_ROUNDS);
			rv = -EAGAIN;
			goto out;
		}
		sr->absent = 0;
		rv = run_round(sr, &info, &end);
		if (rv < 0)
			goto out;
		if (sr->heal)
			rv = heal_after_round(sr);
		else
			rv = sr->check ? sr->dirty : resync_after_round(sr);
		if (rv < 0)
			goto out;
	} while (rv);
	if (sr->heal)
		rv = heal_done(sr, &info, &end);
	else
		rv = sr->check ? check_done(sr, &info, &keep) : resync_done(sr, &info, &end);
	if (rv < 0)
		goto out;
	snap_pipe_stop(sr->pipe);
	sr->pipe = NULL;
	if (sr->stage && !keep) {
		snap_stage_close(sr->stage);
		sr->stage = NULL;
		rv = snap_stage_remove(sr->node_dir);
		if (rv < 0)
			log_warn("%s/%s: cannot remove the staging area: %s", sr->node_dir,
				 SNAP_DIR, strerror(-rv));
	}
	rv = 0;
out:
	if (resync) {
		sr->prog.active = 0;
		sr->prog.done = rv == 0;
		pthread_mutex_lock(&r->lock);
		r->snap = sr->prog;
		pthread_mutex_unlock(&r->lock);
	}
	snap_pipe_stop(sr->pipe);
	snap_stage_close(sr->stage);
	snap_plan_free(&sr->plan);
	proto_msg_free(&info);
	proto_msg_free(&end);
	free(sr->q);
	free(sr->links);
	free(sr->named);
	free(sr->del_path);
	return rv;
}

int snap_recv_run(struct repl *r, struct link *l, const char *peer)
{
	struct snap_recv sr = {.r = r,
			       .l = l,
			       .node_dir = node_dir(r->n),
			       .root_fd = node_store(r->n)->root,
			       .peer = peer,
			       .t0 = clock_mono_ms()};

	log_info("snapshot resync from %s: starting", peer);
	return receive(&sr);
}

/* The store path of path, relative to scope: NULL with -ENOMEM.  free() it. */
static char *rebase(const char *scope, const char *path)
{
	char *out = NULL;

	if (path_is_root(scope))
		return strdup(path);
	if (path_is_root(path))
		return strdup(scope);
	return asprintf(&out, "%s/%s", scope, path) < 0 ? NULL : out;
}

/* The plan p, whose paths are relative to scope, with store paths into *out. */
static int plan_rebase(const struct snap_plan *p, const char *scope, struct snap_plan *out)
{
	size_t i;
	int rv = 0;

	for (i = 0; i < p->n && rv == 0; i++) {
		struct snap_step st = p->v[i];
		char *path = rebase(scope, st.path);
		char *link_to = st.link_to ? rebase(scope, st.link_to) : NULL;

		if (!path || (st.link_to && !link_to)) {
			rv = -ENOMEM;
		} else {
			st.path = path;
			st.link_to = link_to;
			rv = snap_plan_add(out, &st);
		}
		free(link_to);
		free(path);
	}
	return rv;
}

/* The plan's steps as EV_HEALED lists them, cut at EVENT_HEALED_LIST_MAX bytes. */
static int heal_list(const struct snap_plan *p, struct snap_heal *h)
{
	static const char *const ops[] = {"?", "delete", "dir", "fetch", "link"};
	size_t i, cap = 0, len = 0;
	char *buf = NULL;
	int rv = 0;

	for (i = 0; i < p->n && rv == 0; i++) {
		const struct snap_step *st = &p->v[i];
		const char *op = st->op < sizeof(ops) / sizeof(ops[0]) ? ops[st->op] : "?";
		size_t need = strlen(op) + strlen(st->path) + 2;
		int cut = len + need > EVENT_HEALED_LIST_MAX - 4;

		rv = grow_array(&buf, &cap, len + (cut ? 4 : need) + 1);
		if (rv < 0)
			break;
		len +=
		    (size_t)snprintf(buf + len, cap - len, cut ? "...\n" : "%s %s\n", op, st->path);
		if (cut)
			break;
	}
	if (rv < 0) {
		free(buf);
		return rv;
	}
	h->list = buf;
	h->list_len = len;
	return 0;
}

/* Install a heal's plan (its paths relative to sr->scope) into the store. */
static int install_heal(struct snap_recv *sr, struct snap_heal *h)
{
	struct repl *r = sr->r;
	struct snap_plan full = {0};
	void **cookies = NULL;
	const char *why = NULL, *path = NULL;
	size_t i;
	int rv;

	rv = plan_rebase(&sr->plan, sr->scope, &full);
	if (rv == 0)
		rv = heal_list(&full, h);
	if (rv == 0 && !(cookies = calloc(full.n ? full.n : 1, sizeof(*cookies))))
		rv = -ENOMEM;
	if (rv < 0) {
		snap_plan_free(&full);
		return fail(sr, rv, "cannot plan the install");
	}
	for (i = 0; r->hooks.before && i < full.n; i++) {
		struct event ev = {.type = EV_UNLINK, .path = full.v[i].path};

		r->hooks.before(r->hooks.arg, &ev, &cookies[i]);
	}
	node_lock(r->n);
	/* Descriptors an apply_cache holds may name what the install replaces. */
	__atomic_add_fetch(&node_store(r->n)->changes, 1, __ATOMIC_RELAXED);
	rv = snap_install(node_dir(r->n), node_store(r->n)->root, &full, NULL, NULL, &why, &path);
	store_replaced(node_store(r->n));
	/* No redo may write older data over what the heal installed. */
	if (rv == 0) {
		rv = node_checkpoint(r->n, NODE_CKPT_SYNC);
		if (rv < 0)
			why = "store checkpoint after the install";
	}
	node_unlock(r->n);
	for (i = 0; r->hooks.after && i < full.n; i++) {
		struct event ev = {.type = EV_UNLINK, .path = full.v[i].path};

		r->hooks.after(r->hooks.arg, &ev, 0, cookies[i]);
	}
	free(cookies);
	if (rv < 0)
		snprintf(sr->l->why, sizeof(sr->l->why), "heal install failed at %.200s: %s%s%s",
			 path ? path : "(end)", why ? why : "", why ? ": " : "", strerror(-rv));
	h->entries = full.n;
	snap_plan_free(&full);
	return rv;
}

/*
 * After a heal's round: a subtree the peer has no directory at is widened
 * to its parent, and compared again; so is one whose files changed.
 */
static int heal_after_round(struct snap_recv *sr)
{
	struct snap_heal *h = sr->heal;
	int rv;

	if (!sr->absent)
		return sr->dirty;
	if (path_is_root(h->scope)) {
		snprintf(sr->l->why, sizeof(sr->l->why), "heal: the peer has no store root");
		return -EPROTO;
	}
	log_info("heal from %s: %s is not a directory there; comparing its parent", sr->peer,
		 h->scope);
	path_up(h->scope);
	close(sr->scope_fd);
	sr->scope_fd = -1;
	rv = path_open(node_store(sr->r->n)->root, h->scope, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0,
		       &sr->scope_fd);
	return rv < 0 ? fail(sr, rv, h->scope) : 1;
}

/* Install a heal's last round, whose frames are info and end, and say so. */
static int heal_done(struct snap_recv *sr, const struct proto_msg *info,
		     const struct proto_msg *end)
{
	struct snap_heal *h = sr->heal;
	uint32_t i;
	int rv;

	for (i = 0; i < info->snap_vec.count; i++)
		if (info->snap_vec.vec[i].origin == sr->origin)
			h->position = info->snap_vec.vec[i].seq;
	h->until = h->position;
	for (i = 0; i < end->snap_vec.count; i++)
		if (end->snap_vec.vec[i].origin == sr->origin &&
		    end->snap_vec.vec[i].seq > h->until)
			h->until = end->snap_vec.vec[i].seq;
	rv = install_heal(sr, h);
	if (rv < 0)
		return rv;
	h->bytes = sr->prog.bytes;
	log_info("heal from %s done in %.1f s: subtree %s at %" PRIu64 ", %" PRIu64
		 " entries in its tree, %" PRIu64 " received (%" PRIu64 " bytes), %" PRIu64
		 " deleted, %" PRIu64 " steps installed",
		 sr->peer, (double)(clock_mono_ms() - sr->t0) / 1000.0, h->scope, h->position,
		 sr->prog.entries, sr->prog.fetched, sr->prog.bytes, sr->prog.deleted, h->entries);
	return 0;
}

int snap_recv_heal(struct repl *r, struct link *l, const char *peer, const char *scope,
		   uint64_t origin, struct snap_heal *h)
{
	struct snap_recv sr = {.r = r,
			       .l = l,
			       .node_dir = node_dir(r->n),
			       .root_fd = node_store(r->n)->root,
			       .peer = peer,
			       .t0 = clock_mono_ms(),
			       .scope_fd = -1,
			       .heal = h,
			       .origin = origin};
	int rv;

	memset(h, 0, sizeof(*h));
	h->scope = strdup(scope);
	if (!h->scope) {
		snprintf(l->why, sizeof(l->why), "heal: out of memory");
		return -ENOMEM;
	}
	sr.scope = h->scope;
	/* Our side of the subtree: the nearest directory that is one here. */
	for (;;) {
		rv = path_open(node_store(r->n)->root, h->scope, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0,
			       &sr.scope_fd);
		if (rv == 0 || path_is_root(h->scope) ||
		    (rv != -ENOENT && rv != -ENOTDIR && rv != -ELOOP))
			break;
		path_up(h->scope);
	}
	if (rv < 0) {
		rv = fail(&sr, rv, h->scope);
	} else {
		log_info("heal from %s: comparing subtree %s", peer, h->scope);
		rv = receive(&sr);
	}
	if (rv < 0) {
		free(h->list);
		h->list = NULL;
		h->list_len = 0;
		free(h->scope);
		h->scope = NULL;
	}
	if (sr.scope_fd >= 0)
		close(sr.scope_fd);
	return rv;
}

int snap_recv_check(struct link *l, const char *peer, const char *node_dir, int root_fd,
		    struct snap_check *c)
{
	struct snap_recv sr = {.l = l,
			       .node_dir = node_dir,
			       .root_fd = root_fd,
			       .check = c,
			       .peer = peer,
			       .t0 = clock_mono_ms(),
			       .scope_fd = -1};

	return receive(&sr);
}
