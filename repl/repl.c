/*
 * repl.c - starting and stopping replication, the listener, the
 * supervisor, peer identity, HELLO, and status (see repl.h).
 *
 * The supervisor re-reads the configuration file when it changes, so
 * `ledgerctl peer add|remove` takes effect on a running node: a removed
 * peer's links are dropped and it is refused from then on, an added one is
 * dialled.  It also reaps finished inbound links.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/clock.h"
#include "net/hello.h"
#include "node/checkpoint.h"
#include "lib/log.h"
#include "resync/merkle.h"
#include "net/tls.h"
#include "repl_int.h"

/* The supervisor looks at the config file and finished links this often. */
#define REPL_SUPERVISE_MS 500
/* And trims the journal this often (cheap when nothing is due). */
#define REPL_TRIM_MS 2000
/*
 * The trimmed ranges are compacted once LevelDB's files hold this fraction
 * of the journal's bound of trimmed events (journal_dead_bytes()), and at
 * least REPL_COMPACT_MIN.  A compaction rewrites every table file the
 * ranges overlap, and with trims' deletions written among new events that
 * is nearly all of them: after every sixteenth of the bound, 4-writer
 * random writes on a journal at its bound ran at half their rate.
 */
#define REPL_COMPACT_FRACTION 2
#define REPL_COMPACT_MIN      (1u << 20)
/*
 * Value-log segments are this fraction of the bound: the segment appends
 * go to is never deleted, so the value log can keep that much beyond it.
 */
#define REPL_VLOG_FRACTION 8

int64_t repl_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void repl_wake(int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("eventfd write: %s", strerror(errno));
}

void repl_drain(int fd)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("eventfd read: %s", strerror(errno));
}

int repl_origin_index(struct repl *r, uint64_t origin)
{
	unsigned i;

	/* Append-only: threads keep per-origin state by index. */
	for (i = 0; i < r->norigins; i++)
		if (r->origins[i] == origin)
			return (int)i;
	if (r->norigins == REPL_MAX_ORIGINS) {
		log_warn("more than %d origins; ignoring %016" PRIx64, REPL_MAX_ORIGINS, origin);
		return -1;
	}
	r->origins[r->norigins] = origin;
	r->applied[r->norigins] = 0;
	return (int)r->norigins++;
}

void repl_peer_set_state(struct repl_peer *p, enum repl_peer_state st, const char *why)
{
	int changed = st != p->state || strcmp(p->why, why ? why : "") != 0;

	if (st != p->state)
		p->since_ms = repl_wall_ms();
	if (changed) {
		if (st == REPL_PEER_CONNECTED)
			log_info("peer %s (%s): connected", p->cfg.name, p->cfg.address);
		else
			log_warn("peer %s (%s): %s%s%s", p->cfg.name, p->cfg.address,
				 repl_peer_state_name(st), why ? ": " : "", why ? why : "");
	}
	p->state = st;
	snprintf(p->why, sizeof(p->why), "%s", why ? why : "");
}

void repl_wake_receivers(struct repl *r)
{
	unsigned i;

	for (i = 0; i < r->npeers; i++)
		repl_wake(r->peers[i]->wake_fd);
}

void repl_on_commit(void *arg, uint64_t origin)
{
	struct repl *r = arg;
	struct repl_shipper *s;
	unsigned i;

	pthread_mutex_lock(&r->lock);
	/* No wake-ups for links that do not ship this origin: most of a replica's. */
	for (i = 0; i < r->norigins && r->origins[i] != origin; i++)
		;
	for (s = r->shippers; i < r->norigins && s; s = s->next)
		if (s->sub[i] && __atomic_exchange_n(&s->sleeping, 0, __ATOMIC_SEQ_CST))
			repl_wake(s->wake_fd);
	pthread_mutex_unlock(&r->lock);
}

void repl_send_error(struct link *l, unsigned code, const char *msg)
{
	char clean[PROTO_MAX_ERROR_MSG + 1];
	size_t i, k = 0;

	/* The wire wants printable UTF-8; our reasons may quote anything. */
	for (i = 0; msg && msg[i] && k < PROTO_MAX_ERROR_MSG; i++)
		clean[k++] = (msg[i] >= 0x20 && msg[i] < 0x7f) ? msg[i] : '?';
	clean[k] = '\0';
	buf_reset(&l->out);
	if (proto_put_error(&l->out, (uint16_t)code, clean) == 0)
		link_flush(l, 1000);
}

void repl_note(struct repl *r, const struct event *ev)
{
	struct repl_note *nt;

	if (ev->type != EV_OUTAGE && ev->type != EV_RECOVERED)
		return;
	if (ev->type == EV_OUTAGE)
		r->outages++;
	if (r->nnotes == REPL_MAX_NOTES) {
		memmove(&r->notes[0], &r->notes[1], sizeof(r->notes[0]) * (REPL_MAX_NOTES - 1));
		r->nnotes--;
	}
	nt = &r->notes[r->nnotes++];
	*nt = (struct repl_note){
	    .type = ev->type,
	    .origin = ev->origin,
	    .seq = ev->seq,
	    .time_ms = (int64_t)(ev->hlc >> 16),
	    .first = ev->base,
	    .last_seq = ev->length,
	};
}

/* Learn a configured peer's id from its CA-signed name, and save it.  r->lock held. */
static int learn_id(struct repl *r, struct repl_peer *p, uint64_t id)
{
	unsigned i;
	int rv;

	struct config disk;
	char err[512];

	p->cfg.id = id;
	for (i = 0; i < r->cfg.npeers; i++)
		if (!strcmp(r->cfg.peers[i].name, p->cfg.name))
			r->cfg.peers[i].id = id;
	/* Edit the file as it is now: a 'peer add' may have changed it since we read it. */
	rv = config_load(r->conf_path, &disk, err, sizeof(err));
	for (i = 0; rv == 0 && i < disk.npeers; i++)
		if (!strcmp(disk.peers[i].name, p->cfg.name) && !disk.peers[i].id)
			disk.peers[i].id = id;
	if (rv == 0)
		rv = config_save(r->conf_path, &disk);
	if (rv < 0)
		log_warn("%s: cannot save the id of peer %s: %s", r->conf_path, p->cfg.name,
			 strerror(-rv));
	log_info("peer %s is node %016" PRIx64 " (learned from its certificate)", p->cfg.name, id);
	return 0;
}

