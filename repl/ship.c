/*
 * ship.c - an inbound link: a peer dialled us to receive events.
 *
 * After the handshake the peer says which origins to send from which seq
 * (FETCH; from_seq 0 stops one).  We read the journal from there and send
 * EVENTS frames of one origin each, batched by batch_events / batch_bytes
 * or when batch_ms has passed since events became ready, with up to
 * REPL_WINDOW batches unacknowledged, so throughput does not wait for a
 * round trip per batch.  Our own events are shipped only once they are
 * durable here: a peer must never hold an event of ours that a crash of
 * this node could take back and reissue under the same seq.  ACKs are
 * persisted as the peer's checkpoints.
 *
 * An inbound link whose HELLO says PROTO_HELLO_PUSH is `ledgerctl rescue`
 * shipping a stopped node's events to us: it is answered with our HELLO
 * and handed to receive.c's frame path (repl_push_receive()).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal/vlog.h"
#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/grow.h"
#include "lib/log.h"
#include "net/hello.h"
#include "net/tls.h"
#include "repl_int.h"

struct inflight {
	uint64_t origin, last;
};

struct fill;

struct ship {
	struct repl_shipper *s;
	struct repl *r;
	struct repl_peer *p; /* the configured peer this link belongs to */
	uint64_t
	    next[REPL_MAX_ORIGINS]; /* per origin index: next seq to send, 0 = not subscribed */
	unsigned rr;		    /* origin to look at first: round robin */
	struct inflight win[REPL_WINDOW];
	unsigned nwin;
	int64_t ready_since; /* monotonic ms events have been waiting, 0 if none */
	int64_t last_in, last_out;
	uint64_t ping_nonce;
	struct fill *fills; /* payloads of the batch being built (add_vref()) */
	size_t nfills, fills_cap;
	struct snap_send *snap; /* a snapshot this peer is reading, NULL if none */
};

static void window_ack(struct ship *sh, uint64_t origin, uint64_t seq)
{
	unsigned i, k = 0;

	for (i = 0; i < sh->nwin; i++)
		if (!(sh->win[i].origin == origin && sh->win[i].last <= seq))
			sh->win[k++] = sh->win[i];
	sh->nwin = k;
}

static void window_drop_origin(struct ship *sh, uint64_t origin)
{
	window_ack(sh, origin, UINT64_MAX);
}

/*
 * A value-log payload that goes into l->out once the node lock is
 * released: the record at off, its payload after its first head bytes.
 */
struct fill {
	size_t off, head, len;
	struct vref ref;
	uint64_t origin, seq;
	int fd;	   /* descriptor of ref.segment */
	int owned; /* fd is this fill's to close, not shared with the one before */
};

static void fills_close(struct ship *sh)
{
	for (size_t i = 0; i < sh->nfills; i++)
		if (sh->fills[i].owned)
			close(sh->fills[i].fd);
	sh->nfills = 0;
}

/*
 * Read the payloads the batch left room for, without the node lock: the
 * value log never rewrites a record an event references.  0 or negative
 * errno with *why.
 */
static int fills_read(struct ship *sh, struct buf *out, const char **why)
{
	int rv = 0;

	for (size_t i = 0; rv == 0 && i < sh->nfills; i++) {
		struct fill *f = &sh->fills[i];

		rv = vlog_read_fd(f->fd, &f->ref, f->origin, f->seq, out->data + f->off + f->head,
				  why);
		if (rv == 0)
			event_seal(out->data + f->off, f->len);
	}
	fills_close(sh);
	return rv;
}

/*
 * Reserve the record a value-log event makes with its payload inline, and
 * note the payload for fills_read().  Node lock held.
 */
