/*
 * cmd.h - ledgerctl subcommands.  Each takes the arguments after its own
 * name (argv[0] is the subcommand) and returns the process exit code:
 * 0 success, 1 the operation failed, 2 usage error.
 */
#ifndef LEDGERFS_TOOLS_CMD_H
#define LEDGERFS_TOOLS_CMD_H

int cmd_ca(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_digest(int argc, char **argv);
int cmd_rebuild(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_peer(int argc, char **argv);

#endif