int repl_identify(struct repl *r, struct link *l, struct repl_peer *expect, struct repl_peer **out,
		  char *why, size_t whylen)
{
	char name[CONFIG_NAME_MAX] = "";
	const char *reason = NULL;
	struct repl_peer *match = NULL;
	uint64_t id = 0;
	unsigned i;
	int rv;

	rv = tls_peer_node_id(l->ssl, &id, &reason);
	if (rv < 0) {
		snprintf(why, whylen, "%s", reason);
		return -EACCES;
	}
	if (tls_peer_name(l->ssl, name, sizeof(name)) < 0)
		name[0] = '\0';
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->npeers && !match; i++) {
		struct repl_peer *p = r->peers[i];

		if (p->gone)
			continue;
		if (p->cfg.id ? p->cfg.id == id : !strcmp(p->cfg.name, name))
			match = p;
	}
	if (!match) {
		snprintf(why, whylen, "node %016" PRIx64 " (%s) is not a member of this cluster",
			 id, name[0] ? name : "no name");
		rv = -EACCES;
	} else if (expect && match != expect) {
		snprintf(why, whylen, "%s answered as node %016" PRIx64 " (%s), not as peer %s",
			 l->addr, id, name, expect->cfg.name);
		rv = -EACCES;
	} else {
		if (!match->cfg.id)
			learn_id(r, match, id);
		*out = match;
		rv = 0;
	}
	pthread_mutex_unlock(&r->lock);
	return rv;
}

int repl_evid_cmp(const void *a, const void *b)
{
	const struct evid *x = a, *y = b;

	return x->origin < y->origin ? -1 : x->origin > y->origin;
}

int repl_put_hello(struct repl *r, struct link *l)
{
	struct proto_hello h = {0};
	struct evid vec[REPL_MAX_ORIGINS];
	unsigned i;
	int rv;

	struct node_state ns;

	node_state(r->n, &ns);
	h.term = ns.term;
	h.primary = ns.role_origin;
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->norigins; i++) {
		vec[i].origin = r->origins[i];
		vec[i].seq = journal_applied(node_journal(r->n), r->origins[i]);
	}
	h.count = r->norigins;
	pthread_mutex_unlock(&r->lock);
	qsort(vec, h.count, sizeof(vec[0]), repl_evid_cmp);
	memcpy(h.cluster_id, r->cfg.cluster_id, sizeof(h.cluster_id));
	h.node_id = r->cfg.node_id;
	h.applied = vec;
	rv = proto_put_hello(&l->out, &h);
	return rv;
}

int repl_take_hello(struct repl *r, struct repl_peer *p, const struct proto_msg *m,
		    const char **why)
{
	const struct proto_hello *h = &m->hello;
	uint32_t i;
	int code;

	pthread_mutex_lock(&r->lock);
	code = hello_check(r->cfg.cluster_id, p->cfg.id, m, why);
	for (i = 0; code == 0 && i < h->count; i++) {
		int idx = repl_origin_index(r, h->applied[i].origin);

		if (idx >= 0)
			p->vec[idx] = h->applied[i].seq;
	}
	pthread_mutex_unlock(&r->lock);
	/* Terms: adopt a higher one (a primary steps down), refuse a second primary. */
	if (code == 0 && node_see_term(r->n, h->term, h->primary) < 0) {
		*why = "two primaries claim the same term";
		code = PROTO_ERR_TERM;
	}
	if (code == 0) {
		struct node_state ns;

		node_state(r->n, &ns);
		pthread_mutex_lock(&r->lock);
		if (ns.role_origin)
			r->primary_id = ns.role_origin;
		pthread_mutex_unlock(&r->lock);
	}
	return code;
}

/* ---- the listener ---------------------------------------------------- */

struct accepted {
	struct repl *r;
	int fd;
};

static void start_shipper(struct repl *r, int fd)
{
	struct repl_shipper *s = calloc(1, sizeof(*s));
	char why[LINK_WHY_MAX];
	int rv;

	if (!s) {
		close(fd);
		return;
	}
	s->r = r;
	s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->wake_fd < 0) {
		close(fd);
		free(s);
		return;
	}
	/* The handshake runs here: a slow client delays only other handshakes, for at most 5 s. */
	rv = link_accept(fd, r->server_ctx, REPL_DIAL_TIMEOUT_MS, &s->link, why, sizeof(why));
	if (rv < 0) {
		log_warn("refused inbound connection: %s", why);
		close(s->wake_fd);
		free(s);
		return;
	}
	pthread_mutex_lock(&r->lock);
	rv = -pthread_create(&s->thread, NULL, repl_shipper_main, s);
	if (rv == 0) {
		s->next = r->shippers;
		r->shippers = s;
	}
	pthread_mutex_unlock(&r->lock);
	if (rv < 0) {
		log_err("cannot start a thread for %s: %s", s->link->addr, strerror(-rv));
		link_close(s->link);
		close(s->wake_fd);
		free(s);
	}
}

static void *listener_main(void *arg)
{
	struct repl *r = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = r->listen_fd, .events = POLLIN},
				      {.fd = r->stop_fd, .events = POLLIN}};
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR) {
			log_err("listener poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept on %s: %s", r->cfg.listen, strerror(errno));
			continue;
		}
		start_shipper(r, fd);
	}
	return NULL;
}

