/*
 * receive.c - the outbound link to one peer, over which we receive events.
 *
 * The thread dials the peer, says HELLO with our applied vector, and
 * subscribes (FETCH) to every origin this peer should feed us: the origin
 * itself while its link is up, otherwise the connected peer that holds the
 * most of it (relay).  The choice is re-made whenever a link comes or goes,
 * so a catch-up switches source mid-way; progress is our applied vector, so
 * nothing is fetched twice and nothing is skipped.  A frame's events are
 * journaled and applied in (origin, seq) order through node_apply_remote(),
 * one journal write per run.  ACKs go back once the journal sync that
 * covers them is done, the next frames being applied meanwhile: an ACK
 * means durable and applied.
 *
 * Finding a peer that holds events we lack right after a start or a lost
 * link is an outage: we journal an OUTAGE event then, and a RECOVERED event
 * per origin with the range fetched once we hold what the peers had.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ledgerfs/clock.h"
#include "ledgerfs/hello.h"
#include "ledgerfs/log.h"
#include "repl_int.h"

struct receiver {
	struct repl *r;
	struct repl_peer *p;
	struct link *l;
	char name[CONFIG_NAME_MAX];
	int subscribed[REPL_MAX_ORIGINS];
	uint64_t acked[REPL_MAX_ORIGINS]; /* highest seq acked on this link, per origin */
	/* ACKs waiting for the journal sync of ticket ack_ticket, if ack_pending. */
	int ack_pending;
	uint64_t ack_ticket;
	unsigned ack_n;
	uint64_t ack_origin[REPL_MAX_ORIGINS], ack_seq[REPL_MAX_ORIGINS];
	unsigned frames_unsynced;  /* EVENTS frames taken since the last sync was asked for */
	int64_t last_in, last_out; /* monotonic ms of the last frame each way */
	uint64_t ping_nonce;
	/* The frame being taken, kept at its high-water mark: cap entries each. */
	struct event *evs; /* its events, decoded */
	int *res;	   /* per event: node_apply_remote()'s res */
	void **cookies;	   /* per event: the hooks' cookies, before and after the run */
	size_t cap;
	uint64_t bytes; /* record bytes of the frame decoded */
};

/* Journal a node-state event of our own (OUTAGE, RECOVERED). */
static void commit_state_event(struct repl *r, struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int rv;

	pthread_mutex_lock(&r->n->lock);
	rv = node_commit_locked(r->n, ev, &ctx);
	pthread_mutex_unlock(&r->n->lock);
	if (rv < 0) {
		log_err("cannot journal the %s event: %s", event_type_name(ev->type),
			strerror(-rv));
		return;
	}
	pthread_mutex_lock(&r->lock);
	repl_note(r, ev);
	pthread_mutex_unlock(&r->lock);
}

/*
 * The peer holds events of the primary that we lack, found right after a
 * start or a lost link: we were away.  Other origins only make node-state
 * events, which a peer that restarted always has a few new of.
 */
