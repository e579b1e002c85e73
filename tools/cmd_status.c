/*
 * cmd_status.c - "ledgerctl status" and "ledgerctl metrics": ask a running
 * node over its control socket (control.h) and print what it says.
 *
 * The node renders the reply itself, so this side only connects, sends one
 * request line and copies the reply out.  Every step is bounded by one
 * deadline, so a node that is wedged reads as "not answering" instead of a
 * hung command, and --watch keeps polling through a node's restart.  The
 * whole reply is read before anything is printed, so a watched screen is
 * redrawn at once rather than while the bytes trickle in.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "ledgerfs/control.h"
#include "ledgerfs/proto.h"

/* For the whole exchange: connecting, sending the request, reading the reply. */
#define CLIENT_TIMEOUT_MS 5000
/* A status is kilobytes; anything near this is not a ledgerfs node talking. */
#define MAX_REPLY (16u << 20)
/* Pause before connecting again while the node's listen backlog is full. */
#define BACKLOG_RETRY_MS 20
#define MIN_INTERVAL	 0.1
#define MAX_INTERVAL	 86400.0
#define CLEAR_SCREEN	 "\033[H\033[2J"
#define ERROR_PREFIX	 "error: "

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* 0 once fd is ready for events, -ETIMEDOUT at deadline. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = {fd, events, 0};
	int64_t left;
	int n;

	for (;;) {
		left = deadline - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

static int connect_by(int fd, const struct sockaddr_un *sa, int64_t deadline)
{
	int ret = 0;

	/* A Unix socket connects at once or fails; EAGAIN means the backlog is full. */
	while (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			ret = -errno;
			break;
		}
		if (now_ms() + BACKLOG_RETRY_MS >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		sleep_ms(BACKLOG_RETRY_MS);
	}
	return ret;
}

static int send_by(int fd, const char *p, size_t len, int64_t deadline)
{
	ssize_t n;
	int ret = 0;

	while (len && !ret) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n >= 0) {
			p += n;
			len -= (size_t)n;
		} else if (errno == EAGAIN) {
			ret = wait_fd(fd, POLLOUT, deadline);
		} else if (errno != EINTR) {
			ret = -errno;
		}
	}
	return ret;
}

/* Append everything fd sends until it closes to reply. */
static int recv_by(int fd, struct pbuf *reply, int64_t deadline)
{
	ssize_t n = 1;
	int ret = 0;

	while (n && !ret) {
		ret = wait_fd(fd, POLLIN, deadline);
		if (!ret && reply->len >= MAX_REPLY)
			ret = -EMSGSIZE;
		if (!ret)
			ret = pbuf_reserve(reply, 64 * 1024);
		if (ret)
			break;
		n = recv(fd, reply->data + reply->len, reply->cap - reply->len, 0);
		if (n > 0)
			reply->len += (size_t)n;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			ret = -errno;
	}
	return ret;
}

/*
 * Send request (without its newline) to the socket at path and append the
 * reply to *reply.  0 or a negative errno; -ENODATA if the node closed
 * without a word.
 */
static int ask_node(const char *path, const char *request, struct pbuf *reply)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int64_t deadline = now_ms() + CLIENT_TIMEOUT_MS;
	char line[CONTROL_MAX_REQUEST + 1];
	int fd = -1, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = connect_by(fd, &sa, deadline);
	if (ret)
		goto out;
	snprintf(line, sizeof(line), "%s\n", request);
	ret = send_by(fd, line, strlen(line), deadline);
	if (ret)
		goto out;
	ret = recv_by(fd, reply, deadline);
	if (!ret && reply->len == 0)
		ret = -ENODATA;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

/* What a failure of ask_node() means for the person who asked. */
static const char *failure_meaning(int err)
{
	switch (err) {
	case -ENOENT:
	case -ECONNREFUSED:
		return "node not running";
	case -ETIMEDOUT:
		return "node not answering";
	case -ENODATA:
	case -ECONNRESET:
	case -EPIPE:
		return "node closed the connection without a reply";
	case -EMSGSIZE:
		return "reply too large; is this a ledgerfs control socket?";
	}
	return "cannot reach the node";
}

/*
 * One exchange, printed: the reply to stdout, or the failure to stderr.
 * The node's own "error: ..." replies count as failures.  0 or 1.
 */
static int show(const char *path, const char *request, struct pbuf *reply, const char *before)
{
	size_t plen = strlen(ERROR_PREFIX);
	int ret;

	pbuf_reset(reply);
	ret = ask_node(path, request, reply);
	fputs(before, stdout);
	/* stderr is unbuffered: what came before it on stdout must be out first. */
	fflush(stdout);
	if (ret) {
		fprintf(stderr, "ledgerctl: %s: %s (%s)\n", path, failure_meaning(ret),
			strerror(-ret));
		ret = 1;
	} else if (reply->len >= plen && !memcmp(reply->data, ERROR_PREFIX, plen)) {
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
static int watch(const char *path, const char *request, double interval, struct pbuf *reply)
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
	struct pbuf reply = PBUF_INIT;
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
	pbuf_free(&reply);
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