static int open_listener(struct repl *r)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
	char host[CONFIG_ADDR_MAX], *port;
	int fd = -1, one = 1, g, rv;

	snprintf(host, sizeof(host), "%s", r->cfg.listen);
	port = strrchr(host, ':');
	if (!port)
		return -EINVAL;
	*port++ = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	g = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, port, &hints, &res);
	if (g != 0) {
		log_err("listen %s: %s", r->cfg.listen, gai_strerror(g));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		rv = -errno;
		log_err("listen %s: %s", r->cfg.listen, strerror(-rv));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return rv;
	}
	freeaddrinfo(res);
	r->listen_fd = fd;
	return 0;
}

/* ---- peers and the supervisor ---------------------------------------- */

/* Add a peer and start its receiver.  r->lock held. */
static int add_peer(struct repl *r, const struct config_peer *cp)
{
	struct repl_peer *p = calloc(1, sizeof(*p));
	int rv;

	if (!p)
		return -ENOMEM;
	p->r = r;
	p->cfg = *cp;
	p->state = REPL_PEER_CONNECTING;
	p->since_ms = repl_wall_ms();
	p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->wake_fd < 0) {
		rv = -errno;
		free(p);
		return rv;
	}
	if (cp->id)
		repl_origin_index(r, cp->id);
	r->peers[r->npeers++] = p;
	rv = -pthread_create(&p->thread, NULL, repl_receiver_main, p);
	if (rv < 0) {
		r->npeers--;
		close(p->wake_fd);
		free(p);
		return rv;
	}
	p->thread_running = 1;
	return 0;
}

static void free_peer(struct repl_peer *p)
{
	if (p->thread_running)
		pthread_join(p->thread, NULL);
	close(p->wake_fd);
	free(p);
}

/*
 * Apply a changed membership: drop removed peers, start added ones.  A
 * peer whose section names a different node than the one known here (an
 * id that differs, or none where one was learned: `peer remove` and `peer
 * add` of a node made again under its name, both seen by one reload) is a
 * removed peer and an added one: its links are dropped, its id is learned
 * afresh from its certificate, and the old id's checkpoints are forgotten,
 * so the old node neither keeps the new one out nor holds back trimming.
 */
static void reload_config(struct repl *r)
{
	struct config cfg;
	struct repl_peer *gone[CONFIG_MAX_PEERS];
	unsigned i, j, ngone = 0, k = 0;
	char err[512];
	int rv;

	/*
	 * Read under the lock: learn_id() saves a learned id under it, so a
	 * file read before that save cannot be taken for the peer's section
	 * written again without its id.
	 */
	pthread_mutex_lock(&r->lock);
	if (config_load(r->conf_path, &cfg, err, sizeof(err)) < 0) {
		pthread_mutex_unlock(&r->lock);
		log_warn("configuration not reloaded: %s", err);
		return;
	}
	for (i = 0; i < r->npeers; i++) {
		struct repl_peer *p = r->peers[i];
		int keep = 0;

		for (j = 0; j < cfg.npeers; j++) {
			if (strcmp(cfg.peers[j].name, p->cfg.name))
				continue;
			if (p->cfg.id && cfg.peers[j].id != p->cfg.id) {
				log_info("peer %s is node %016" PRIx64 " no more: %s", p->cfg.name,
					 p->cfg.id,
					 cfg.peers[j].id ? "the configuration names another id"
							 : "its id is learned afresh");
				break;
			}
			keep = 1;
			snprintf(p->cfg.address, sizeof(p->cfg.address), "%s",
				 cfg.peers[j].address);
			if (cfg.peers[j].id)
				p->cfg.id = cfg.peers[j].id;
		}
		if (keep) {
			r->peers[k++] = p;
		} else {
			if (j == cfg.npeers)
				log_info("peer %s removed from the configuration", p->cfg.name);
			p->gone = 1;
			repl_wake(p->wake_fd);
			gone[ngone++] = p;
		}
	}
	r->npeers = k;
	r->cfg.npeers = cfg.npeers;
	memcpy(r->cfg.peers, cfg.peers, sizeof(cfg.peers));
	for (j = 0; j < cfg.npeers; j++) {
		int known = 0;

		for (i = 0; i < r->npeers; i++)
			known |= !strcmp(r->peers[i]->cfg.name, cfg.peers[j].name);
		if (!known) {
			log_info("peer %s added to the configuration", cfg.peers[j].name);
			if (add_peer(r, &cfg.peers[j]) < 0)
				log_err("cannot start a link to peer %s", cfg.peers[j].name);
		}
	}
	/* Inbound links of removed peers notice p->gone through their peer pointer. */
	for (struct repl_shipper *s = r->shippers; s; s = s->next)
		repl_wake(s->wake_fd);
	pthread_mutex_unlock(&r->lock);
	/*
	 * Inbound links may still point at a removed peer until they notice
	 * it is gone, so its memory is kept until repl_stop().  They record no
	 * checkpoint once it is gone (take_ack()), so none comes back.
	 */
	for (i = 0; i < ngone; i++) {
		if (gone[i]->cfg.id) {
			node_peer_forget(r->n, gone[i]->cfg.id);
			rv = journal_checkpoint_forget(node_journal(r->n), gone[i]->cfg.id);
			if (rv < 0)
				log_warn("cannot forget the checkpoints of node %016" PRIx64
					 " (peer %s): %s",
					 gone[i]->cfg.id, gone[i]->cfg.name, strerror(-rv));
		}
		if (gone[i]->thread_running)
			pthread_join(gone[i]->thread, NULL);
		gone[i]->thread_running = 0;
		pthread_mutex_lock(&r->lock);
		gone[i]->retired_next = r->retired;
		r->retired = gone[i];
		pthread_mutex_unlock(&r->lock);
	}
}

/* Join inbound links whose thread finished.  With all set, wait for every one. */
static void reap_shippers(struct repl *r, int all)
{
	for (;;) {
		struct repl_shipper **pp, *s = NULL;

		pthread_mutex_lock(&r->lock);
		for (pp = &r->shippers; *pp; pp = &(*pp)->next) {
			if ((*pp)->done || all) {
				s = *pp;
				*pp = s->next;
				break;
			}
		}
		pthread_mutex_unlock(&r->lock);
		if (!s)
			return;
		pthread_join(s->thread, NULL);
		link_close(s->link);
		close(s->wake_fd);
		free(s);
	}
}