static void maybe_outage(struct receiver *rc)
{
	struct repl *r = rc->r;
	struct event ev = {.type = EV_OUTAGE};
	uint64_t self = r->cfg.node_id;
	int behind = -1;
	unsigned i;

	if (__atomic_load_n(&r->n->primary, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->norigins; i++)
		if (r->origins[i] == r->primary_id && r->origins[i] != self &&
		    rc->p->vec[i] > r->applied[i])
			behind = (int)i;
	if (behind < 0) {
		pthread_mutex_unlock(&r->lock);
		return;
	}
	if (r->recovering) {
		/* A second source only raises what there is to fetch. */
		if (rc->p->vec[behind] > r->rec_target[behind])
			r->rec_target[behind] = rc->p->vec[behind];
		pthread_mutex_unlock(&r->lock);
		return;
	}
	r->recovering = 1;
	memset(r->rec_target, 0, sizeof(r->rec_target));
	r->rec_first[behind] = r->applied[behind] + 1;
	r->rec_target[behind] = rc->p->vec[behind];
	pthread_mutex_unlock(&r->lock);
	log_warn("peer %s holds events of the primary this node lacks: recording an outage and "
		 "catching up",
		 rc->name);
	commit_state_event(r, &ev);
}

/* Once we hold everything the peers advertised, journal RECOVERED per origin. */
static void maybe_recovered(struct repl *r)
{
	struct evid first[REPL_MAX_ORIGINS];
	uint64_t last[REPL_MAX_ORIGINS];
	unsigned i, k = 0;

	pthread_mutex_lock(&r->lock);
	if (!r->recovering) {
		pthread_mutex_unlock(&r->lock);
		return;
	}
	for (i = 0; i < r->norigins; i++) {
		if (r->rec_target[i] && r->applied[i] < r->rec_target[i]) {
			pthread_mutex_unlock(&r->lock);
			return;
		}
	}
	for (i = 0; i < r->norigins; i++) {
		if (r->rec_target[i] && r->rec_target[i] >= r->rec_first[i]) {
			first[k] = (struct evid){r->origins[i], r->rec_first[i]};
			last[k++] = r->applied[i];
		}
	}
	r->recovering = 0;
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < k; i++) {
		struct event ev = {.type = EV_RECOVERED, .base = first[i], .length = last[i]};

		log_info("recovered: fetched events %016" PRIx64 ":%" PRIu64 "..%" PRIu64,
			 first[i].origin, first[i].seq, last[i]);
		commit_state_event(r, &ev);
	}
}

/*
 * Should this peer feed us origin i?  The origin itself while connected;
 * otherwise the connected peer advertising the most of it.  r->lock held.
 */
static int is_source(struct repl *r, struct repl_peer *p, unsigned i)
{
	uint64_t origin = r->origins[i], best = 0;
	struct repl_peer *pick = NULL;
	unsigned k;

	/* A store about to be replaced by a snapshot takes no events. */
	if (origin == r->cfg.node_id || r->snap_needed)
		return 0;
	for (k = 0; k < r->npeers; k++) {
		struct repl_peer *q = r->peers[k];

		if (q->state != REPL_PEER_CONNECTED)
			continue;
		if (q->cfg.id == origin)
			return q == p;
		if (!pick || q->vec[i] > best) {
			pick = q;
			best = q->vec[i];
		}
	}
	return pick == p;
}

/* Send FETCH to start or stop the origins whose source choice changed. */
static int update_subscriptions(struct receiver *rc)
{
	struct repl *r = rc->r;
	unsigned i;
	int r2 = 0;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->norigins && r2 == 0; i++) {
		int want = is_source(r, rc->p, i);

		if (want == rc->subscribed[i])
			continue;
		r2 = proto_put_fetch(&rc->l->out, r->origins[i], want ? r->applied[i] + 1 : 0);
		if (r2 == 0) {
			rc->subscribed[i] = want;
			if (want && r->applied[i] < rc->p->vec[i])
				log_info("fetching events of %016" PRIx64 " from %" PRIu64
					 " from %s",
					 r->origins[i], r->applied[i] + 1, rc->name);
		}
	}
	pthread_mutex_unlock(&r->lock);
	return r2;
}

/*
 * Send the ACKs waiting for a journal sync if it is done, or with wait
 * set once it is.  0 or a negative errno with l->why set.
 */
static int acks_collect(struct receiver *rc, int wait)
{
	struct node *n = rc->r->n;
	unsigned i;
	int rv;

	if (!rc->ack_pending)
		return 0;
	rv = wait ? node_sync_wait(n, rc->ack_ticket) : node_sync_poll(n, rc->ack_ticket);
	if (rv == 0 && !wait)
		return 0;
	if (rv < 0) {
		snprintf(rc->l->why, sizeof(rc->l->why), "journal sync failed: %s", strerror(-rv));
		return rv;
	}
	rc->ack_pending = 0;
	for (i = 0; i < rc->ack_n; i++) {
		if (rc->ack_seq[i] <= rc->acked[i])
			continue;
		rv = proto_put_ack(&rc->l->out, rc->ack_origin[i], rc->ack_seq[i]);
		if (rv < 0)
			return rv;
		rc->acked[i] = rc->ack_seq[i];
	}
	return 0;
}

