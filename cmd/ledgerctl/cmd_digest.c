/*
 * cmd_digest.c - "ledgerctl digest DIR [--list]": print a directory's tree
 * digest, the value compared across nodes to show that they converged.
 * With --list, one line per entry comes first, so that two nodes' lists
 * can be diffed to find where they differ.
 */
#include <getopt.h>
#include <stdio.h>

#include "cmd.h"
#include "store/digest.h"

static void usage(FILE *f)
{
	fputs("usage: ledgerctl digest DIR [--list]\n"
	      "\n"
	      "Print the tree digest of DIR: SHA-256 over names, types, modes, owners,\n"
	      "xattrs, symlink targets, and contents and mtimes of regular files.\n"
	      "Directory mtimes and ledgerfs's own trusted.ledgerfs.* xattrs are left out.\n"
	      "\n"
	      "  -l, --list   first print one line per entry:\n"
	      "               ENTRY-SHA256 TYPE MODE UID:GID SIZE MTIME-NS PATH\n"
	      "  -h, --help   show this help\n",
	      f);
}

int cmd_digest(int argc, char **argv)
{
	static const struct option options[] = {
	    {"list", no_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	unsigned char d[DIGEST_LEN];
	char hex[2 * DIGEST_LEN + 1];
	int c, list = 0;

	/* 0, not 1: glibc then resets all its state, should a process run two commands. */
	optind = 0;
	while ((c = getopt_long(argc, argv, "lh", options, NULL)) != -1) {
		switch (c) {
		case 'l':
			list = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 1) {
		fputs("ledgerctl: digest: expected one directory\n", stderr);
		usage(stderr);
		return 2;
	}
	if (digest_tree(argv[optind], d, list ? stdout : NULL))
		return 1;
	digest_hex(d, hex);
	printf("%s\n", hex);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		perror("ledgerctl: digest: stdout");
		return 1;
	}
	return 0;
}