/*
 * Trim each origin's events that every member confirmed and that
 * retention lets go (older than retain_age, or any age while the journal
 * is over its bound: *excess, which the walk lowers), never a kept-aside
 * tail; with retain_max_age also events older than that which a member
 * has not confirmed (it will need a snapshot resync: its next FETCH is
 * answered TRIMMED).  Node lock held.
 */
static void trim_origin(struct repl *r, const struct config *cfg, uint64_t origin, uint64_t *excess,
			int *floored)
{
	struct node *n = r->n;
	uint64_t applied = journal_applied(node_journal(n), origin), confirmed = applied,
		 bound = applied;
	uint64_t ck, upto = 0, forced = 0, count = 0;
	unsigned i;
	int rv = 0, stored_cut;

	for (i = 0; i < cfg->npeers && rv == 0; i++) {
		/* A member never seen has confirmed nothing. */
		ck = 0;
		if (cfg->peers[i].id)
			rv = journal_checkpoint_get(node_journal(n), cfg->peers[i].id, origin, &ck);
		if (cfg->peers[i].id == origin)
			continue;
		if (ck < confirmed)
			confirmed = ck;
	}
	/* The archive is a member too: what it lacks stays. */
	if (rv == 0 && cfg->archive_repo[0]) {
		ck = archive_done(node_journal(n), origin);
		if (ck < confirmed)
			confirmed = ck;
		if (ck < bound)
			bound = ck;
	}
	bound = node_tail_floor(n, origin, bound);
	/* The redo after a power loss needs what the last store checkpoint does not cover. */
	ck = node_stored_floor(n, origin, bound);
	stored_cut = ck < bound;
	bound = ck;
	if (confirmed > bound)
		confirmed = bound;
	if (rv == 0 && confirmed)
		rv = journal_trim_point(node_journal(n), origin, confirmed, cfg->retain_age_sec * 1000,
					(uint64_t)repl_wall_ms(), excess, &upto);
	if (rv == 0 && cfg->retain_max_age_sec && bound > confirmed)
		rv = journal_trim_point(node_journal(n), origin, bound, cfg->retain_max_age_sec * 1000,
					(uint64_t)repl_wall_ms(), NULL, &forced);
	if (forced > upto)
		upto = forced;
	else
		forced = 0;
	/* Retention would trim past the store checkpoint: the caller asks for one. */
	if (stored_cut && upto == bound)
		*floored = 1;
	if (rv == 0 && upto)
		rv = journal_trim(node_journal(n), origin, upto, &count);
	if (rv < 0)
		log_warn("cannot trim the events of %016" PRIx64 ": %s", origin, strerror(-rv));
	else if (count && forced > confirmed)
		log_warn("trimmed %" PRIu64 " events of %016" PRIx64 " up to seq %" PRIu64
			 " past retain_max_age; members that confirmed only up to %" PRIu64
			 " will resync by snapshot",
			 count, origin, upto, confirmed);
	else if (count)
		log_info("trimmed %" PRIu64 " events of %016" PRIx64 " up to seq %" PRIu64
			 ", confirmed by every member",
			 count, origin, upto);
}

/*
 * The journal's bound (config_retain_bound()) for cfg, from the size of
 * the filesystem that holds it.
 */
static uint64_t journal_bound(struct repl *r, const struct config *cfg)
{
	char path[4096 + sizeof(NODE_JOURNAL_DIR) + 1];
	struct statvfs vfs;
	uint64_t fs_bytes = 0;

	snprintf(path, sizeof(path), "%s/%s", node_dir(r->n), NODE_JOURNAL_DIR);
	if (statvfs(path, &vfs) == 0)
		fs_bytes = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	else if (!r->bound_warned++)
		log_warn("%s: statvfs: %s; the journal's bound is taken as %llu MiB", path,
			 strerror(errno), CONFIG_RETAIN_AUTO_MAX >> 20);
	return config_retain_bound(cfg, fs_bytes);
}

/*
 * One round of trimming, then, once LevelDB's files hold bound /
 * REPL_COMPACT_FRACTION bytes of trimmed events (at least
 * REPL_COMPACT_MIN), a compaction of the trimmed ranges without the node
 * lock.  The size measured against the bound is what the journal keeps:
 * its size on disk less those trimmed bytes not yet freed, or each round
 * would trim younger events for space already freed.  So the journal on
 * disk stays under the bound plus that fraction of it; LevelDB's own
 * compactions free some of it meanwhile.  Supervisor thread only.
 */
static void trim_journal(struct repl *r)
{
	uint64_t origins[REPL_MAX_ORIGINS], marks[REPL_MAX_ORIGINS];
	uint64_t bound, ldb = 0, vbytes = 0, excess = 0, dead, every;
	struct journal *j = node_journal(r->n);
	struct config cfg;
	unsigned i, norigins, ncompact = 0;
	int floored = 0;

	pthread_mutex_lock(&r->lock);
	cfg = r->cfg;
	norigins = r->norigins;
	memcpy(origins, r->origins, sizeof(origins[0]) * norigins);
	pthread_mutex_unlock(&r->lock);
	bound = journal_bound(r, &cfg);
	every = bound / REPL_COMPACT_FRACTION;
	if (every < REPL_COMPACT_MIN)
		every = REPL_COMPACT_MIN;
	/* The journal's own lock is enough: writers do not wait for a trim. */
	journal_set_vlog_segment_max(j, bound / REPL_VLOG_FRACTION);
	dead = journal_dead_bytes(j);
	if (journal_disk_usage(j, &ldb, &vbytes) == 0) {
		ldb = ldb > dead ? ldb - dead : 0;
		if (ldb + vbytes > bound)
			excess = ldb + vbytes - bound;
	}
	for (i = 0; i < norigins; i++)
		trim_origin(r, &cfg, origins[i], &excess, &floored);
	/* Events only the store checkpoint holds back: one now, not at its interval. */
	if (floored)
		node_checkpoint_soon(r->n);
	if (journal_dead_bytes(j) >= every)
		for (i = 0; i < norigins; i++)
			if (journal_trimmed(j, origins[i], &marks[ncompact]) == 0 && marks[ncompact])
				origins[ncompact++] = origins[i];
	pthread_mutex_lock(&r->lock);
	r->journal_bound = bound;
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < ncompact; i++)
		journal_compact_events(j, origins[i], marks[i]);
}

