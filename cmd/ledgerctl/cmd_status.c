/*
 * cmd_status.c - "ledgerctl status" and "ledgerctl metrics": ask a running
 * node over its control socket (control.h) and print what it says.
 *
 * The node renders the reply itself, so this side only sends one request
 * line and copies the reply out (ctl_socket.h).  A node that is wedged
 * reads as "not answering" instead of a hung command, and --watch keeps
 * polling through a node's restart.  The whole reply is read before
 * anything is printed, so a watched screen is redrawn at once rather than
 * while the bytes trickle in.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "ctl_socket.h"
#include "repl/control.h"

#define MIN_INTERVAL 0.1
#define MAX_INTERVAL 86400.0
#define CLEAR_SCREEN "\033[H\033[2J"

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * One exchange, printed: the reply to stdout, or the failure to stderr.
 * The node's own "error: ..." replies count as failures.  0 or 1.
 */
static int show(const char *path, const char *request, struct buf *reply, const char *before)
{
	size_t plen = strlen(CTL_ERROR_PREFIX);
	int ret;

	buf_reset(reply);
	ret = ctl_ask(path, request, reply);
	fputs(before, stdout);
	/* stderr is unbuffered: what came before it on stdout must be out first. */
	fflush(stdout);
	if (ret) {
		fprintf(stderr, "ledgerctl: %s: %s (%s)\n", path, ctl_failure_meaning(ret),
			strerror(-ret));
		ret = 1;
	} else if (reply->len >= plen && !memcmp(reply->data, CTL_ERROR_PREFIX, plen)) {
		fprintf(stderr, "ledgerctl: %s: %.*s", path, (int)(reply->len - plen),
			(const char *)reply->data + plen);
		ret = 1;
	} else {
		fwrite(reply->data, 1, reply->len, stdout);
	}
	return ret;
}

/*
 * Redraw every interval seconds until killed.  Returns only when stdout
 * fails (1); a node that stops answering is reported and asked again.
 */
static int watch(const char *path, const char *request, double interval, struct buf *reply)
{
	int tty = isatty(STDOUT_FILENO), shown = 0, ret;

	for (;;) {
		/* On a pipe, replies are kept apart by a blank line; errors go to stderr. */
		ret = show(path, request, reply, tty ? CLEAR_SCREEN : shown ? "\n" : "");
		shown |= ret == 0;
		if (fflush(stdout) == EOF || ferror(stdout))
			break;
		sleep_ms((int64_t)(interval * 1000));
	}
	perror("ledgerctl: stdout");
	return 1;
}

/* Is s a number as a whole?  Tells "--watch 2" from "--watch NODE_DIR". */
static int is_number(const char *s, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	return !errno && end != s && !*end && isfinite(*v);
}

/* SECONDS for --watch: a number in [MIN_INTERVAL, MAX_INTERVAL].  0 or -EINVAL. */
static int parse_interval(const char *s, double *out)
{
	double v;

	if (!is_number(s, &v) || v < MIN_INTERVAL || v > MAX_INTERVAL)
		return -EINVAL;
	*out = v;
	return 0;
}

static void usage_status(FILE *f)
{
	fputs("usage: ledgerctl status [NODE_DIR | --socket PATH] [--json] [--watch [SECONDS]]\n"
	      "\n"
	      "Show the replication status of the node running from NODE_DIR (default .),\n"
	      "asked over its control socket NODE_DIR/" CONTROL_SOCKET ": links to each peer,\n"
	      "what they lag behind, traffic, and recent outages.\n"
	      "\n"
	      "  -s, --socket PATH      ask the control socket at PATH instead\n"
	      "  -j, --json             one JSON object, for scripts\n"
	      "  -w, --watch[=SECONDS]  redraw every SECONDS (default 1, at least 0.1) until\n"
	      "                         interrupted; a number right after --watch is taken as\n"
	      "                         SECONDS, so write a directory named like one as ./N\n"
	      "  -h, --help             show this help\n"
	      "\n"
	      "Exit status: 0 success, 1 the node did not answer, 2 usage error.\n",
	      f);
}