static int add_vref(struct ship *sh, struct buf *out, struct proto_batch *b, const struct event *ev,
		    size_t *shipped, const char **why)
{
	struct journal *j = node_journal(sh->r->n);
	size_t len = event_encoded_len(ev) + ev->vref.len, off;
	struct fill *f, *prev;
	int rv;

	rv = grow_array(&sh->fills, &sh->fills_cap, sh->nfills + 1);
	if (rv == 0)
		rv = proto_put_events_reserve(out, b, len, &off);
	if (rv < 0)
		return rv;
	f = &sh->fills[sh->nfills];
	*f = (struct fill){.off = off, .ref = ev->vref, .origin = ev->origin, .seq = ev->seq};
	rv = event_encode_inline_head(ev, out->data + off, len, &f->head, &f->len);
	prev = sh->nfills ? f - 1 : NULL;
	if (rv == 0 && prev && prev->ref.segment == ev->vref.segment) {
		f->fd = prev->fd;
	} else if (rv == 0) {
		rv = journal_payload_fd(j, ev->vref.segment, &f->fd, why);
		f->owned = rv == 0;
	}
	if (rv < 0) {
		/* Take the reserved record back: the batch ends before it. */
		out->len = off - 4;
		b->count--;
		return rv;
	}
	sh->nfills++;
	*shipped = len;
	return 0;
}

/*
 * Append one journal record to the batch; a value-log payload is read in
 * later (add_vref()).  *shipped is the record's size in the frame.  Node
 * lock held.
 */
static int add_record(struct ship *sh, struct buf *out, struct proto_batch *b, uint64_t origin,
		      uint64_t seq, const uint8_t *val, size_t len, size_t *shipped,
		      const char **why)
{
	struct event_head h;
	struct event ev;
	uint64_t tail_term;
	int rv;

	*shipped = len;
	rv = event_peek_header(val, len, &h, why);
	if (rv < 0)
		return rv;
	if (node_in_tail_locked(sh->r->n, origin, seq, &tail_term)) {
		/* Kept aside beyond a promotion: peers get the number, never the change. */
		struct event v = {.type = EV_VOID, .origin = origin, .seq = seq, .term = tail_term};

		return proto_put_events_add_event(out, b, &v);
	}
	if (!(h.flags & EVENT_F_VREF))
		return proto_put_events_add(out, b, val, len);
	rv = event_decode(val, len, &ev, NULL, why);
	if (rv == 0)
		rv = add_vref(sh, out, b, &ev, shipped, why);
	event_free(&ev);
	return rv;
}

/*
 * Events of subscribed origin i journaled beyond what was sent, up to
 * *tail.  Node lock held.  Our own events count once committed (for the
 * batching decision) but with durable set only those already synced are
 * in *tail; *unsynced says some wait for a sync.
 */
static uint64_t ready_count(struct ship *sh, unsigned i, uint64_t origin, int durable,
			    uint64_t *tail, int *unsynced)
{
	struct node *n = sh->r->n;

	if (origin == journal_node_id(node_journal(n))) {
		uint64_t synced = node_synced_seq(n);

		*tail = journal_next_seq(node_journal(n)) - 1;
		if (synced < *tail && *tail >= sh->next[i])
			*unsynced = 1;
		if (durable)
			*tail = synced;
	} else {
		*tail = journal_applied(node_journal(n), origin);
	}
	return *tail >= sh->next[i] ? *tail - sh->next[i] + 1 : 0;
}

/*
 * Build at most one batch into l->out.  Returns 1 if built, 0 if nothing
 * is due (*wait_ms says when to look again, -1 for never), negative errno.
 */