static void *supervisor_main(void *arg)
{
	struct repl *r = arg;
	struct stat st;
	struct timespec seen = {0};

	int64_t next_trim = clock_mono_ms() + REPL_TRIM_MS;

	if (stat(r->conf_path, &st) == 0)
		seen = st.st_mtim;
	for (;;) {
		struct pollfd p = {.fd = r->stop_fd, .events = POLLIN};

		if (poll(&p, 1, REPL_SUPERVISE_MS) > 0)
			break;
		reap_shippers(r, 0);
		if (clock_mono_ms() >= next_trim) {
			trim_journal(r);
			next_trim = clock_mono_ms() + REPL_TRIM_MS;
		}
		if (stat(r->conf_path, &st) == 0 &&
		    (st.st_mtim.tv_sec != seen.tv_sec || st.st_mtim.tv_nsec != seen.tv_nsec)) {
			seen = st.st_mtim;
			reload_config(r);
		}
	}
	return NULL;
}

/* ---- status ---------------------------------------------------------- */

/* Size and age of the events of origin after seq that a peer has not confirmed. */
static void measure_lag(struct repl *r, uint64_t origin, uint64_t from, uint64_t to,
			uint64_t *bytes, int64_t *oldest_ms)
{
	struct journal_iter *it = NULL;
	uint64_t a, b, scanned = 0;
	const uint8_t *val;
	size_t len;

	if (from > to || journal_iter_new(node_journal(r->n), JOURNAL_EVENTS, origin, from, &it) < 0)
		return;
	/* Status must stay cheap: sample the first 2,000 and scale. */
	while (scanned < 2000 && journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0 &&
	       a == origin && b <= to) {
		struct event ev;
		const char *why;

		if (event_decode(val, len, &ev, NULL, &why) == 0) {
			if (scanned == 0 && (!*oldest_ms || (int64_t)(ev.hlc >> 16) < *oldest_ms))
				*oldest_ms = (int64_t)(ev.hlc >> 16);
			*bytes += len + ((ev.flags & EVENT_F_VREF) ? ev.vref.len : 0);
			event_free(&ev);
		}
		scanned++;
	}
	if (scanned && to - from + 1 > scanned)
		*bytes = *bytes / scanned * (to - from + 1);
	journal_iter_free(it);
}

/* Events of origin from..to that peer k of a status has not confirmed. */
struct lag_scan {
	unsigned peer;
	uint64_t origin, from, to;
};

/*
 * What peer p confirmed, and the ranges it has not (scans, *nscans) that
 * repl_status() measures once it has let go of the locks.  Both locks held.
 */
static void peer_status(struct repl *r, struct repl_peer *p, unsigned k, unsigned norigins,
			const uint64_t *origins, const uint64_t *applied,
			struct repl_peer_status *ps, struct lag_scan *scans, unsigned *nscans)
{
	unsigned i;

	for (i = 0; i < norigins; i++) {
		uint64_t ck = 0;

		if (p->cfg.id)
			journal_checkpoint_get(node_journal(r->n), p->cfg.id, origins[i], &ck);
		if (origins[i] == p->cfg.id)
			ck = applied[i] > ck ? applied[i] : ck;
		if (ck)
			ps->checkpoints[ps->ncheckpoints++] = (struct evid){origins[i], ck};
		if (applied[i] > ck && origins[i] != p->cfg.id) {
			ps->lag_events += applied[i] - ck;
			scans[(*nscans)++] = (struct lag_scan){k, origins[i], ck + 1, applied[i]};
		}
	}
}

/*
 * Sizes and ages of the unconfirmed ranges, read without the locks: the
 * reads take milliseconds that a receiver holding up for them would lose.
 * LevelDB iterators read a consistent view of a journal trimmed meanwhile.
 */
static void measure_lags(struct repl *r, struct repl_status *st, const struct lag_scan *scans,
			 unsigned nscans)
{
	int64_t oldest[CONFIG_MAX_PEERS] = {0};
	unsigned i;

	for (i = 0; i < nscans; i++)
		measure_lag(r, scans[i].origin, scans[i].from, scans[i].to,
			    &st->peers[scans[i].peer].lag_bytes, &oldest[scans[i].peer]);
	for (i = 0; i < st->npeers; i++)
		if (st->peers[i].lag_events && oldest[i])
			st->peers[i].lag_seconds =
			    oldest[i] < st->now_ms ? (double)(st->now_ms - oldest[i]) / 1000.0 : 0.0;
}