static void usage_metrics(FILE *f)
{
	fputs("usage: ledgerctl metrics [NODE_DIR | --socket PATH]\n"
	      "\n"
	      "Print the figures of the node running from NODE_DIR (default .) in the\n"
	      "Prometheus text format, asked over NODE_DIR/" CONTROL_SOCKET ".\n"
	      "\n"
	      "  -s, --socket PATH   ask the control socket at PATH instead\n"
	      "  -h, --help          show this help\n"
	      "\n"
	      "Exit status: 0 success, 1 the node did not answer, 2 usage error.\n",
	      f);
}

/* What one invocation asks for, from the command line. */
struct request {
	const char *socket; /* --socket, or NULL */
	const char *dir;    /* NODE_DIR, or NULL */
	int json;
	int watch;
	double interval;
};

/* -1 to go on, or the exit code to return now (0 after --help, 2 on a usage error). */
static int parse_args(int argc, char **argv, int metrics, struct request *rq)
{
	static const struct option status_options[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, 'j'},
	    {"watch", optional_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static const struct option metrics_options[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	void (*usage)(FILE *) = metrics ? usage_metrics : usage_status;
	const char *cmd = metrics ? "metrics" : "status";
	int c;

	*rq = (struct request){.interval = 1.0};
	/* 0, not 1: glibc then resets all its state, should a process run two commands. */
	optind = 0;
	while ((c = getopt_long(argc, argv, metrics ? "s:h" : "s:jw::h",
				metrics ? metrics_options : status_options, NULL)) != -1) {
		switch (c) {
		case 's':
			rq->socket = optarg;
			break;
		case 'j':
			rq->json = 1;
			break;
		case 'w':
			rq->watch = 1;
			/* getopt only takes "--watch=2"; a number as the next word is SECONDS too.
			 */
			if (!optarg && optind < argc && is_number(argv[optind], &rq->interval))
				optarg = argv[optind++];
			if (optarg && parse_interval(optarg, &rq->interval)) {
				fprintf(stderr,
					"ledgerctl: status: --watch: '%s' is not a number of "
					"seconds from %g to %g\n",
					optarg, MIN_INTERVAL, MAX_INTERVAL);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind > 1 || (rq->socket && argc - optind == 1)) {
		fprintf(stderr, "ledgerctl: %s: expected one NODE_DIR or --socket PATH\n", cmd);
		usage(stderr);
		return 2;
	}
	if (argc - optind == 1)
		rq->dir = argv[optind];
	return -1;
}

static int run(int argc, char **argv, int metrics)
{
	struct buf reply = BUF_INIT;
	struct request rq;
	char path[PATH_MAX];
	const char *request;
	int ret;

	ret = parse_args(argc, argv, metrics, &rq);
	if (ret >= 0)
		goto out;
	if (rq.socket)
		ret = snprintf(path, sizeof(path), "%s", rq.socket);
	else
		ret = snprintf(path, sizeof(path), "%s/%s", rq.dir ? rq.dir : ".", CONTROL_SOCKET);
	if (ret < 0 || (size_t)ret >= sizeof(path)) {
		fprintf(stderr, "ledgerctl: %s: control socket path too long\n",
			rq.socket ? rq.socket : rq.dir);
		ret = 1;
		goto out;
	}
	request = metrics ? "metrics" : rq.json ? "status json" : "status";
	if (rq.watch) {
		ret = watch(path, request, rq.interval, &reply);
		goto out;
	}
	ret = show(path, request, &reply, "");
	if (fflush(stdout) == EOF || ferror(stdout)) {
		perror("ledgerctl: stdout");
		ret = 1;
	}
out:
	buf_free(&reply);
	return ret;
}

int cmd_status(int argc, char **argv)
{
	return run(argc, argv, 0);
}

int cmd_metrics(int argc, char **argv)
{
	return run(argc, argv, 1);
}