static int build_batch(struct ship *sh, int *wait_ms)
{
	struct repl *r = sh->r;
	struct node *n = r->n;
	struct link *l = sh->s->link;
	uint64_t origins[REPL_MAX_ORIGINS], total = 0, tail = 0;
	unsigned norigins, i, k;
	int unsynced = 0, rv = 0, built = 0;
	int64_t now = clock_mono_ms();
	const char *why = NULL;

	*wait_ms = -1;
	if (sh->nwin >= REPL_WINDOW)
		return 0;
	pthread_mutex_lock(&r->lock);
	norigins = r->norigins;
	memcpy(origins, r->origins, sizeof(origins[0]) * norigins);
	pthread_mutex_unlock(&r->lock);

	/*
	 * No node lock: the journal has its own, its iterators read a LevelDB
	 * snapshot, and only events that are committed (applied or voided) are
	 * taken - local ones up to node_synced_seq(), others up to the applied
	 * mark - so a commit in progress is never seen half-done.
	 */
	for (i = 0; i < norigins; i++)
		if (sh->next[i])
			total += ready_count(sh, i, origins[i], 0, &tail, &unsynced);
	if (total == 0) {
		sh->ready_since = 0;
		goto out;
	}
	if (!sh->ready_since)
		sh->ready_since = now;
	/*
	 * Batch only while a batch is in flight: on an idle link an event
	 * leaves as soon as it is durable (its ACK's round trip does the
	 * batching under load, as Nagle's algorithm does), and an fsync
	 * waiting for peers never waits for a batch to fill.
	 */
	if (sh->nwin > 0 && total < node_cfg(n)->batch_events &&
	    now - sh->ready_since < (int64_t)node_cfg(n)->batch_ms && !node_sync_waiting(n)) {
		*wait_ms = (int)(node_cfg(n)->batch_ms - (now - sh->ready_since));
		goto out;
	}
	if (unsynced) {
		/* Make our own events durable before they leave; the syncer groups callers. */
		rv = node_sync(n);
		if (rv < 0) {
			snprintf(l->why, sizeof(l->why), "journal sync failed: %s", strerror(-rv));
			return rv;
		}
	}
	for (k = 0; k < norigins; k++) {
		struct journal_iter *it = NULL;
		struct proto_batch b;
		uint64_t a, seq, bytes = 0, count = 0, want;
		const uint8_t *val;
		size_t len, shipped;

		i = (sh->rr + k) % norigins;
		if (!sh->next[i] || ready_count(sh, i, origins[i], 1, &tail, &unsynced) == 0)
			continue;
		rv = journal_iter_new(node_journal(n), JOURNAL_EVENTS, origins[i], sh->next[i], &it);
		if (rv == 0)
			rv = proto_put_events_begin(&l->out, &b);
		want = sh->next[i];
		while (rv == 0 && count < node_cfg(n)->batch_events && bytes < node_cfg(n)->batch_bytes &&
		       want <= tail) {
			rv = journal_iter_next(it, &a, &seq, NULL, NULL, &val, &len);
			if (rv <= 0 || a != origins[i] || seq != want) {
				snprintf(l->why, sizeof(l->why),
					 "journal lacks event %016" PRIx64 ":%" PRIu64
					 " it should hold; run fsck.ledgerfs",
					 origins[i], want);
				rv = rv < 0 ? rv : -ENOENT;
				break;
			}
			rv =
			    add_record(sh, &l->out, &b, origins[i], want, val, len, &shipped, &why);
			if (rv == -EMSGSIZE && count > 0) {
				rv = 0;
				break;
			}
			if (rv < 0) {
				snprintf(l->why, sizeof(l->why),
					 "cannot ship %016" PRIx64 ":%" PRIu64 ": %s", origins[i],
					 want, why ? why : strerror(-rv));
				break;
			}
			count++;
			bytes += shipped;
			want++;
		}
		journal_iter_free(it);
		if (rv == 0)
			rv = proto_put_events_end(&l->out, &b);
		if (rv < 0)
			break;
		sh->next[i] = want;
		sh->win[sh->nwin++] = (struct inflight){origins[i], want - 1};
		sh->rr = i + 1;
		rv = fills_read(sh, &l->out, &why);
		if (rv < 0) {
			snprintf(l->why, sizeof(l->why), "cannot ship %016" PRIx64 ": %s",
				 origins[i], why ? why : strerror(-rv));
			return rv;
		}
		pthread_mutex_lock(&r->lock);
		sh->p->events_sent += count;
		sh->p->bytes_sent += bytes;
		pthread_mutex_unlock(&r->lock);
		built = 1;
		sh->ready_since = 0;
		return built;
	}
out:
	fills_close(sh);
	return rv < 0 ? rv : built;
}

