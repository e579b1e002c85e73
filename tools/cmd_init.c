/*
 * cmd_init.c - ledgerctl init NODE_DIR --name NAME: create a node.
 */
#include <getopt.h>
#include <stdio.h>

#include "cmd.h"
#include "ledgerfs/node.h"

static void init_usage(FILE *out)
{
	fprintf(out, "usage: ledgerctl init NODE_DIR --name NAME\n"
		     "\n"
		     "Create a node in NODE_DIR (absent or empty): its configuration\n"
		     "(ledgerfs.conf), journal (journal/) and store (store/).  Mount it with\n"
		     "'ledgerfs NODE_DIR MOUNTPOINT'.\n"
		     "\n"
		     "  -n, --name NAME   node name (1-63 of A-Z a-z 0-9 . _ -)\n"
		     "  -h, --help        this help\n");
}

int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"name", required_argument, NULL, 'n'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *name = NULL;
	char err[1024];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			name = optarg;
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
	if (node_create(argv[optind], name, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: init: %s\n", err);
		return 1;
	}
	printf("created node %s in %s\n", name, argv[optind]);
	return 0;
}
