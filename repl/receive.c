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
 *
 * An event that does not apply because the store does not hold what it
 * expects (base version or fids: the stores diverged, DESIGN invariant 9)
 * is not retried as it is.  The node journals a DIVERGED event, stops
 * taking events, and heals: the subtree the event touches is compared by
 * hash tree with the sending peer's over the same link, and what differs
 * is installed (snap_recv_heal()).  Then it takes the events again from
 * the one that diverged, which the healed objects' versions now show as
 * applied, and journals HEALED with what it replaced.  Until the events
 * the healed subtree may show have streamed in, one that renames or links
 * a name across its edge diverges as well (the healed side would show it
 * applied, the other side never get it) and heals a subtree holding both
 * names.  If the same event
 * diverges again the next heal takes the subtree one level up; after
 * REPL_HEAL_TRIES, or when a heal fails, the heal stops: the node says so,
 * journals it once, drops the link and tries again after a backoff that
 * doubles up to REPL_HEAL_BACKOFF_MAX_MS.  Any link that fails soon after
 * it came up backs off too, capped and with jitter, never a tight loop.
 *
 * The same frame path serves one inbound link of another kind: events
 * pushed by `ledgerctl rescue` from a stopped node's journal
 * (repl_push_receive(), a HELLO with PROTO_HELLO_PUSH).  Those events are
 * vetted, journaled, applied and acknowledged exactly as a subscription's;
 * what differs is that nothing is healed from the pusher, which serves no
 * snapshot: an event refused or diverging ends the push with an ERROR
 * that follows the ACKs of every event applied before it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <fcntl.h>

#include "lib/clock.h"
#include "net/hello.h"
#include "lib/log.h"
#include "store/path.h"
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
	int diverged;	/* the frame's last event diverged: heal before taking more */
	int stopped;	/* the link ended because a heal stopped: back off as for that */
	/* A push (repl_push_receive()): p may be NULL, nothing is healed. */
	int push;
	unsigned refuse; /* push: the ERROR code to send once the ACKs before it are out */
	uint64_t pushed; /* push: events applied */
};

/* Journal a node-state event of our own (OUTAGE, RECOVERED, DIVERGED, HEALED). */
static void commit_state_event(struct repl *r, struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int rv;

	node_lock(r->n);
	rv = node_commit_locked(r->n, ev, &ctx);
	node_unlock(r->n);
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

	if (node_is_primary(r->n))
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

	/* A store about to be replaced by a snapshot, or being healed, takes no events. */
	if (origin == r->cfg.node_id || r->snap_needed || r->healing)
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

	struct node_state ns;

	node_state(r->n, &ns);
	needed = ns.snap_needed;
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
		/* The event that diverged applied (or was found applied): it is over. */
		if (repl_diverged(&r->div) && ev->origin == r->div.event.origin &&
		    ev->seq >= r->div.event.seq) {
			log_info("event %016" PRIx64 ":%" PRIu64 " that diverged is applied now",
				 r->div.event.origin, r->div.event.seq);
			r->div.state = REPL_DIV_RESOLVED;
			r->div_stops = 0;
		}
	}
	if (rc->p) {
		rc->p->events_received += n;
		rc->p->bytes_received += rc->bytes;
	}
	for (i = 0; rc->push && i < n; i++)
		rc->pushed += rc->res[i] == 0;
	pthread_mutex_unlock(&r->lock);
}

/* Is store path b dir a or beneath it? */
static int beneath(const char *a, const char *b)
{
	size_t n = strlen(a);

	return path_is_root(a) || (strncmp(a, b, n) == 0 && (b[n] == '\0' || b[n] == '/'));
}

/*
 * Does the apply failure rv of a remote event mean that the store does not
 * hold what the event expects (a divergence), rather than a refusal of the
 * event (term, fence, gap, path: -EPERM, -EAGAIN, -EPROTO, -EINVAL) or a
 * failure of this node (-EIO, -ENOSPC, ...) that retrying may cure?
 */
static int is_divergence(int rv)
{
	switch (rv) {
	case -ESTALE:
	case -EEXIST:
	case -ENOENT:
	case -ENOTDIR:
	case -EISDIR:
	case -ENOTEMPTY:
		return 1;
	default:
		return 0;
	}
}

/* Copy s into a status field of len bytes, cut with "..." if it does not fit. */
static void copy_cut(char *dst, size_t len, const char *s)
{
	if ((size_t)snprintf(dst, len, "%s", s) >= len && len > 4)
		memcpy(dst + len - 4, "...", 4);
}