/*
 * A promotion fenced off events this node's store shows (node.c asks for a
 * snapshot then): stop taking events until the snapshot has replaced them.
 */
static void snapshot_if_fenced(struct receiver *rc)
{
	struct repl *r = rc->r;
	int needed;

	pthread_mutex_lock(&r->n->lock);
	needed = r->n->snap_state == NODE_SNAP_NEEDED;
	pthread_mutex_unlock(&r->n->lock);
	if (!needed)
		return;
	pthread_mutex_lock(&r->lock);
	if (!r->snap_needed)
		log_warn("the store shows events a promotion fenced off: resyncing by snapshot");
	r->snap_needed = 1;
	repl_wake_receivers(r);
	pthread_mutex_unlock(&r->lock);
}

/* Ask for a journal sync covering every origin applied past what this link acked. */
static void acks_start(struct receiver *rc)
{
	struct repl *r = rc->r;
	unsigned i, k = 0;

	pthread_mutex_lock(&r->lock);
	rc->ack_n = r->norigins;
	for (i = 0; i < rc->ack_n; i++) {
		rc->ack_origin[i] = r->origins[i];
		rc->ack_seq[i] = r->applied[i];
		if (rc->ack_seq[i] > rc->acked[i])
			k++;
	}
	pthread_mutex_unlock(&r->lock);
	rc->frames_unsynced = 0;
	if (k == 0)
		return;
	rc->ack_ticket = node_sync_start(r->n);
	rc->ack_pending = 1;
}

/*
 * ACK every origin whose applied seq moved since this link last said,
 * once the journal sync that covers it is done: an ACK promises
 * durability.  While frames stream in, a sync is asked for every
 * REPL_SYNC_FRAMES frames and runs while the next ones are applied; with
 * wait set, everything applied so far is acked before returning.
 */
static int send_acks(struct receiver *rc, int wait)
{
	int rv = acks_collect(rc, wait);

	if (rv == 0 && !rc->ack_pending && (wait || rc->frames_unsynced >= REPL_SYNC_FRAMES))
		acks_start(rc);
	if (rv == 0 && wait)
		rv = acks_collect(rc, 1);
	return rv;
}

/* Room for n decoded events in rc's frame arrays.  0 or -ENOMEM. */
static int frame_reserve(struct receiver *rc, size_t n)
{
	struct event *evs;
	int *res;
	void **cookies;

	if (n <= rc->cap)
		return 0;
	evs = realloc(rc->evs, n * sizeof(*evs));
	if (evs)
		rc->evs = evs;
	res = realloc(rc->res, n * sizeof(*res));
	if (res)
		rc->res = res;
	cookies = realloc(rc->cookies, n * 2 * sizeof(*cookies));
	if (cookies)
		rc->cookies = cookies;
	if (!evs || !res || !cookies)
		return -ENOMEM;
	rc->cap = n;
	return 0;
}

/*
 * Decode the records of an EVENTS frame into rc->evs, as many as decode
 * and pass the wire checks: *n of them.  0, or the negative errno of the
 * record after them, with l->why set and *code the ERROR to send once the
 * events before it are applied.
 */
static int frame_decode(struct receiver *rc, const struct proto_msg *m, size_t *n, unsigned *code)
{
	struct proto_events_iter it;
	const char *why = NULL;
	const uint8_t *rec;
	size_t len;
	int rv;

	*n = 0;
	proto_events_iter_init(&it, &m->events);
	while (*n < rc->cap && proto_events_next(&it, &rec, &len)) {
		struct event *ev = &rc->evs[*n];

		rv = proto_event_decode(rec, len, ev, &why);
		if (rv < 0) {
			snprintf(rc->l->why, sizeof(rc->l->why), "malformed event: %s", why);
			*code = PROTO_ERR_MALFORMED;
			return rv;
		}
		if (hello_check_event(ev, &why)) {
			snprintf(rc->l->why, sizeof(rc->l->why),
				 "event %016" PRIx64 ":%" PRIu64 " (%s) refused: %s", ev->origin,
				 ev->seq, event_type_name(ev->type), why);
			*code = PROTO_ERR_EVENT;
			event_free(ev);
			return -EBADMSG;
		}
		rc->bytes += len;
		(*n)++;
	}
	return 0;
}

