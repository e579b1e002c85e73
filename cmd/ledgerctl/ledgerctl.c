/*
 * ledgerctl.c - the administration front end: finds the subcommand named on
 * the command line and hands it the rest of the arguments (see cmd.h).
 * Each command parses its own options and prints its own help, so adding a
 * command is one line in the table below.
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "lib/log.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
    {"ca", cmd_ca, "create the cluster CA (ca init CA_DIR)"},
    {"init", cmd_init, "create a node"},
    {"log", cmd_log, "list journaled events"},
    {"digest", cmd_digest, "tree digest of a directory"},
    {"rebuild", cmd_rebuild, "replay a node's journal into an empty directory"},
    {"status", cmd_status, "replication status of a running node"},
    {"metrics", cmd_metrics, "a running node's figures for Prometheus"},
    {"peer", cmd_peer, "add, remove or list a node's peers"},
    {"promote", cmd_promote, "make a node the primary of a new term"},
    {"demote", cmd_demote, "make a node a replica"},
    {"tail-export", cmd_tail_export, "write out the events a failover kept aside"},
    {"resync", cmd_resync, "make a stopped replica resync by snapshot when it starts"},
    {"rescue", cmd_rescue, "ship a stopped node's events a running peer lacks"},
    {"backup", cmd_backup, "back up a node's store into repositories; list, verify"},
    {"restore", cmd_restore, "rebuild a store (or a node) from a backup"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
	size_t i;

	fputs("usage: ledgerctl [--help|--version] COMMAND [ARGS]\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
	fputs("\n"
	      "\"ledgerctl help COMMAND\" or \"ledgerctl COMMAND --help\" describes a command.\n",
	      f);
}

static const struct command *find_command(const char *name)
{
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static int unknown_command(const char *name)
{
	fprintf(stderr, "ledgerctl: unknown command '%s' (see 'ledgerctl --help')\n", name);
	return 2;
}

int main(int argc, char **argv)
{
	const struct command *cmd;

	log_init("ledgerctl", NULL);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    (!strcmp(argv[1], "help") && argc == 2)) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("ledgerctl (ledgerfs) %s\n", LEDGERFS_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "help")) {
		char help[] = "--help";
		char *args[] = {argv[2], help, NULL};

		if (argc > 3) {
			fputs("usage: ledgerctl help [COMMAND]\n", stderr);
			return 2;
		}
		cmd = find_command(argv[2]);
		return cmd ? cmd->run(2, args) : unknown_command(argv[2]);
	}
	if (argv[1][0] == '-') {
		fprintf(stderr, "ledgerctl: unknown option '%s'\n", argv[1]);
		usage(stderr);
		return 2;
	}
	cmd = find_command(argv[1]);
	if (!cmd)
		return unknown_command(argv[1]);
	return cmd->run(argc - 1, argv + 1);
}