/*
 * Replace the string *dst owns by a copy of path, or by NULL for no path
 * (NULL or "") and when out of memory: a heal then widens to the root,
 * which still covers the event's objects.
 */
static void set_path(char **dst, const char *path)
{
	free(*dst);
	*dst = path && *path ? strdup(path) : NULL;
}

/*
 * Event ev from this link's peer diverged (apply failure rv, why): record
 * it, so that run_link() heals before it takes another event.  A new event
 * starts a new divergence; the same one again keeps its count of heals.
 */
static void diverged(struct receiver *rc, const struct event *ev, const char *why, int rv)
{
	struct repl *r = rc->r;
	struct repl_divergence *d = &r->div;
	char text[REPL_WHY_MAX];

	snprintf(text, sizeof(text), "%s%s%s", why ? why : "", why ? ": " : "", strerror(-rv));
	pthread_mutex_lock(&r->lock);
	if (!repl_diverged(d) || d->event.origin != ev->origin || d->event.seq != ev->seq) {
		*d = (struct repl_divergence){
		    .state = REPL_DIV_HEALING,
		    .event = {ev->origin, ev->seq},
		    .type = ev->type,
		    .since_ms = repl_wall_ms(),
		};
		copy_cut(d->path, sizeof(d->path), ev->path ? ev->path : "");
		set_path(&r->div_path, ev->path);
		set_path(&r->div_path2, ev->path2);
		r->div_stop_noted = 0;
		r->div_stops = 0;
		r->divergences++;
	}
	copy_cut(d->why, sizeof(d->why), text);
	copy_cut(d->peer, sizeof(d->peer), rc->name);
	pthread_mutex_unlock(&r->lock);
	log_warn("diverged at event %016" PRIx64 ":%" PRIu64 " (%s %s) from %s: %s", ev->origin,
		 ev->seq, event_type_name(ev->type), ev->path ? ev->path : "(no path)", rc->name,
		 text);
	rc->diverged = 1;
}

/* Is a store path beneath a subtree healed for ev's origin up to ev?  r->lock held. */
static int in_healed(struct repl *r, const struct event *ev, const char *path)
{
	unsigned i;

	for (i = 0; i < r->nhealed; i++)
		if (r->healed[i].origin == ev->origin && ev->seq <= r->healed[i].until &&
		    beneath(r->healed[i].scope, path))
			return 1;
	return 0;
}

/*
 * The first of rc->evs[from..n) that renames or links a name across the
 * edge of a subtree a heal replaced, among the events that subtree may
 * already show; n if none.  The healed side would show it applied and the
 * other side never get it, so such an event diverges, and its heal takes
 * a subtree that holds both names.  Heals whose events all applied are
 * forgotten here.
 */
static size_t heal_crossing(struct receiver *rc, size_t from, size_t n)
{
	struct repl *r = rc->r;
	size_t k = from;
	unsigned i;
	int idx, any;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->nhealed;) {
		idx = repl_origin_index(r, r->healed[i].origin);
		if (idx >= 0 && r->applied[idx] >= r->healed[i].until)
			r->healed[i] = r->healed[--r->nhealed];
		else
			i++;
	}
	for (; r->nhealed && k < n; k++) {
		const struct event *ev = &rc->evs[k];

		idx = repl_origin_index(r, ev->origin);
		if (ev->path && ev->path2 && idx >= 0 && ev->seq > r->applied[idx] &&
		    in_healed(r, ev, ev->path) != in_healed(r, ev, ev->path2))
			break;
	}
	any = r->nhealed > 0;
	pthread_mutex_unlock(&r->lock);
	return any ? k : n;
}

/*
 * Journal and apply the n decoded events, a run at a time.  *applied gets
 * how many were taken.  0, or a negative errno with l->why set.
 */