/* The mount's before hook for each of the n events, ahead of the frame. */
static void hooks_before(struct receiver *rc, size_t n)
{
	struct repl *r = rc->r;
	size_t i;

	memset(rc->cookies, 0, n * 2 * sizeof(*rc->cookies));
	for (i = 0; r->hooks.before && i < n; i++)
		if (event_type_mutates(rc->evs[i].type))
			r->hooks.before(r->hooks.arg, &rc->evs[i], &rc->cookies[2 * i]);
}

/*
 * The mount's hooks after the frame: the first failed event got rv, the
 * ones after it were not tried.  Each event is looked at again now, for
 * what it made, which a reader may have looked up while the frame was
 * applied; both looks are then invalidated.
 */
static void hooks_after(struct receiver *rc, size_t n, int rv, size_t failed)
{
	struct repl *r = rc->r;
	size_t i;

	for (i = 0; i < n; i++) {
		const struct event *ev = &rc->evs[i];
		int result = i < failed ? 0 : i == failed ? rv : -ECANCELED;

		if (!event_type_mutates(ev->type))
			continue;
		if (r->hooks.before)
			r->hooks.before(r->hooks.arg, ev, &rc->cookies[2 * i + 1]);
		if (r->hooks.after) {
			r->hooks.after(r->hooks.arg, ev, result, rc->cookies[2 * i]);
			r->hooks.after(r->hooks.arg, ev, result, rc->cookies[2 * i + 1]);
		}
	}
}

/* Record what applying evs[0..n-1] (res[i] 0: applied, 1: had) told us. */
static void frame_note(struct receiver *rc, size_t n)
{
	struct repl *r = rc->r;
	size_t i;
	int idx;

	for (i = 0; i < n; i++)
		if (rc->res[i] == 0 && rc->evs[i].type == EV_ROLE)
			snapshot_if_fenced(rc);
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < n; i++) {
		const struct event *ev = &rc->evs[i];

		if (rc->res[i] == 0 && ev->type == EV_ROLE && (ev->op_flags & 1))
			r->primary_id = ev->origin;
		idx = repl_origin_index(r, ev->origin);
		if (idx >= 0 && ev->seq > r->applied[idx])
			r->applied[idx] = ev->seq;
		if (rc->res[i] == 0 && (ev->type == EV_OUTAGE || ev->type == EV_RECOVERED))
			repl_note(r, ev);
	}
	rc->p->events_received += n;
	rc->p->bytes_received += rc->bytes;
	pthread_mutex_unlock(&r->lock);
}

/*
 * Journal and apply the n decoded events, a run at a time.  *applied gets
 * how many were taken.  0, or a negative errno with l->why set.
 */
static int frame_apply(struct receiver *rc, size_t n, struct apply_cache *cache, size_t *applied)
{
	struct repl *r = rc->r;
	const char *why = NULL;
	size_t done = 0;
	int rv = 0;

	*applied = 0;
	while (rv == 0 && *applied < n) {
		rv = node_apply_remote(r->n, rc->evs + *applied, n - *applied, cache,
				       rc->res + *applied, &done, &why);
		*applied += done;
	}
	if (rv < 0) {
		const struct event *ev = &rc->evs[*applied];

		snprintf(rc->l->why, sizeof(rc->l->why),
			 "event %016" PRIx64 ":%" PRIu64 " (%s %s) refused: %s%s%s", ev->origin,
			 ev->seq, event_type_name(ev->type), ev->path ? ev->path : "",
			 why ? why : "", why ? ": " : "", strerror(-rv));
		repl_send_error(rc->l, rv == -EPERM ? PROTO_ERR_TERM : PROTO_ERR_EVENT, rc->l->why);
	}
	return rv;
}

/*
 * Take one EVENTS frame: decode it whole, then journal and apply it in
 * runs (node_apply_remote()), each run journaled in one write.  One cache
 * serves the frame: its events mostly touch the same few files.  0, or a
 * negative errno with l->why set.
 */