int repl_status(struct repl *r, struct repl_status *st)
{
	uint64_t origins[REPL_MAX_ORIGINS], applied[REPL_MAX_ORIGINS];
	struct lag_scan scans[CONFIG_MAX_PEERS * REPL_MAX_ORIGINS];
	struct repl_peer_status *ps;
	unsigned i, k, norigins, nscans = 0;
	uint64_t vlog_bytes = 0;
	int in_sync = 1;
	int64_t now_mono = clock_mono_ms();

	memset(st, 0, sizeof(*st));
	st->now_ms = repl_wall_ms();
	{
		struct node_state ns;

		node_state(r->n, &ns);
		st->primary = ns.primary;
		st->term = ns.term;
		st->degraded = ns.degraded;
		st->ntails = ns.ntails;
		memcpy(st->tails, ns.tails, sizeof(st->tails[0]) * ns.ntails);
		st->rebuild_needed = ns.rebuild_needed;
	}
	st->sync_peers = node_cfg(r->n)->sync_peers;
	if (r->archiver) {
		archiver_status(r->archiver, &st->archive);
	} else if (r->archive_failed) {
		st->archive.on = 1;
		snprintf(st->archive.error, sizeof(st->archive.error),
			 "the archiver could not start (see the log)");
	}
	/* The rest needs the journal's own lock and the peers', not the node's. */
	journal_disk_usage(node_journal(r->n), &st->journal_bytes, &vlog_bytes);
	st->journal_bytes += vlog_bytes;
	pthread_mutex_lock(&r->lock);
	st->journal_bound = r->journal_bound;
	snprintf(st->name, sizeof(st->name), "%s", r->cfg.name);
	snprintf(st->listen, sizeof(st->listen), "%s", r->cfg.listen);
	st->node_id = r->cfg.node_id;
	norigins = r->norigins;
	for (i = 0; i < norigins; i++) {
		origins[i] = r->origins[i];
		applied[i] = journal_applied(node_journal(r->n), origins[i]);
		st->applied[i] = (struct evid){origins[i], applied[i]};
		st->oldest[i].origin = origins[i];
		journal_oldest(node_journal(r->n), origins[i], &st->oldest[i].seq);
	}
	st->norigins = norigins;
	st->npeers = r->npeers;
	for (k = 0; k < r->npeers; k++) {
		struct repl_peer *p = r->peers[k];

		ps = &st->peers[k];
		snprintf(ps->name, sizeof(ps->name), "%s", p->cfg.name);
		snprintf(ps->address, sizeof(ps->address), "%s", p->cfg.address);
		snprintf(ps->why, sizeof(ps->why), "%s", p->why);
		ps->id = p->cfg.id;
		ps->state = p->state;
		ps->since_ms = p->since_ms;
		ps->retry_in_ms = p->state == REPL_PEER_RETRYING && p->retry_at > now_mono
				      ? (uint64_t)(p->retry_at - now_mono)
				      : 0;
		ps->inbound = p->inbound > 0;
		ps->events_sent = p->events_sent;
		ps->bytes_sent = p->bytes_sent;
		ps->events_received = p->events_received;
		ps->bytes_received = p->bytes_received;
		ps->connects = p->connects;
		peer_status(r, p, k, norigins, origins, applied, ps, scans, &nscans);
		for (i = 0; i < norigins; i++)
			if (origins[i] == r->cfg.node_id)
				for (unsigned c = 0; c < ps->ncheckpoints; c++)
					if (ps->checkpoints[c].origin == origins[i] &&
					    ps->checkpoints[c].seq >= applied[i])
						ps->synchronous = p->state == REPL_PEER_CONNECTED;
		if (p->state != REPL_PEER_CONNECTED || !ps->inbound || ps->lag_events)
			in_sync = 0;
		for (i = 0; i < norigins; i++)
			if (p->vec[i] > applied[i])
				in_sync = 0;
	}
	st->nnotes = r->nnotes;
	st->outages = r->outages;
	memcpy(st->notes, r->notes, sizeof(r->notes[0]) * r->nnotes);
	st->snap_needed = r->snap_needed;
	st->snap = r->snap;
	st->div = r->div;
	if (r->div.state == REPL_DIV_STOPPED && r->div_retry_at > clock_mono_ms())
		st->div.retry_in_ms = r->div_retry_at - clock_mono_ms();
	st->divergences = r->divergences;
	st->heals = r->heals;
	st->heal_failures = r->heal_failures;
	st->heal_entries = r->heal_entries;
	st->heal_bytes = r->heal_bytes;
	st->in_sync = in_sync && !r->snap_needed && !repl_diverged(&r->div);
	pthread_mutex_unlock(&r->lock);
	measure_lags(r, st, scans, nscans);
	return 0;
}

static int status_snapshot(void *arg, struct repl_status *st)
{
	return repl_status(arg, st);
}

/*
 * "applied": "ok: moves=M ORIGIN:SEQ ...\n", the applied vector (origins in
 * hex) read under the node lock, so that every change the store shows
 * when the reply is built is counted in it, and store_moves() (renames and
 * links begun so far).  A backup reads it before and after it walks the
 * store: see cmd/ledgerctl/cmd_backup.c.  "pause" (hold) replies the same
 * and keeps the node lock until the client lets go (control_release()):
 * a backup's walk of a store renamed in constantly.
 */
static int control_applied(struct repl *r, int hold, char *reply, size_t len)
{
	uint64_t origins[REPL_MAX_ORIGINS], seqs[REPL_MAX_ORIGINS], moves;
	unsigned n, i;
	size_t used;
	int w;

	pthread_mutex_lock(&r->lock);
	n = r->norigins;
	memcpy(origins, r->origins, n * sizeof(origins[0]));
	pthread_mutex_unlock(&r->lock);
	node_lock(r->n);
	for (i = 0; i < n; i++)
		seqs[i] = journal_applied(node_journal(r->n), origins[i]);
	moves = store_moves(node_store(r->n));
	if (!hold)
		node_unlock(r->n);
	w = snprintf(reply, len, "ok: moves=%" PRIu64, moves);
	used = w > 0 ? (size_t)w : 0;
	for (i = 0; i < n && used < len; i++) {
		w = snprintf(reply + used, len - used, " %016" PRIx64 ":%" PRIu64, origins[i],
			     seqs[i]);
		used += w > 0 ? (size_t)w : 0;
	}
	if (used + 2 > len) {
		if (hold)
			node_unlock(r->n);
		snprintf(reply, len, "error: applied: vector longer than a reply\n");
		return 0;
	}
	memcpy(reply + used, "\n", 2);
	if (hold)
		log_info("the control socket's client holds the node lock (ledgerctl backup)");
	return hold ? CONTROL_HOLD : 0;
}