static int frame_apply(struct receiver *rc, size_t n, struct apply_cache *cache, size_t *applied)
{
	struct repl *r = rc->r;
	const char *why = NULL;
	size_t done = 0, upto;
	int rv = 0;

	*applied = 0;
	while (rv == 0 && *applied < n) {
		upto = heal_crossing(rc, *applied, n);
		if (upto == *applied) {
			why = "it moves a name across the edge of a subtree a heal replaced";
			rv = -ESTALE;
			break;
		}
		rv = node_apply_remote(r->n, rc->evs + *applied, upto - *applied, cache,
				       rc->res + *applied, &done, &why);
		*applied += done;
	}
	if (rv < 0) {
		const struct event *ev = &rc->evs[*applied];

		snprintf(rc->l->why, sizeof(rc->l->why),
			 "event %016" PRIx64 ":%" PRIu64 " (%s %s) refused: %s%s%s", ev->origin,
			 ev->seq, event_type_name(ev->type), ev->path ? ev->path : "",
			 why ? why : "", why ? ": " : "", strerror(-rv));
		if (rc->push)
			rc->refuse = rv == -EPERM ? PROTO_ERR_TERM : PROTO_ERR_EVENT;
		else if (is_divergence(rv))
			diverged(rc, ev, why, rv);
		else
			repl_send_error(rc->l, rv == -EPERM ? PROTO_ERR_TERM : PROTO_ERR_EVENT,
					rc->l->why);
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
		if (rc->push)
			rc->refuse = code;
		else
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
	if (!r->snap_needed && node_is_primary(r->n))
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
	ok = r->snap_needed && !r->snap_owner && !node_is_primary(r->n);
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
	node_lock(r->n);
	pthread_mutex_lock(&r->lock);
	n = r->norigins;
	for (i = 0; i < n; i++)
		applied[i] = journal_applied(node_journal(r->n), r->origins[i]);
	pthread_mutex_unlock(&r->lock);
	node_unlock(r->n);
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

/*
 * The subtree to heal first for the divergence in r->div (r->lock held):
 * a directory whose own metadata an event changes, else the directory
 * holding the event's name, widened to hold its second name too; the root
 * for an event without a path (a file unlinked while open).  malloc'd,
 * the caller frees it; NULL when out of memory.
 */
static char *first_scope(struct repl *r)
{
	uint8_t t = r->div.type;
	char *out, *parent2;
	int fd;

	out = strdup(r->div_path ? r->div_path : PATH_ROOT);
	if (!out || path_is_root(out))
		return out;
	if (!(t == EV_CHMOD || t == EV_CHOWN || t == EV_UTIMENS || t == EV_SETXATTR ||
	      t == EV_REMOVEXATTR) ||
	    path_open(node_store(r->n)->root, out, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, &fd) < 0)
		path_up(out);
	else
		close(fd);
	if (!r->div_path2)
		return out;
	parent2 = strdup(r->div_path2);
	if (!parent2) {
		free(out);
		return NULL;
	}
	path_up(parent2);
	while (!beneath(out, parent2))
		path_up(out);
	free(parent2);
	return out;
}

/* Journal a DIVERGED or HEALED event about r->div. */
static void note_divergence(struct receiver *rc, uint8_t type, uint32_t flags, const char *scope,
			    const char *text, size_t text_len, uint64_t position, uint64_t entries)
{
	struct repl *r = rc->r;
	struct event ev = {.type = type, .op_flags = flags, .offset = position, .length = entries};
	char *path2 = NULL;
	int rv = 0;

	pthread_mutex_lock(&r->lock);
	ev.base = r->div.event;
	if (r->div_path && type == EV_DIVERGED && !(path2 = strdup(r->div_path)))
		rv = -ENOMEM;
	pthread_mutex_unlock(&r->lock);
	if (rv == 0)
		rv = event_set_path(&ev, scope);
	if (rv == 0 && path2)
		rv = event_set_path2(&ev, path2);
	if (rv == 0)
		rv = event_set_name(&ev, rc->name);
	if (rv == 0 && text_len)
		rv = event_set_data(&ev, text, (uint32_t)text_len);
	if (rv < 0)
		log_err("cannot journal the %s event: %s", event_type_name(type), strerror(-rv));
	else
		commit_state_event(r, &ev);
	event_free(&ev);
	free(path2);
}

/*
 * The heal of the divergence cannot make progress (why; rv the failure):
 * say so, journal it once per event, and drop the link, which then backs
 * off (repl_receiver_main()).  Returns the errno to end the link with.
 */
static int heal_stopped(struct receiver *rc, const char *why, int rv)
{
	struct repl *r = rc->r;
	struct evid at;
	char *scope;
	int noted;

	pthread_mutex_lock(&r->lock);
	r->div.state = REPL_DIV_STOPPED;
	copy_cut(r->div.stopped, sizeof(r->div.stopped), why);
	r->heal_failures++;
	r->div_stops++;
	noted = r->div_stop_noted;
	r->div_stop_noted = 1;
	at = r->div.event;
	/* Out of memory, the STOPPED event names the root: the widest it could be. */
	scope = strdup(r->div_scope ? r->div_scope : PATH_ROOT);
	pthread_mutex_unlock(&r->lock);
	log_err("diverged at event %016" PRIx64 ":%" PRIu64 ": heal stopped: %s; taking events "
		"from %s again after a backoff",
		at.origin, at.seq, why, rc->name);
	if (!noted)
		note_divergence(rc, EV_DIVERGED, EVENT_DIVERGED_STOPPED, scope ? scope : PATH_ROOT,
				why, strlen(why), 0, 0);
	free(scope);
	snprintf(rc->l->why, sizeof(rc->l->why),
		 "diverged at event %016" PRIx64 ":%" PRIu64 "; heal stopped: %.180s", at.origin,
		 at.seq, why);
	repl_send_error(rc->l, PROTO_ERR_EVENT, rc->l->why);
	rc->stopped = 1;
	return rv < 0 ? rv : -ESTALE;
}

/*
 * Heal the divergence an event of this link met (DESIGN invariant 9): stop
 * taking events, resync the subtree from this peer, then take them again
 * from the one that diverged.  0 to go on with the link, or a negative
 * errno with l->why when the heal stopped.
 */
static int heal(struct receiver *rc)
{
	struct repl *r = rc->r;
	struct repl_divergence *d = &r->div;
	struct snap_heal h;
	struct evid at;
	char *scope = NULL, stop[2 * REPL_WHY_MAX] = "", why[REPL_WHY_MAX];
	unsigned heals = 0;
	int rv;

	pthread_mutex_lock(&r->lock);
	/* Another link heals, or a snapshot replaces the store: take events again after it. */
	if (r->healing || r->snap_needed) {
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	at = d->event;
	if (node_is_primary(r->n))
		snprintf(stop, sizeof(stop), "a primary does not replace its files from a peer");
	else if (d->state == REPL_DIV_HEALED && d->heals >= REPL_HEAL_TRIES)
		snprintf(stop, sizeof(stop), "the event still does not apply after %u heals",
			 d->heals);
	if (!stop[0] && d->heals == 0) {
		scope = first_scope(r);
	} else if (!stop[0]) {
		/* After a stop, the same subtree again; after a heal that did not help, its parent.
		 */
		scope = strdup(r->div_scope ? r->div_scope : PATH_ROOT);
		if (scope && d->state == REPL_DIV_HEALED)
			path_up(scope);
	}
	if (!stop[0] && !scope) {
		pthread_mutex_unlock(&r->lock);
		snprintf(rc->l->why, sizeof(rc->l->why), "heal: out of memory");
		return -ENOMEM;
	}
	if (!stop[0]) {
		heals = ++d->heals;
		d->state = REPL_DIV_HEALING;
		copy_cut(d->scope, sizeof(d->scope), scope);
		set_path(&r->div_scope, scope);
		snprintf(why, sizeof(why), "%s", d->why);
		r->healing = 1;
		repl_wake_receivers(r);
	}
	pthread_mutex_unlock(&r->lock);
	if (stop[0])
		return heal_stopped(rc, stop, -ESTALE);
	log_warn("diverged at event %016" PRIx64 ":%" PRIu64
		 ": healing subtree %s from %s (heal %u)",
		 at.origin, at.seq, scope, rc->name, heals);
	if (heals == 1)
		note_divergence(rc, EV_DIVERGED, EVENT_DIVERGED_HEALING, scope, why, strlen(why), 0,
				0);
	rv = update_subscriptions(rc);
	if (rv == 0)
		rv = link_flush(rc->l, REPL_SEND_TIMEOUT_MS);
	if (rv == 0)
		rv = snap_recv_heal(r, rc->l, rc->name, scope, at.origin, &h);
	pthread_mutex_lock(&r->lock);
	r->healing = 0;
	if (rv == 0) {
		d->state = REPL_DIV_HEALED;
		d->entries = h.entries;
		d->bytes = h.bytes;
		copy_cut(d->scope, sizeof(d->scope), h.scope);
		set_path(&r->div_scope, h.scope);
		r->heals++;
		r->heal_entries += h.entries;
		r->heal_bytes += h.bytes;
		if (r->nhealed == REPL_MAX_HEALED)
			memmove(&r->healed[0], &r->healed[1],
				sizeof(r->healed[0]) * (REPL_MAX_HEALED - 1));
		else
			r->nhealed++;
		r->healed[r->nhealed - 1].origin = at.origin;
		r->healed[r->nhealed - 1].until = h.until;
		snprintf(r->healed[r->nhealed - 1].scope, sizeof(r->healed[0].scope), "%s",
			 h.scope);
	}
	repl_wake_receivers(r);
	pthread_mutex_unlock(&r->lock);
	if (rv < 0) {
		snprintf(stop, sizeof(stop), "heal of %.60s from %s failed: %.150s", scope,
			 rc->name, rc->l->why[0] ? rc->l->why : strerror(-rv));
		free(scope);
		return heal_stopped(rc, stop, rv);
	}
	log_info("healed subtree %s from %s at %" PRIu64 ": %" PRIu64
		 " entries replaced; taking events from %016" PRIx64 ":%" PRIu64 " again",
		 h.scope, rc->name, h.position, h.entries, at.origin, at.seq);
	note_divergence(rc, EV_HEALED, 0, h.scope, h.list, h.list_len, h.position, h.entries);
	free(h.list);
	free(h.scope);
	free(scope);
	rc->l->why[0] = '\0';
	rc->last_in = rc->last_out = clock_mono_ms();
	return 0;
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
	char addr[CONFIG_ADDR_MAX], listen[CONFIG_ADDR_MAX];
	const char *reason = NULL;
	int rv, code;

	pthread_mutex_lock(&r->lock);
	snprintf(addr, sizeof(addr), "%s", rc->p->cfg.address);
	snprintf(listen, sizeof(listen), "%s", r->cfg.listen);
	pthread_mutex_unlock(&r->lock);
	rv = link_dial_from(addr, listen, r->client_ctx, REPL_DIAL_TIMEOUT_MS, &rc->l, why, whylen);
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
		if (rc->diverged) {
			rc->diverged = 0;
			rv = heal(rc);
			if (rv < 0)
				return rv;
			continue;
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

/* Exponential backoff from min, capped at max, with jitter (0.5x to 1.5x). */
static int64_t backoff_ms(int64_t min, int64_t max, unsigned failures)
{
	int64_t d = min;
	uint32_t rnd = 0;

	while (failures-- > 1 && d < max)
		d *= 2;
	if (d > max)
		d = max;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)clock_mono_ms();
	return d / 2 + (int64_t)(rnd % (uint32_t)(d + 1));
}

void *repl_receiver_main(void *arg)
{
	struct repl_peer *p = arg;
	struct repl *r = p->r;
	struct receiver rc = {.r = r, .p = p};
	unsigned failures = 0, stops;

	for (;;) {
		char why[REPL_WHY_MAX] = "";
		int64_t delay, up_at = 0;
		int rv, stop;

		pthread_mutex_lock(&r->lock);
		stop = r->stopping || p->gone;
		snprintf(rc.name, sizeof(rc.name), "%s", p->cfg.name);
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
		rv = connect_peer(&rc, why, sizeof(why));
		if (rv == 0) {
			up_at = clock_mono_ms();
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
		/* Only a link that stayed up a while starts the backoff over. */
		if (up_at && clock_mono_ms() - up_at >= REPL_STABLE_MS)
			failures = 0;
		failures++;
		rc.diverged = 0;
		pthread_mutex_lock(&r->lock);
		stops = r->div_stops;
		pthread_mutex_unlock(&r->lock);
		if (rc.stopped)
			delay =
			    backoff_ms(REPL_HEAL_BACKOFF_MIN_MS, REPL_HEAL_BACKOFF_MAX_MS, stops);
		else
			delay = backoff_ms(REPL_BACKOFF_MIN_MS, REPL_BACKOFF_MAX_MS, failures);
		pthread_mutex_lock(&r->lock);
		if (rc.stopped)
			r->div_retry_at = clock_mono_ms() + delay;
		rc.stopped = 0;
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

/* ---- events pushed by ledgerctl rescue ------------------------------- */

/*
 * May a push deliver events now?  Not while this store is about to be
 * replaced by a snapshot or is being healed: the receivers take no events
 * then either.  0, or -EBUSY with l->why and rc->refuse set.
 */
static int push_may_take(struct receiver *rc)
{
	struct repl *r = rc->r;
	const char *busy = NULL;

	pthread_mutex_lock(&r->lock);
	if (r->snap_needed)
		busy = "resyncing by snapshot";
	else if (r->healing)
		busy = "healing a divergence";
	pthread_mutex_unlock(&r->lock);
	if (!busy)
		return 0;
	snprintf(rc->l->why, sizeof(rc->l->why),
		 "%s is %s and takes no events meanwhile; rescue again once it is done",
		 r->cfg.name, busy);
	rc->refuse = PROTO_ERR_EVENT;
	return -EBUSY;
}

/* One frame of a push.  0, 1 when the pusher is done, or a negative errno with l->why. */
static int take_push_frame(struct receiver *rc, const struct proto_msg *m)
{
	int rv;

	switch (m->type) {
	case PROTO_EVENTS:
		rv = push_may_take(rc);
		return rv < 0 ? rv : take_events(rc, m);
	case PROTO_PING:
		return proto_put_pong(&rc->l->out, m->nonce);
	case PROTO_PONG:
		return 0;
	case PROTO_ERROR:
		if (m->error.code == PROTO_ERR_SHUTDOWN)
			return 1;
		snprintf(rc->l->why, sizeof(rc->l->why), "the pusher gave up: %s: %.180s",
			 proto_error_name(m->error.code), m->error.msg);
		return -ECONNRESET;
	default:
		snprintf(rc->l->why, sizeof(rc->l->why), "unexpected %s frame in a push",
			 proto_type_name(m->type));
		rc->refuse = PROTO_ERR_MALFORMED;
		return -EPROTO;
	}
}

/* Take frames until the push ends.  0 when the pusher said it is done, else a negative errno. */
static int push_loop(struct receiver *rc, int wake_fd)
{
	struct repl *r = rc->r;
	struct link *l = rc->l;
	struct proto_msg m;
	int64_t now;
	int rv, stop, mask;

	rc->last_in = rc->last_out = clock_mono_ms();
	for (;;) {
		pthread_mutex_lock(&r->lock);
		stop = r->stopping || (rc->p && rc->p->gone);
		pthread_mutex_unlock(&r->lock);
		if (stop) {
			snprintf(l->why, sizeof(l->why), "node stopping");
			rc->refuse = PROTO_ERR_SHUTDOWN;
			return -ECANCELED;
		}
		while ((rv = link_recv(l, 0, &m)) == 0) {
			rc->last_in = clock_mono_ms();
			rv = take_push_frame(rc, &m);
			proto_msg_free(&m);
			if (rv == 0)
				rv = send_acks(rc, 0);
			if (rv == 0 && l->out.len) {
				rv = link_flush(l, REPL_SEND_TIMEOUT_MS);
				rc->last_out = rc->last_in;
			}
			if (rv != 0)
				return rv == 1 ? 0 : rv;
		}
		if (rv != -EAGAIN)
			return rv;
		/* The pusher waits for these before it sends more than a window. */
		rv = send_acks(rc, 1);
		now = clock_mono_ms();
		if (rv == 0 && l->out.len == 0 && now - rc->last_out >= REPL_PING_MS)
			rv = proto_put_ping(&l->out, ++rc->ping_nonce);
		if (rv == 0 && l->out.len) {
			rv = link_flush(l, REPL_SEND_TIMEOUT_MS);
			rc->last_out = now;
		}
		if (rv < 0)
			return rv;
		if (now - rc->last_in > REPL_SILENT_MS) {
			snprintf(l->why, sizeof(l->why), "pusher silent for %d s",
				 REPL_SILENT_MS / 1000);
			return -ETIMEDOUT;
		}
		mask = link_wait(l, wake_fd, 200);
		if (mask & 2)
			repl_drain(wake_fd);
	}
}

int repl_push_receive(struct repl *r, struct repl_peer *p, struct link *l, int wake_fd,
		      const char *from, uint64_t *applied)
{
	struct receiver rc = {.r = r, .p = p, .l = l, .push = 1};
	int rv;

	snprintf(rc.name, sizeof(rc.name), "%s", from);
	rv = push_loop(&rc, wake_fd);
	if (rc.refuse) {
		/*
		 * The ACKs of what applied before the refusal go first, so the
		 * pusher knows exactly what this node took.  repl_send_error()
		 * drops what l->out still holds, hence the flush in between.
		 */
		char why[LINK_WHY_MAX];

		snprintf(why, sizeof(why), "%s", l->why);
		if (send_acks(&rc, 1) == 0 && l->out.len)
			link_flush(l, REPL_SEND_TIMEOUT_MS);
		repl_send_error(l, rc.refuse, why);
		snprintf(l->why, sizeof(l->why), "%s", why);
	}
	*applied = rc.pushed;
	free(rc.evs);
	free(rc.res);
	free(rc.cookies);
	return rv;
}
