/*
 * cmd.h - ledgerctl subcommands.  Each takes the arguments after its own
 * name (argv[0] is the subcommand) and returns the process exit code:
 * 0 success, 1 the operation failed, 2 usage error.
 */
#ifndef LEDGERFS_TOOLS_CMD_H
#define LEDGERFS_TOOLS_CMD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int cmd_ca(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_digest(int argc, char **argv);
int cmd_rebuild(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_peer(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_demote(int argc, char **argv);
int cmd_tail_export(int argc, char **argv);
int cmd_resync(int argc, char **argv);
int cmd_rescue(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);

/*
 * The join step of 'init --join': learn the member at address from its
 * certificate, make it a peer of the node in dir, and ask for a snapshot
 * resync.  0, or -1 with a message on stderr.
 */
int cmd_join(const char *dir, const char *address);

/*
 * One journal record (event (origin, seq), raw value val/len) as the line
 * 'ledgerctl log --json' prints, newline included; a record that does not
 * decode gets a "corrupt" line.  In cmd_log.c, shared with tail-export.
 */
void cmd_log_json_record(FILE *out, uint64_t origin, uint64_t seq, const uint8_t *val, size_t len);

#endif
