/*
 * cmd_init.c - ledgerctl init NODE_DIR --name NAME [--ca CA_DIR --listen
 * HOST:PORT --peer NAME=HOST:PORT ...]: create a node.
 *
 * With --ca the node joins that CA's cluster: it takes the CA's cluster id
 * and gets its own key and a certificate, signed by the CA, that carries
 * its node id; the CA key never leaves CA_DIR.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "ledgerfs/node.h"
#include "ledgerfs/tls.h"

static void init_usage(FILE *out)
{
	fprintf(out, "usage: ledgerctl init NODE_DIR --name NAME [--ca CA_DIR]\n"
		     "                      [--listen HOST:PORT] [--peer NAME=HOST:PORT ...]\n"
		     "\n"
		     "Create a node in NODE_DIR (absent or empty): its configuration\n"
		     "(ledgerfs.conf), journal (journal/) and store (store/).  Mount it with\n"
		     "'ledgerfs NODE_DIR MOUNTPOINT'.\n"
		     "\n"
		     "  -n, --name NAME          node name (1-63 of A-Z a-z 0-9 . _ -)\n"
		     "  -c, --ca CA_DIR          join the cluster of the CA made by 'ledgerctl ca\n"
		     "                           init': node key and certificate in NODE_DIR\n"
		     "  -l, --listen HOST:PORT   address peers connect to\n"
		     "  -p, --peer NAME=HOST:PORT  a peer node (repeat for each)\n"
		     "  -h, --help               this help\n");
}

/* "NAME=HOST:PORT" into the next peer slot of cfg; a message on stderr when wrong. */
static int add_peer(struct config *cfg, const char *arg)
{
	const char *eq = strchr(arg, '='), *colon;
	struct config_peer *p;
	size_t nlen;

	if (cfg->npeers >= CONFIG_MAX_PEERS) {
		fprintf(stderr, "ledgerctl: init: more than %d peers\n", CONFIG_MAX_PEERS);
		return -1;
	}
	p = &cfg->peers[cfg->npeers];
	nlen = eq ? (size_t)(eq - arg) : 0;
	colon = eq ? strrchr(eq, ':') : NULL;
	if (!eq || nlen == 0 || nlen >= sizeof(p->name) || !colon || colon == eq + 1 ||
	    !colon[1] || strlen(eq + 1) >= sizeof(p->address)) {
		fprintf(stderr, "ledgerctl: init: --peer %s: want NAME=HOST:PORT\n", arg);
		return -1;
	}
	memcpy(p->name, arg, nlen);
	p->name[nlen] = '\0';
	if (!config_name_valid(p->name) || !strcmp(p->name, cfg->name)) {
		fprintf(stderr, "ledgerctl: init: --peer %s: bad or own name '%s'\n", arg, p->name);
		return -1;
	}
	for (unsigned i = 0; i < cfg->npeers; i++) {
		if (!strcmp(cfg->peers[i].name, p->name)) {
			fprintf(stderr, "ledgerctl: init: --peer %s: peer '%s' given twice\n", arg,
				p->name);
			return -1;
		}
	}
	snprintf(p->address, sizeof(p->address), "%s", eq + 1);
	cfg->npeers++;
	return 0;
}

int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"name", required_argument, NULL, 'n'},
		{"ca", required_argument, NULL, 'c'},
		{"listen", required_argument, NULL, 'l'},
		{"peer", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *name = NULL, *ca = NULL, *listen = NULL;
	const char *peers[CONFIG_MAX_PEERS + 1];
	unsigned npeers = 0;
	struct config cfg;
	char err[1024];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "n:c:l:p:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			name = optarg;
			break;
		case 'c':
			ca = optarg;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'p':
			if (npeers <= CONFIG_MAX_PEERS)
				peers[npeers++] = optarg;
			break;
		case 'h':
			init_usage(stdout);
			return 0;
		default:
			init_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || !name) {
		init_usage(stderr);
		return 2;
	}
	config_defaults(&cfg);
	snprintf(cfg.name, sizeof(cfg.name), "%s", name);
	if (listen) {
		if (strlen(listen) >= sizeof(cfg.listen) || !strchr(listen, ':')) {
			fprintf(stderr, "ledgerctl: init: --listen %s: want HOST:PORT\n", listen);
			return 2;
		}
		snprintf(cfg.listen, sizeof(cfg.listen), "%s", listen);
	}
	for (unsigned i = 0; i < npeers; i++)
		if (add_peer(&cfg, peers[i]) < 0)
			return 2;
	if (ca && tls_ca_cluster_id(ca, cfg.cluster_id) < 0) {
		fprintf(stderr, "ledgerctl: init: %s: not a cluster CA (see 'ledgerctl ca init')\n",
			ca);
		return 1;
	}
	if (node_create(argv[optind], &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: init: %s\n", err);
		return 1;
	}
	if (ca && tls_node_cert_issue(ca, argv[optind], cfg.name, cfg.node_id, cfg.cluster_id) < 0) {
		fprintf(stderr, "ledgerctl: init: %s: cannot issue the node certificate\n",
			argv[optind]);
		return 1;
	}
	printf("created node %s (id %016" PRIx64 ") in %s%s\n", name, cfg.node_id, argv[optind],
	       ca ? ", certified by the cluster CA" : "");
	return 0;
}
