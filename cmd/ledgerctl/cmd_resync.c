/*
 * cmd_resync.c - ledgerctl resync NODE_DIR: have a stopped node resync its
 * store by snapshot at its next start; and the join step of
 * 'ledgerctl init --join HOST:PORT'.
 *
 * A resync compares the store with a peer's by hash tree and fetches only
 * what differs (repl/snap_recv.c), so asking for one costs little when
 * the store is nearly right: it is how a node whose store was damaged, or
 * that was away longer than its peers keep events, is brought back.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "net/link.h"
#include "node/node.h"
#include "net/tls.h"

#define JOIN_TIMEOUT_MS 10000

static void resync_usage(FILE *out)
{
	fprintf(out, "usage: ledgerctl resync NODE_DIR\n"
		     "\n"
		     "Make the stopped node in NODE_DIR resync its store by snapshot from a\n"
		     "peer when it next starts: the stores are compared by hash tree and only\n"
		     "the entries that differ are sent.  The node must be a replica.\n"
		     "\n"
		     "  -h, --help   this help\n");
}

/* Mark dir as needing a snapshot.  0, or -1 with a message on stderr. */
static int request(const char *dir, const char *cmd)
{
	struct node *n = NULL;
	char err[1024];
	int r;

	r = node_open(dir, 0, &n, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ledgerctl: %s: %s\n", cmd, err);
		return -1;
	}
	if (node_is_primary(n)) {
		fprintf(stderr, "ledgerctl: %s: %s is a primary; demote it first\n", cmd, dir);
		node_close(n, 0);
		return -1;
	}
	r = node_snap_request(n);
	if (r < 0)
		fprintf(stderr, "ledgerctl: %s: %s: cannot record the request: %s\n", cmd, dir,
			strerror(-r));
	node_close(n, 0);
	return r < 0 ? -1 : 0;
}

int cmd_resync(int argc, char **argv)
{
	static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			resync_usage(stdout);
			return 0;
		}
		resync_usage(stderr);
		return 2;
	}
	if (optind != argc - 1) {
		resync_usage(stderr);
		return 2;
	}
	if (request(argv[optind], "resync") < 0)
		return 1;
	printf("%s will resync by snapshot when it starts\n", argv[optind]);
	return 0;
}

int cmd_join(const char *dir, const char *address)
{
	struct config cfg;
	struct config_peer *p;
	struct link *l = NULL;
	SSL_CTX *ctx = NULL;
	char path[4096], why[512], err[1024];
	const char *reason = NULL;
	uint64_t id = 0;
	int r = -1;

	snprintf(path, sizeof(path), "%s/%s", dir, CONFIG_FILE);
	if (config_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: init: --join: %s\n", err);
		return -1;
	}
	if (cfg.npeers == CONFIG_MAX_PEERS) {
		fprintf(stderr, "ledgerctl: init: --join: %s: too many peers\n", dir);
		return -1;
	}
	if (tls_ctx_new(dir, 0, &ctx) < 0) {
		fprintf(stderr, "ledgerctl: init: --join: %s: no usable node certificate\n", dir);
		return -1;
	}
	/* The TLS handshake alone shows the member's CA-signed name and id. */
	if (link_dial(address, ctx, JOIN_TIMEOUT_MS, &l, why, sizeof(why)) < 0) {
		fprintf(stderr, "ledgerctl: init: --join %s: %s\n", address, why);
		goto out;
	}
	p = &cfg.peers[cfg.npeers];
	memset(p, 0, sizeof(*p));
	if (tls_peer_node_id(l->ssl, &id, &reason) < 0 ||
	    tls_peer_name(l->ssl, p->name, sizeof(p->name)) < 0) {
		fprintf(stderr, "ledgerctl: init: --join %s: the member's certificate: %s\n",
			address, reason ? reason : "no valid node name");
		goto out;
	}
	p->id = id;
	snprintf(p->address, sizeof(p->address), "%s", address);
	cfg.npeers++;
	if (config_save(path, &cfg) < 0) {
		fprintf(stderr, "ledgerctl: init: --join: cannot write %s\n", path);
		goto out;
	}
	if (request(dir, "init --join") < 0)
		goto out;
	printf("joined through %s (%016" PRIx64 ") at %s: the node resyncs by snapshot when it "
	       "starts; add it on the members with 'ledgerctl peer add'\n",
	       p->name, id, address);
	r = 0;
out:
	link_close(l);
	SSL_CTX_free(ctx);
	return r;
}
