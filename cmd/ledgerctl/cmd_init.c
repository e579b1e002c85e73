/*
 * cmd_init.c - ledgerctl init NODE_DIR --name NAME [--ca CA_DIR --listen
 * HOST:PORT --peer NAME=HOST:PORT ...]: create a node.
 *
 * With --ca the node joins that CA's cluster: it takes the CA's cluster id
 * and gets its own key and a certificate, signed by the CA, that carries
 * its node id; the CA key never leaves CA_DIR.
 */
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "cmd.h"
#include "node/node.h"
#include "net/tls.h"
#include "peer_arg.h"

static void init_usage(FILE *out)
{
	fprintf(out,
		"usage: ledgerctl init NODE_DIR --name NAME [--ca CA_DIR]\n"
		"                      [--listen HOST:PORT] [--peer NAME=HOST:PORT ...]\n"
		"                      [--primary | --replica | --join HOST:PORT]\n"
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
		"      --primary            this node accepts writes through its mount\n"
		"                           (the default for a node without peers)\n"
		"      --replica            this node follows the primary; its mount is\n"
		"                           read-only (with --peer, one of the two is needed)\n"
		"  -j, --join HOST:PORT     a replica joining the cluster through the member\n"
		"                           at HOST:PORT (needs --ca): it becomes a peer, and\n"
		"                           the node starts with a snapshot resync; add the\n"
		"                           new node on the members with 'ledgerctl peer add'\n"
		"  -h, --help               this help\n");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	return ftw->level > 0 && remove(path) < 0 ? -1 : 0;
}

/* Remove what init made in dir, and dir itself unless it existed before. */
static int remove_node(const char *dir, int existed)
{
	if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return -1;
	return !existed && rmdir(dir) < 0 ? -1 : 0;
}

/* "NAME=HOST:PORT" into the next peer slot of cfg; a message on stderr when wrong. */
static int add_peer(struct config *cfg, const char *arg)
{
	struct config_peer p;
	char why[512];

	if (peer_arg_parse(arg, &p, why, sizeof(why)) < 0 ||
	    peer_arg_check(cfg, &p, why, sizeof(why)) < 0) {
		fprintf(stderr, "ledgerctl: init: --peer %s: %s\n", arg, why);
		return -1;
	}
	cfg->peers[cfg->npeers++] = p;
	return 0;
}

int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"name", required_argument, NULL, 'n'},
	    {"ca", required_argument, NULL, 'c'},
	    {"listen", required_argument, NULL, 'l'},
	    {"peer", required_argument, NULL, 'p'},
	    {"primary", no_argument, NULL, 'P'},
	    {"replica", no_argument, NULL, 'R'},
	    {"join", required_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *name = NULL, *ca = NULL, *listen = NULL, *join = NULL;
	const char *peers[CONFIG_MAX_PEERS + 1];
	unsigned npeers = 0;
	int role = -1; /* 1 primary, 0 replica, -1 not said */
	int existed;
	struct config cfg;
	char err[1024];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "n:c:l:p:j:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			join = optarg;
			break;
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
		case 'P':
		case 'R':
			if (role >= 0 && role != (c == 'P')) {
				fprintf(stderr, "ledgerctl: init: --primary and --replica exclude "
						"each other\n");
				return 2;
			}
			role = c == 'P';
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
		if (peer_arg_address(listen, err, sizeof(err)) < 0) {
			fprintf(stderr, "ledgerctl: init: --listen %s: %s\n", listen, err);
			return 2;
		}
		snprintf(cfg.listen, sizeof(cfg.listen), "%s", listen);
	}
	for (unsigned i = 0; i < npeers; i++)
		if (add_peer(&cfg, peers[i]) < 0)
			return 2;
	if (join && (role == 1 || !ca)) {
		fprintf(stderr, "ledgerctl: init: --join makes a replica and needs --ca\n");
		return 2;
	}
	if (join && peer_arg_address(join, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: init: --join %s: %s\n", join, err);
		return 2;
	}
	if (join)
		role = 0;
	/* Two primaries would both take writes: with peers the role must be chosen. */
	if (role < 0 && npeers > 0) {
		fprintf(stderr,
			"ledgerctl: init: a node with peers needs --primary or --replica\n");
		return 2;
	}
	if (role < 0)
		role = 1;
	if (ca && tls_ca_cluster_id(ca, cfg.cluster_id) < 0) {
		fprintf(stderr, "ledgerctl: init: %s: not a cluster CA (see 'ledgerctl ca init')\n",
			ca);
		return 1;
	}
	existed = access(argv[optind], F_OK) == 0;
	if (node_create(argv[optind], &cfg, role, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: init: %s\n", err);
		return 1;
	}
	if (ca &&
	    tls_node_cert_issue(ca, argv[optind], cfg.name, cfg.node_id, cfg.cluster_id) < 0) {
		fprintf(stderr, "ledgerctl: init: %s: cannot issue the node certificate\n",
			argv[optind]);
		return 1;
	}
	if (join && cmd_join(argv[optind], join) < 0) {
		/* It was absent or empty: leave it so, and init can simply be run again. */
		if (remove_node(argv[optind], existed) < 0)
			fprintf(stderr, "ledgerctl: init: %s: remove the half-made node by hand\n",
				argv[optind]);
		return 1;
	}
	printf("created %s node %s (id %016" PRIx64 ") in %s%s\n", role ? "primary" : "replica",
	       name, cfg.node_id, argv[optind], ca ? ", certified by the cluster CA" : "");
	return 0;
}