/* An ACK: persist the checkpoint and learn the peer's progress. */
static int take_ack(struct ship *sh, const struct proto_ack *ack)
{
	struct repl *r = sh->r;
	int rv = 0, idx, gone;

	/*
	 * Not for a peer removed meanwhile: reload_config() marks it gone under
	 * r->lock and forgets its checkpoints after that, so a checkpoint put
	 * under r->lock while it was not gone comes before the forget.
	 */
	pthread_mutex_lock(&r->lock);
	gone = sh->p->gone;
	if (!gone)
		rv = journal_checkpoint_put(node_journal(r->n), sh->s->peer_id, ack->origin, ack->seq);
	pthread_mutex_unlock(&r->lock);
	if (gone)
		return 0;
	if (rv == 0 && ack->origin == r->cfg.node_id)
		node_peer_confirmed(r->n, sh->s->peer_id, ack->seq);
	if (rv < 0) {
		snprintf(sh->s->link->why, sizeof(sh->s->link->why), "cannot record checkpoint: %s",
			 strerror(-rv));
		return rv;
	}
	pthread_mutex_lock(&r->lock);
	idx = repl_origin_index(r, ack->origin);
	if (idx >= 0 && ack->seq > sh->p->vec[idx]) {
		sh->p->vec[idx] = ack->seq;
		repl_wake_receivers(r);
	}
	pthread_mutex_unlock(&r->lock);
	window_ack(sh, ack->origin, ack->seq);
	return 0;
}

static int take_fetch(struct ship *sh, const struct proto_fetch *f)
{
	struct repl *r = sh->r;
	uint64_t trimmed = 0;
	int idx;

	if (f->from_seq) {
		journal_trimmed(node_journal(r->n), f->origin, &trimmed);
	}
	if (f->from_seq && f->from_seq <= trimmed) {
		snprintf(sh->s->link->why, sizeof(sh->s->link->why),
			 "peer asks for events of %016" PRIx64 " from %" PRIu64
			 " but they are trimmed up to %" PRIu64 ": it needs a snapshot resync",
			 f->origin, f->from_seq, trimmed);
		repl_send_error(sh->s->link, PROTO_ERR_TRIMMED, sh->s->link->why);
		return -ESTALE;
	}

	pthread_mutex_lock(&r->lock);
	idx = repl_origin_index(r, f->origin);
	if (idx >= 0)
		sh->s->sub[idx] = f->from_seq != 0;
	pthread_mutex_unlock(&r->lock);
	if (idx < 0) {
		snprintf(sh->s->link->why, sizeof(sh->s->link->why), "too many origins");
		return -ENOSPC;
	}
	window_drop_origin(sh, f->origin);
	sh->next[idx] = f->from_seq;
	return 0;
}

static int take_frame(struct ship *sh, const struct proto_msg *m)
{
	struct link *l = sh->s->link;

	switch (m->type) {
	case PROTO_ACK:
		return take_ack(sh, &m->ack);
	case PROTO_FETCH:
		return take_fetch(sh, &m->fetch);
	case PROTO_PING:
		return proto_put_pong(&l->out, m->nonce);
	case PROTO_PONG:
		return 0;
	case PROTO_SNAP_BEGIN:
	case PROTO_SNAP_SCOPE:
	case PROTO_SNAP_LIST:
	case PROTO_SNAP_GET:
	case PROTO_SNAP_DONE:
		return snap_send_frame(sh->r, l, &sh->snap, m, sh->s->name);
	case PROTO_ERROR:
		snprintf(l->why, sizeof(l->why), "peer closed the link: %s: %.180s",
			 proto_error_name(m->error.code), m->error.msg);
		return -ECONNRESET;
	default:
		snprintf(l->why, sizeof(l->why), "unexpected %s frame", proto_type_name(m->type));
		repl_send_error(l, PROTO_ERR_MALFORMED, l->why);
		return -EPROTO;
	}
}

/*
 * Judge the first frame of an inbound link (from cert_id; self: it is this
 * node's own certificate) and take what it says: a member's HELLO
 * subscribes, one with PROTO_HELLO_PUSH pushes (*push set).  Only a push
 * may come with our own certificate: `ledgerctl rescue --to-node` runs
 * beside this node with its node directory, and holds its key anyway.
 * 0 or a PROTO_ERR_* code with *why.
 */
