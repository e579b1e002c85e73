/*
 * cmd_ca.c - ledgerctl ca init CA_DIR: create a cluster CA.
 *
 * The CA is what makes a set of nodes one cluster: it fixes the cluster id
 * and signs every node certificate, and peers trust nothing else.  Its key
 * belongs away from the nodes; a node keeps only a copy of ca.crt.
 */
#include <getopt.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "net/tls.h"

static void ca_usage(FILE *out)
{
	fprintf(out, "usage: ledgerctl ca init CA_DIR\n"
		     "\n"
		     "Create a cluster CA in CA_DIR (absent or empty): a new cluster id, the\n"
		     "CA key (ca.key, mode 0600) and its self-signed certificate (ca.crt,\n"
		     "valid ten years).  Nodes made with 'ledgerctl init NODE_DIR --ca CA_DIR'\n"
		     "get a certificate from it and accept only peers it has signed.  Keep\n"
		     "ca.key off the nodes.\n"
		     "\n"
		     "  -h, --help   this help\n");
}

int cmd_ca(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	static const uint8_t zero[16];
	uint8_t cluster[16];
	const char *dir;
	int c, i;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			ca_usage(stdout);
			return 0;
		default:
			ca_usage(stderr);
			return 2;
		}
	}
	if (optind < argc && strcmp(argv[optind], "init")) {
		fprintf(stderr, "ledgerctl: ca: unknown subcommand '%s'\n", argv[optind]);
		ca_usage(stderr);
		return 2;
	}
	if (optind != argc - 2) {
		ca_usage(stderr);
		return 2;
	}
	dir = argv[optind + 1];
	do {
		if (RAND_bytes(cluster, sizeof(cluster)) != 1) {
			fprintf(stderr, "ledgerctl: ca init: no random bytes for the cluster id\n");
			return 1;
		}
	} while (!memcmp(cluster, zero, sizeof(zero)));
	if (tls_ca_create(dir, cluster) < 0) {
		fprintf(stderr, "ledgerctl: ca init: no CA created in %s\n", dir);
		return 1;
	}
	printf("created the CA of cluster ");
	for (i = 0; i < 16; i++)
		printf("%02x", cluster[i]);
	printf(" in %s\n"
	       "make nodes with 'ledgerctl init NODE_DIR --name NAME --ca %s'\n",
	       dir, dir);
	return 0;
}