/*
 * "history": "ok: term=T ORIGIN:TERM:SEQ ...\n", the node's term and its
 * fences (node.c: a promotion at TERM cut ORIGIN's history at SEQ; hex
 * origins), what a backup's manifest carries.  A backup whose span holds
 * no event asks for it instead of opening a copy of the journal.
 */
static int control_history(struct repl *r, char *reply, size_t len)
{
	void *val = NULL;
	size_t vlen = 0, used, i;
	int w;

	w = snprintf(reply, len, "ok: term=%" PRIu64, node_term(r->n));
	used = w > 0 ? (size_t)w : 0;
	if (journal_meta_get(node_journal(r->n), JOURNAL_META_FENCES, &val, &vlen) < 0)
		vlen = 0;
	for (i = 0; i + 24 <= vlen && used < len; i += 24) {
		const uint8_t *f = (const uint8_t *)val + i;

		w = snprintf(reply + used, len - used, " %016" PRIx64 ":%" PRIu64 ":%" PRIu64,
			     get_le64(f), get_le64(f + 8), get_le64(f + 16));
		used += w > 0 ? (size_t)w : 0;
	}
	free(val);
	if (used + 2 > len) {
		snprintf(reply, len, "error: history: longer than a reply\n");
		return 0;
	}
	memcpy(reply + used, "\n", 2);
	return 0;
}

/* After "pause": the client closed the connection (or the wait ended). */
static void control_release(void *arg)
{
	struct repl *r = arg;

	node_unlock(r->n);
	log_info("the control socket's client let go of the node lock");
}

/* Control requests beyond status: promote, demote, applied, pause. */
static int control_action(void *arg, const char *req, char *reply, size_t len)
{
	struct repl *r = arg;
	uint64_t term = 0;
	int rv;

	if (!strcmp(req, "promote")) {
		rv = node_promote(r->n, &term);
		if (rv == 0) {
			pthread_mutex_lock(&r->lock);
			r->primary_id = r->cfg.node_id;
			pthread_mutex_unlock(&r->lock);
			snprintf(reply, len, "ok: %s is primary of term %" PRIu64 "\n", r->cfg.name,
				 term);
		}
	} else if (!strcmp(req, "applied") || !strcmp(req, "pause")) {
		return control_applied(r, !strcmp(req, "pause"), reply, len);
	} else if (!strcmp(req, "history")) {
		return control_history(r, reply, len);
	} else if (!strcmp(req, "demote")) {
		rv = node_demote(r->n, "demoted by ledgerctl");
		if (rv == 0)
			snprintf(reply, len, "ok: %s is a replica\n", r->cfg.name);
	} else {
		return -ENOENT;
	}
	if (rv < 0)
		snprintf(reply, len, "error: %s: %s\n", req, strerror(-rv));
	return 0;
}

/* ---- start and stop -------------------------------------------------- */

/* Origins the journal knows, and the OUTAGE/RECOVERED events it holds.  Node lock held. */
static int load_journal_state(struct repl *r)
{
	struct journal_iter *it = NULL;
	uint64_t a, b;
	const uint8_t *val;
	size_t len;
	int rv;

	repl_origin_index(r, r->cfg.node_id);
	rv = journal_iter_new(node_journal(r->n), JOURNAL_APPLIED, 0, 0, &it);
	while (rv == 0 && journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0)
		repl_origin_index(r, a);
	journal_iter_free(it);
	it = NULL;
	if (rv == 0)
		rv = journal_iter_new(node_journal(r->n), JOURNAL_EVENTS, 0, 0, &it);
	/* Only the few state events are decoded. */
	while (rv == 0 && journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0) {
		struct event_head h;
		struct event ev;
		const char *why;

		if (event_peek_header(val, len, &h, NULL) == 0 &&
		    (h.type == EV_OUTAGE || h.type == EV_RECOVERED) &&
		    event_decode(val, len, &ev, NULL, &why) == 0) {
			repl_note(r, &ev);
			event_free(&ev);
		}
	}
	journal_iter_free(it);
	return rv;
}

static int is_peer_id(const struct config *cfg, uint64_t id)
{
	for (unsigned i = 0; i < cfg->npeers; i++)
		if (cfg->peers[i].id == id)
			return 1;
	return 0;
}

/*
 * Forget the checkpoints of nodes that are no peers any more: removed, or
 * replaced by a node made again under their name, while this node was
 * stopped (reload_config() forgets them while it runs).  A peer whose id
 * is not known yet may be one of them: its confirmations come again when
 * it connects.  The archive's progress (ARCHIVE_PEER_ID) is no peer's.
 * Node lock held.
 */
static int forget_departed(struct repl *r)
{
	struct journal_iter *it = NULL;
	uint64_t from = 0, peer = 0;
	int rv, found;

	for (;;) {
		rv = journal_iter_new(node_journal(r->n), JOURNAL_CHECKPOINTS, from, 0, &it);
		if (rv < 0)
			return rv;
		found = 0;
		/* A malformed key is reported by the iterator and stepped over. */
		while ((rv = journal_iter_next(it, &peer, NULL, NULL, NULL, NULL, NULL)) > 0 ||
		       rv == -EBADMSG)
			if (rv > 0 && peer != ARCHIVE_PEER_ID && !is_peer_id(&r->cfg, peer)) {
				found = 1;
				break;
			}
		journal_iter_free(it);
		if (rv < 0)
			return rv;
		if (!found)
			return 0;
		rv = journal_checkpoint_forget(node_journal(r->n), peer);
		if (rv < 0)
			return rv;
		log_info("forgot the checkpoints of node %016" PRIx64 ", no peer any more", peer);
		if (peer == UINT64_MAX)
			return 0;
		from = peer + 1;
	}
}

