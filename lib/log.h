/*
 * log.h - one line per event worth knowing.
 *
 * Lines go to stderr until log_to_syslog() is called (the daemon does so
 * when it detaches).  Every line carries the node name given to log_init()
 * so that logs of several nodes on one machine can be told apart.
 */
#ifndef LEDGERFS_LOG_H
#define LEDGERFS_LOG_H

#include <syslog.h>

/* Set the program and node name used as prefix ("ledgerfs[a]"). */
void log_init(const char *prog, const char *node);

/* Send further lines to syslog (LOG_DAEMON) instead of stderr. */
void log_to_syslog(void);

/* Lines below this syslog level are dropped (default LOG_INFO). */
void log_set_level(int level);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
