/*
 * log.c - prefixed log lines to stderr or syslog (see log.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "lib/log.h"

static char log_prefix[96] = "ledgerfs";
static int log_syslog;
static int log_level = LOG_INFO;

void log_init(const char *prog, const char *node)
{
	if (node && *node)
		snprintf(log_prefix, sizeof(log_prefix), "%s[%s]", prog, node);
	else
		snprintf(log_prefix, sizeof(log_prefix), "%s", prog);
}

void log_to_syslog(void)
{
	openlog(log_prefix, LOG_PID, LOG_DAEMON);
	log_syslog = 1;
}

void log_set_level(int level)
{
	log_level = level;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	if (log_syslog) {
		vsyslog(level, fmt, ap);
	} else {
		char line[1024];

		vsnprintf(line, sizeof(line), fmt, ap);
		fprintf(stderr, "%s: %s\n", log_prefix, line);
	}
	va_end(ap);
}