int repl_start(struct node *n, const struct repl_hooks *hooks, struct repl **out)
{
	struct repl *r = calloc(1, sizeof(*r));
	char sock[4096 + 32], crt[4096 + 32];
	unsigned i;
	int rv = 0, tls = 0;

	if (!r)
		return -ENOMEM;
	r->n = n;
	r->listen_fd = -1;
	if (hooks)
		r->hooks = *hooks;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->digests_lock, NULL);
	snprintf(r->conf_path, sizeof(r->conf_path), "%s/%s", node_dir(n), CONFIG_FILE);
	r->cfg = *node_cfg(n);
	r->primary_id = node_is_primary(n) ? node_cfg(n)->node_id : 0;
	{
		struct node_state ns;

		node_state(n, &ns);
		r->snap_needed = ns.snap_needed;
	}
	r->journal_bound = journal_bound(r, &r->cfg);
	r->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->stop_fd < 0) {
		rv = -errno;
		goto fail;
	}
	node_lock(n);
	rv = load_journal_state(r);
	for (i = 0; rv == 0 && i < r->norigins; i++)
		r->applied[i] = journal_applied(node_journal(n), r->origins[i]);
	if (rv == 0 && forget_departed(r) < 0)
		log_warn("cannot forget the checkpoints of former peers");
	node_unlock(n);
	if (rv < 0)
		goto fail;
	snprintf(crt, sizeof(crt), "%s/%s", node_dir(n), TLS_NODE_CERT);
	tls = access(crt, R_OK) == 0;
	if ((r->cfg.listen[0] || r->cfg.npeers) && !tls) {
		log_err("%s: no node certificate (%s); replication needs 'ledgerctl init --ca'",
			node_dir(n), crt);
		rv = -ENOENT;
		goto fail;
	}
	if (tls) {
		rv = tls_ctx_new(node_dir(n), 0, &r->client_ctx);
		if (rv == 0)
			rv = tls_ctx_new(node_dir(n), 1, &r->server_ctx);
		if (rv < 0)
			goto fail;
	}
	snprintf(sock, sizeof(sock), "%s/%s", node_dir(n), CONTROL_SOCKET);
	rv = control_start(sock, status_snapshot, control_action, control_release, r, &r->control);
	if (rv < 0) {
		log_err("%s: cannot serve the control socket: %s", sock, strerror(-rv));
		goto fail;
	}
	if (r->cfg.listen[0]) {
		rv = open_listener(r);
		if (rv < 0)
			goto fail;
		rv = -pthread_create(&r->listener, NULL, listener_main, r);
		if (rv < 0)
			goto fail;
		r->listener_running = 1;
		log_info("listening for peers on %s", r->cfg.listen);
	}
	if (r->cfg.archive_repo[0] && archiver_start(n, r->cfg.archive_repo, &r->archiver) < 0)
		r->archive_failed = 1; /* logged; trimming waits for the archive */
	node_set_on_commit(n, repl_on_commit, r);
	pthread_mutex_lock(&r->lock);
	for (i = 0; rv == 0 && i < r->cfg.npeers; i++)
		rv = add_peer(r, &r->cfg.peers[i]);
	pthread_mutex_unlock(&r->lock);
	if (rv < 0)
		goto fail;
	rv = -pthread_create(&r->supervisor, NULL, supervisor_main, r);
	if (rv < 0)
		goto fail;
	r->supervisor_running = 1;
	*out = r;
	return 0;
fail:
	repl_stop(r);
	return rv;
}

void repl_stop(struct repl *r)
{
	unsigned i;

	if (!r)
		return;
	/* First: a client holding the node lock ("pause") lets go of it. */
	control_stop(r->control);
	r->control = NULL;
	node_set_on_commit(r->n, NULL, NULL);
	pthread_mutex_lock(&r->lock);
	r->stopping = 1;
	repl_wake_receivers(r);
	for (struct repl_shipper *s = r->shippers; s; s = s->next)
		repl_wake(s->wake_fd);
	pthread_mutex_unlock(&r->lock);
	if (r->stop_fd >= 0)
		repl_wake(r->stop_fd);
	if (r->supervisor_running)
		pthread_join(r->supervisor, NULL);
	if (r->listener_running)
		pthread_join(r->listener, NULL);
	/* Shippers point at their peer: they go first. */
	reap_shippers(r, 1);
	for (i = 0; i < r->npeers; i++)
		free_peer(r->peers[i]);
	while (r->retired) {
		struct repl_peer *p = r->retired;

		r->retired = p->retired_next;
		free_peer(p);
	}
	archiver_stop(r->archiver);
	if (r->listen_fd >= 0)
		close(r->listen_fd);
	if (r->stop_fd >= 0)
		close(r->stop_fd);
	SSL_CTX_free(r->client_ctx);
	SSL_CTX_free(r->server_ctx);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->digests_lock);
	merkle_cache_free(r->digests);
	free(r->div_scope);
	free(r->div_path2);
	free(r->div_path);
	free(r);
}

static int build_tree_locked(struct repl *r, struct merkle **out, uint64_t *entries)
{
	char path[4096];
	uint64_t reused = 0;
	int rv;

	snprintf(path, sizeof(path), "%s/%s", node_dir(r->n), REPL_DIGESTS_FILE);
	if (!r->digests) {
		rv = merkle_cache_load(path, &r->digests);
		if (rv == -EBADMSG)
			log_warn("%s: damaged; reading every file again", path);
		if (rv < 0 && merkle_cache_new(&r->digests) < 0)
			return -ENOMEM;
	}
	rv = merkle_build_cached(node_store(r->n)->root, r->digests, merkle_cache_trust_now(), out,
				 entries, &reused);
	if (rv < 0)
		return rv;
	log_debug("hash tree of %" PRIu64 " entries, %" PRIu64 " file digests reused", *entries,
		  reused);
	rv = merkle_cache_save(path, r->digests);
	if (rv < 0)
		log_warn("%s: cannot save the file digests: %s", path, strerror(-rv));
	return 0;
}

int repl_build_tree(struct repl *r, struct merkle **out, uint64_t *entries)
{
	int rv;

	pthread_mutex_lock(&r->digests_lock);
	rv = build_tree_locked(r, out, entries);
	pthread_mutex_unlock(&r->digests_lock);
	return rv;
}