static int take_first_frame(struct ship *sh, const struct proto_msg *m, uint64_t cert_id, int self,
			    int *push, const char **why)
{
	struct repl *r = sh->r;
	int code;

	if (m->type == PROTO_HELLO && (m->hello.flags & PROTO_HELLO_PUSH)) {
		pthread_mutex_lock(&r->lock);
		code = hello_check(r->cfg.cluster_id, cert_id, m, why);
		pthread_mutex_unlock(&r->lock);
		/* Terms and vectors are the events' business here: nothing is adopted. */
		*push = code == 0;
		return code;
	}
	if (self) {
		*why = "this node's own certificate may only push events (ledgerctl rescue)";
		return PROTO_ERR_MEMBER;
	}
	return repl_take_hello(r, sh->p, m, why);
}

/*
 * Identify the peer and exchange HELLOs (take_first_frame()).  *push says
 * the peer pushes events rather than subscribing; sh->p is then NULL if it
 * presented our own certificate.  0 or negative errno with l->why.
 */
static int greet(struct ship *sh, int *push)
{
	struct repl *r = sh->r;
	struct link *l = sh->s->link;
	struct proto_msg m;
	const char *reason = NULL;
	char why[REPL_WHY_MAX];
	uint64_t cert_id = 0;
	int rv, code, self;

	*push = 0;
	rv = repl_identify(r, l, NULL, &sh->p, why, sizeof(why));
	self =
	    rv < 0 && tls_peer_node_id(l->ssl, &cert_id, &reason) == 0 && cert_id == r->cfg.node_id;
	if (rv < 0 && !self) {
		snprintf(l->why, sizeof(l->why), "%s", why);
		repl_send_error(l, PROTO_ERR_MEMBER, why);
		return rv;
	}
	pthread_mutex_lock(&r->lock);
	if (self) {
		snprintf(sh->s->name, sizeof(sh->s->name), "%s", r->cfg.name);
		sh->p = NULL;
	} else {
		snprintf(sh->s->name, sizeof(sh->s->name), "%s", sh->p->cfg.name);
		cert_id = sh->p->cfg.id;
	}
	sh->s->peer_id = cert_id;
	sh->s->peer = sh->p;
	pthread_mutex_unlock(&r->lock);
	rv = link_recv(l, REPL_HELLO_TIMEOUT_MS, &m);
	if (rv < 0) {
		if (rv == -EAGAIN)
			snprintf(l->why, sizeof(l->why), "no HELLO within %d s",
				 REPL_HELLO_TIMEOUT_MS / 1000);
		repl_send_error(l, PROTO_ERR_MALFORMED, l->why);
		return rv == -EAGAIN ? -ETIMEDOUT : rv;
	}
	code = take_first_frame(sh, &m, cert_id, self, push, &reason);
	proto_msg_free(&m);
	if (code) {
		snprintf(l->why, sizeof(l->why), "bad HELLO: %s", reason);
		repl_send_error(l, (unsigned)code, reason);
		return -EACCES;
	}
	rv = repl_put_hello(r, l);
	if (rv == 0)
		rv = link_flush(l, REPL_SEND_TIMEOUT_MS);
	return rv;
}

/* Take the events a `ledgerctl rescue` pushes over this link, logging the outcome. */
static void take_push(struct ship *sh)
{
	struct repl_shipper *s = sh->s;
	uint64_t applied = 0;
	int rv;

	log_info("%s (%s) pushes events (ledgerctl rescue)%s", s->name, s->link->addr,
		 sh->p ? "" : " with this node's own certificate");
	rv = repl_push_receive(sh->r, sh->p, s->link, s->wake_fd, s->name, &applied);
	if (rv < 0)
		log_warn("events pushed by %s (%s) ended: %" PRIu64 " applied; %s", s->name,
			 s->link->addr, applied, s->link->why[0] ? s->link->why : strerror(-rv));
	else
		log_info("events pushed by %s (%s): %" PRIu64 " applied", s->name, s->link->addr,
			 applied);
}

