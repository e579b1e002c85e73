/*
 * cmd_peer.c - ledgerctl peer add|remove|list NODE_DIR: the node's
 * membership, as recorded in NODE_DIR/ledgerfs.conf.
 *
 * Only the configuration file changes: a running node notices the new file
 * and connects to or drops the peer by itself, so membership changes need
 * no restart.  The file is rewritten whole and atomically (config_save()),
 * so a node reading it concurrently sees the old or the new version, never
 * a mixture.  A peer's id may be given when known; otherwise the node
 * learns it from the peer's certificate on first contact and saves it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "lib/config.h"
#include "peer_arg.h"

static void peer_usage(FILE *out)
{
	fprintf(out, "usage: ledgerctl peer add NODE_DIR NAME=HOST:PORT [--id ID]\n"
		     "       ledgerctl peer remove NODE_DIR NAME\n"
		     "       ledgerctl peer list NODE_DIR\n"
		     "\n"
		     "Change or show the peers in NODE_DIR/ledgerfs.conf.  A running node\n"
		     "picks up the change by itself.  Each peer must also list this node.\n"
		     "\n"
		     "  add      add a peer: its name (1-63 of A-Z a-z 0-9 . _ -) and the\n"
		     "           address it listens on (an IPv6 host as [ADDR]:PORT)\n"
		     "  remove   remove the named peer\n"
		     "  list     one line per peer: name, address, id or \"(not seen yet)\"\n"
		     "\n"
		     "  -i, --id ID   the peer's node id (16 hex digits, as 'ledgerctl init'\n"
		     "                printed it); without it the node learns the id from the\n"
		     "                peer's certificate on first contact\n"
		     "  -h, --help    this help\n");
}

/* Add p to cfg and save it to path.  0 or a negative errno, with a message on stderr. */
static int peer_add(const char *dir, const char *path, struct config *cfg,
		    const struct config_peer *p)
{
	char why[512];
	int err;

	err = peer_arg_check(cfg, p, why, sizeof(why));
	if (err < 0) {
		fprintf(stderr, "ledgerctl: peer add: %s: %s\n", path, why);
		return err;
	}
	cfg->peers[cfg->npeers++] = *p;
	err = config_save(path, cfg);
	if (err < 0) {
		fprintf(stderr, "ledgerctl: peer add: %s: cannot write: %s\n", path,
			strerror(-err));
		return err;
	}
	printf("added peer %s (%s) to node %s in %s\n", p->name, p->address, cfg->name, dir);
	return 0;
}

/* Remove peer name from cfg and save it to path.  0 or a negative errno, as peer_add(). */
static int peer_remove(const char *dir, const char *path, struct config *cfg, const char *name)
{
	struct config_peer gone;
	unsigned i;
	int err;

	for (i = 0; i < cfg->npeers && strcmp(cfg->peers[i].name, name); i++)
		;
	if (i == cfg->npeers) {
		fprintf(stderr, "ledgerctl: peer remove: %s: no peer named '%s'%s\n", path, name,
			cfg->npeers ? " (see 'ledgerctl peer list')" : " (it has no peers)");
		return -ENOENT;
	}
	gone = cfg->peers[i];
	/* Keep the others in their order: it is the order people wrote them in. */
	memmove(&cfg->peers[i], &cfg->peers[i + 1], (cfg->npeers - i - 1) * sizeof(cfg->peers[0]));
	cfg->npeers--;
	err = config_save(path, cfg);
	if (err < 0) {
		fprintf(stderr, "ledgerctl: peer remove: %s: cannot write: %s\n", path,
			strerror(-err));
		return err;
	}
	printf("removed peer %s (%s) from node %s in %s\n", gone.name, gone.address, cfg->name,
	       dir);
	return 0;
}

static void peer_list(const struct config *cfg)
{
	int wname = 0, waddr = 0;
	unsigned i;

	for (i = 0; i < cfg->npeers; i++) {
		int n = (int)strlen(cfg->peers[i].name), a = (int)strlen(cfg->peers[i].address);

		wname = n > wname ? n : wname;
		waddr = a > waddr ? a : waddr;
	}
	for (i = 0; i < cfg->npeers; i++) {
		const struct config_peer *p = &cfg->peers[i];

		printf("%-*s  %-*s  ", wname, p->name, waddr, p->address);
		if (p->id)
			printf("%016" PRIx64 "\n", p->id);
		else
			printf("(not seen yet)\n");
	}
}

int cmd_peer(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"id", required_argument, NULL, 'i'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *verb, *dir, *idarg = NULL;
	char path[PATH_MAX], err[1024];
	struct config_peer add;
	struct config cfg;
	int c, nargs, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "i:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			idarg = optarg;
			break;
		case 'h':
			peer_usage(stdout);
			return 0;
		default:
			peer_usage(stderr);
			return 2;
		}
	}
	if (optind + 2 > argc) {
		peer_usage(stderr);
		return 2;
	}
	verb = argv[optind];
	dir = argv[optind + 1];
	nargs = argc - optind - 2;
	if (strcmp(verb, "add") && strcmp(verb, "remove") && strcmp(verb, "list")) {
		fprintf(stderr, "ledgerctl: peer: unknown subcommand '%s'\n", verb);
		peer_usage(stderr);
		return 2;
	}
	if (nargs != (strcmp(verb, "list") ? 1 : 0) || (idarg && strcmp(verb, "add"))) {
		peer_usage(stderr);
		return 2;
	}
	/* Malformed arguments are usage errors, found before the node is read. */
	if (!strcmp(verb, "add") && peer_arg_parse(argv[optind + 2], &add, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: peer add: %s: %s\n", argv[optind + 2], err);
		return 2;
	}
	if (idarg && config_parse_id(idarg, &add.id) < 0) {
		fprintf(stderr, "ledgerctl: peer add: --id %s: want 16 hex digits, not all zero\n",
			idarg);
		return 2;
	}
	if (!strcmp(verb, "remove") && !config_name_valid(argv[optind + 2])) {
		fprintf(stderr, "ledgerctl: peer remove: invalid name '%s'\n", argv[optind + 2]);
		return 2;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, CONFIG_FILE) >= sizeof(path)) {
		fprintf(stderr, "ledgerctl: peer %s: %s: path too long\n", verb, dir);
		return 1;
	}
	r = config_load(path, &cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ledgerctl: peer %s: %s%s\n", verb, err,
			r == -ENOENT ? " (not a node directory: see 'ledgerctl init')" : "");
		return 1;
	}
	if (!strcmp(verb, "add"))
		r = peer_add(dir, path, &cfg, &add);
	else if (!strcmp(verb, "remove"))
		r = peer_remove(dir, path, &cfg, argv[optind + 2]);
	else
		peer_list(&cfg);
	return r < 0 ? 1 : 0;
}