static int take_events(struct receiver *rc, const struct proto_msg *m)
{
	struct apply_cache cache;
	size_t n = 0, applied = 0, i;
	unsigned code = 0;
	int rv, bad;

	rv = frame_reserve(rc, m->events.count);
	if (rv < 0) {
		snprintf(rc->l->why, sizeof(rc->l->why), "no memory for %" PRIu32 " events",
			 m->events.count);
		return rv;
	}
	rc->bytes = 0;
	rc->frames_unsynced++;
	bad = frame_decode(rc, m, &n, &code);
	hooks_before(rc, n);
	apply_cache_init(&cache);
	rv = frame_apply(rc, n, &cache, &applied);
	apply_cache_release(&cache);
	hooks_after(rc, n, rv, applied);
	frame_note(rc, applied);
	for (i = 0; i < n; i++)
		event_free(&rc->evs[i]);
	if (rv == 0 && bad < 0) {
		repl_send_error(rc->l, code, rc->l->why);
		rv = bad;
	}
	return rv;
}

/*
 * The peer no longer holds events we lack: record, durably, that this
 * node resyncs by snapshot, and reconnect to do it.
 */
static int need_snapshot(struct receiver *rc)
{
	struct repl *r = rc->r;
	int rv = node_snap_request(r->n);

	if (rv < 0) {
		snprintf(rc->l->why, sizeof(rc->l->why),
			 "cannot record that a snapshot is needed: %s", strerror(-rv));
		return rv;
	}
	pthread_mutex_lock(&r->lock);
	if (!r->snap_needed && __atomic_load_n(&r->n->primary, __ATOMIC_RELAXED))
		log_err(
		    "peer %s trimmed events this node lacks; a primary takes no snapshot, so it "
		    "takes no more events from peers until it is demoted and resynced",
		    rc->name);
	else if (!r->snap_needed)
		log_warn("peer %s trimmed events this node lacks: resyncing by snapshot", rc->name);
	r->snap_needed = 1;
	repl_wake_receivers(r);
	pthread_mutex_unlock(&r->lock);
	return -ECONNRESET;
}

/*
 * Can this link's peer be our snapshot source, and is nobody else at it?
 * Its applied vector must cover ours (except our own origin): the
 * snapshot must not take back what we applied.  Takes the claim.
 */
static int claim_snapshot(struct receiver *rc)
{
	struct repl *r = rc->r;
	unsigned i;
	int ok;

	pthread_mutex_lock(&r->lock);
	ok = r->snap_needed && !r->snap_owner && !r->n->primary;
	for (i = 0; ok && i < r->norigins; i++)
		if (r->origins[i] != r->cfg.node_id && rc->p->vec[i] < r->applied[i])
			ok = 0;
	if (ok)
		r->snap_owner = rc->p;
	pthread_mutex_unlock(&r->lock);
	return ok;
}

/* Run the snapshot resync on this link; on success take events again. */
static int run_snapshot(struct receiver *rc)
{
	struct repl *r = rc->r;
	uint64_t applied[REPL_MAX_ORIGINS];
	unsigned i, n;
	int rv;

	rv = snap_recv_run(r, rc->l, rc->name);
	pthread_mutex_lock(&r->n->lock);
	pthread_mutex_lock(&r->lock);
	n = r->norigins;
	for (i = 0; i < n; i++)
		applied[i] = journal_applied(r->n->journal, r->origins[i]);
	pthread_mutex_unlock(&r->lock);
	pthread_mutex_unlock(&r->n->lock);
	pthread_mutex_lock(&r->lock);
	r->snap_owner = NULL;
	if (rv == 0) {
		r->snap_needed = 0;
		for (i = 0; i < n; i++)
			r->applied[i] = applied[i];
	}
	repl_wake_receivers(r);
	pthread_mutex_unlock(&r->lock);
	return rv;
}