static int serve(struct ship *sh)
{
	struct repl_shipper *s = sh->s;
	struct link *l = s->link;
	struct repl *r = sh->r;
	int rv = 0;

	sh->last_in = sh->last_out = clock_mono_ms();
	for (;;) {
		struct proto_msg m;
		int64_t now;
		int wait_ms, stop, mask;

		pthread_mutex_lock(&r->lock);
		stop = r->stopping || sh->p->gone;
		pthread_mutex_unlock(&r->lock);
		if (stop) {
			repl_send_error(l, PROTO_ERR_SHUTDOWN, "node stopping");
			return 0;
		}
		while ((rv = link_recv(l, 0, &m)) == 0) {
			sh->last_in = clock_mono_ms();
			rv = take_frame(sh, &m);
			proto_msg_free(&m);
			if (rv < 0)
				return rv;
		}
		if (rv != -EAGAIN)
			return rv;
		/* Announce sleep before looking, so a commit in between still wakes us. */
		__atomic_store_n(&s->sleeping, 1, __ATOMIC_SEQ_CST);
		rv = build_batch(sh, &wait_ms);
		if (rv < 0)
			return rv;
		now = clock_mono_ms();
		if (rv == 0 && l->out.len == 0 && now - sh->last_out >= REPL_PING_MS)
			rv = proto_put_ping(&l->out, ++sh->ping_nonce);
		if (rv >= 0 && l->out.len) {
			__atomic_store_n(&s->sleeping, 0, __ATOMIC_SEQ_CST);
			rv = link_flush(l, REPL_SEND_TIMEOUT_MS);
			sh->last_out = clock_mono_ms();
			if (rv < 0)
				return rv;
			continue;
		}
		if (now - sh->last_in >
		    (snap_send_active(sh->snap) ? REPL_SNAP_SILENT_MS : REPL_SILENT_MS)) {
			snprintf(l->why, sizeof(l->why), "peer silent for %d s",
				 (int)((now - sh->last_in) / 1000));
			return -ETIMEDOUT;
		}
		if (wait_ms < 0 || wait_ms > REPL_PING_MS)
			wait_ms = REPL_PING_MS;
		mask = link_wait(l, s->wake_fd, wait_ms);
		__atomic_store_n(&s->sleeping, 0, __ATOMIC_SEQ_CST);
		if (mask & 2)
			repl_drain(s->wake_fd);
	}
}

void *repl_shipper_main(void *arg)
{
	struct repl_shipper *s = arg;
	struct repl *r = s->r;
	struct ship *sh = calloc(1, sizeof(*sh));
	int rv, push = 0;

	if (!sh) {
		log_err("inbound link from %s: out of memory", s->link->addr);
		goto out;
	}
	sh->s = s;
	sh->r = r;
	rv = greet(sh, &push);
	if (rv < 0) {
		log_warn("refused inbound link from %s: %s", s->link->addr, s->link->why);
		goto out;
	}
	/* A push is no subscription: the peer's inbound link is not up for it. */
	if (push) {
		take_push(sh);
		goto out;
	}
	pthread_mutex_lock(&r->lock);
	sh->p->inbound++;
	pthread_mutex_unlock(&r->lock);
	log_info("peer %s (%s) subscribed", s->name, s->link->addr);
	rv = serve(sh);
	pthread_mutex_lock(&r->lock);
	sh->p->inbound--;
	pthread_mutex_unlock(&r->lock);
	if (rv < 0)
		log_warn("inbound link from peer %s (%s) dropped: %s", s->name, s->link->addr,
			 s->link->why[0] ? s->link->why : strerror(-rv));
	else
		log_info("inbound link from peer %s closed", s->name);
out:
	if (sh) {
		free(sh->fills);
		snap_send_free(sh->snap);
	}
	free(sh);
	pthread_mutex_lock(&r->lock);
	s->done = 1;
	pthread_mutex_unlock(&r->lock);
	return NULL;
}