/* Handle one frame from the peer.  0 or a negative errno with l->why set. */
static int take_frame(struct receiver *rc, const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_EVENTS:
		return take_events(rc, m);
	case PROTO_PING:
		return proto_put_pong(&rc->l->out, m->nonce);
	case PROTO_PONG:
		return 0;
	case PROTO_ERROR:
		snprintf(rc->l->why, sizeof(rc->l->why), "peer refused us: %s: %.180s",
			 proto_error_name(m->error.code), m->error.msg);
		if (m->error.code == PROTO_ERR_TRIMMED)
			return need_snapshot(rc);
		/* Refusals that retrying will not cure show as "refused". */
		return m->error.code == PROTO_ERR_MEMBER || m->error.code == PROTO_ERR_CLUSTER ||
			       m->error.code == PROTO_ERR_VERSION ||
			       m->error.code == PROTO_ERR_TRIMMED || m->error.code == PROTO_ERR_TERM
			   ? -EACCES
			   : -ECONNRESET;
	default:
		snprintf(rc->l->why, sizeof(rc->l->why), "unexpected %s frame",
			 proto_type_name(m->type));
		repl_send_error(rc->l, PROTO_ERR_MALFORMED, rc->l->why);
		return -EPROTO;
	}
}

/* Dial, identify and exchange HELLOs.  0, or negative errno with why. */
static int connect_peer(struct receiver *rc, char *why, size_t whylen)
{
	struct repl *r = rc->r;
	struct repl_peer *who = NULL;
	struct proto_msg m;
	char addr[CONFIG_ADDR_MAX];
	const char *reason = NULL;
	int rv, code;

	pthread_mutex_lock(&r->lock);
	snprintf(addr, sizeof(addr), "%s", rc->p->cfg.address);
	pthread_mutex_unlock(&r->lock);
	rv = link_dial(addr, r->client_ctx, REPL_DIAL_TIMEOUT_MS, &rc->l, why, whylen);
	if (rv < 0)
		return rv;
	rv = repl_identify(r, rc->l, rc->p, &who, why, whylen);
	if (rv < 0)
		return rv;
	rv = repl_put_hello(r, rc->l);
	if (rv == 0)
		rv = link_flush(rc->l, REPL_SEND_TIMEOUT_MS);
	if (rv == 0)
		rv = link_recv(rc->l, REPL_HELLO_TIMEOUT_MS, &m);
	if (rv < 0) {
		/* TLS 1.3: the server's verdict on our certificate arrives here. */
		snprintf(why, whylen, "%s", rv == -EAGAIN ? "no HELLO from the peer" : rc->l->why);
		return rv == -EAGAIN ? -ETIMEDOUT : rv;
	}
	if (m.type == PROTO_ERROR) {
		snprintf(why, whylen, "peer refused us: %s: %.180s", proto_error_name(m.error.code),
			 m.error.msg);
		proto_msg_free(&m);
		return -EACCES;
	}
	code = repl_take_hello(r, rc->p, &m, &reason);
	proto_msg_free(&m);
	if (code) {
		snprintf(why, whylen, "bad HELLO: %s", reason);
		repl_send_error(rc->l, (unsigned)code, reason);
		return -EACCES;
	}
	return 0;
}

/* Run one connected link until it fails or we stop.  Returns the failure. */
static int run_link(struct receiver *rc)
{
	struct repl *r = rc->r;
	int rv = 0;

	memset(rc->subscribed, 0, sizeof(rc->subscribed));
	memset(rc->acked, 0, sizeof(rc->acked));
	rc->ack_pending = 0;
	rc->frames_unsynced = 0;
	rc->last_in = rc->last_out = clock_mono_ms();
	for (;;) {
		struct proto_msg m;
		int64_t now;
		int mask, stop;

		pthread_mutex_lock(&r->lock);
		stop = r->stopping || rc->p->gone;
		pthread_mutex_unlock(&r->lock);
		if (stop) {
			repl_send_error(rc->l, PROTO_ERR_SHUTDOWN, "node stopping");
			return 0;
		}
		rv = update_subscriptions(rc);
		/* Subscriptions are stopped by now: the store is about to be replaced. */
		if (rv == 0 && claim_snapshot(rc)) {
			rv = link_flush(rc->l, REPL_SEND_TIMEOUT_MS);
			if (rv == 0)
				rv = run_snapshot(rc);
			if (rv < 0)
				return rv;
			memset(rc->subscribed, 0, sizeof(rc->subscribed));
			rc->last_in = rc->last_out = clock_mono_ms();
			continue;
		}
		while (rv == 0 && (rv = link_recv(rc->l, 0, &m)) == 0) {
			rc->last_in = clock_mono_ms();
			rv = take_frame(rc, &m);
			proto_msg_free(&m);
			/* Keep the sender's window open while a backlog streams in. */
			if (rv == 0)
				rv = send_acks(rc, 0);
			if (rv == 0 && rc->l->out.len) {
				rv = link_flush(rc->l, REPL_SEND_TIMEOUT_MS);
				rc->last_out = rc->last_in;
			}
		}
		if (rv != -EAGAIN)
			return rv;
		rv = send_acks(rc, 1);
		if (rv < 0)
			return rv;
		maybe_recovered(r);
		now = clock_mono_ms();
		if (rc->l->out.len == 0 && now - rc->last_out >= REPL_PING_MS)
			rv = proto_put_ping(&rc->l->out, ++rc->ping_nonce);
		if (rv == 0 && rc->l->out.len) {
			rv = link_flush(rc->l, REPL_SEND_TIMEOUT_MS);
			rc->last_out = now;
		}
		if (rv < 0)
			return rv;
		if (now - rc->last_in > REPL_SILENT_MS) {
			snprintf(rc->l->why, sizeof(rc->l->why), "peer silent for %d s",
				 REPL_SILENT_MS / 1000);
			return -ETIMEDOUT;
		}
		mask = link_wait(rc->l, rc->p->wake_fd, 200);
		if (mask & 2)
			repl_drain(rc->p->wake_fd);
	}
}

/* Capped exponential backoff with jitter (0.5x to 1.5x). */
static int64_t backoff_ms(unsigned failures)
{
	int64_t d = REPL_BACKOFF_MIN_MS;
	uint32_t rnd = 0;

	while (failures-- > 1 && d < REPL_BACKOFF_MAX_MS)
		d *= 2;
	if (d > REPL_BACKOFF_MAX_MS)
		d = REPL_BACKOFF_MAX_MS;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)clock_mono_ms();
	return d / 2 + (int64_t)(rnd % (uint32_t)(d + 1));
}

void *repl_receiver_main(void *arg)
{
	struct repl_peer *p = arg;
	struct repl *r = p->r;
	struct receiver rc = {.r = r, .p = p};
	unsigned failures = 0;

	for (;;) {
		char why[REPL_WHY_MAX] = "";
		int64_t delay;
		int rv, stop;

		pthread_mutex_lock(&r->lock);
		stop = r->stopping || p->gone;
		snprintf(rc.name, sizeof(rc.name), "%s", p->cfg.name);
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
		rv = connect_peer(&rc, why, sizeof(why));
		if (rv == 0) {
			failures = 0;
			pthread_mutex_lock(&r->lock);
			p->connects++;
			repl_peer_set_state(p, REPL_PEER_CONNECTED, NULL);
			repl_wake_receivers(r);
			pthread_mutex_unlock(&r->lock);
			maybe_outage(&rc);
			rv = run_link(&rc);
			snprintf(why, sizeof(why), "%s", rc.l->why[0] ? rc.l->why : "link closed");
		}
		link_close(rc.l);
		rc.l = NULL;
		failures++;
		delay = backoff_ms(failures);
		pthread_mutex_lock(&r->lock);
		stop = r->stopping || p->gone;
		if (!stop) {
			p->retry_at = clock_mono_ms() + delay;
			repl_peer_set_state(
			    p, rv == -EACCES ? REPL_PEER_REFUSED : REPL_PEER_RETRYING, why);
			repl_wake_receivers(r);
		}
		pthread_mutex_unlock(&r->lock);
		/* Wake-ups (other links coming and going) do not cut the backoff short. */
		delay += clock_mono_ms();
		while (!stop && clock_mono_ms() < delay) {
			if (link_wait_fd(p->wake_fd, (int)(delay - clock_mono_ms())))
				repl_drain(p->wake_fd);
			pthread_mutex_lock(&r->lock);
			stop = r->stopping || p->gone;
			pthread_mutex_unlock(&r->lock);
		}
		if (stop)
			break;
	}
	free(rc.evs);
	free(rc.res);
	free(rc.cookies);
	return NULL;
}
