/*
 * control.c - the control socket server (see control.h).
 *
 * One thread polls the listening socket together with a stop pipe, so
 * control_stop() returns as soon as the thread notices, even in the middle
 * of a request.  Clients are served one at a time on non-blocking sockets,
 * every wait bounded by the request's deadline: the socket is local and
 * root-only, but a wedged `ledgerctl` or a stray `nc -U` must not keep the
 * next operator from reading the status for longer than CONTROL_TIMEOUT_MS.
 * The status is rendered into a buffer first and then sent, so the snapshot
 * (taken under the replication locks) never waits on a slow reader.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/clock.h"
#include "repl/control.h"
#include "lib/log.h"
#include "net/sockio.h"
#include "repl/status_fmt.h"

/* Pending connections beyond the one being served; more wait in connect(). */
#define CONTROL_BACKLOG 16
/* Pause after accept() fails for want of descriptors, so the loop does not spin. */
#define ACCEPT_BACKOFF_MS 100
/* Reads of leftover input before closing a client; see drain(). */
#define DRAIN_MAX_READS 16

/*
 * No lock: control_start() fills everything before the thread starts, and
 * after that only the thread touches st and reply, while the rest is read-only
 * until control_stop() has joined it.
 */
struct control {
	char *path;
	int listen_fd;
	int stop_pipe[2]; /* control_stop() writes [1]; the thread polls [0] */
	int bound;	  /* the socket file at path is ours: dev and ino identify it */
	dev_t dev;
	ino_t ino;
	pthread_t thread;
	int (*snapshot)(void *arg, struct repl_status *st);
	int (*action)(void *arg, const char *req, char *reply, size_t len);
	void (*release)(void *arg); /* after an action that returned CONTROL_HOLD */
	void *arg;
	/* Here rather than on the thread's stack: a status is tens of kilobytes. */
	struct repl_status st;
	struct buf reply;
};

/*
 * Read one request line into req (NUL-terminated, without "\n" or a "\r"
 * before it) and its length into *len.  A client that closes after the
 * request without a newline is served too (`printf status | nc -U`).
 * 0, -EMSGSIZE for a line over CONTROL_MAX_REQUEST, -ENODATA if the client
 * closed without a byte, or an error of sock_wait() or recv().
 */
static int read_request(struct control *c, int fd, int64_t deadline,
			char req[CONTROL_MAX_REQUEST + 1], size_t *len)
{
	size_t got = 0;
	char *nl = NULL;
	ssize_t n;
	int ret = 0;

	while (!nl) {
		ret = got == CONTROL_MAX_REQUEST ? -EMSGSIZE : sock_wait(fd, POLLIN, c->stop_pipe[0], deadline);
		if (ret)
			goto out;
		n = recv(fd, req + got, CONTROL_MAX_REQUEST - got, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0 || (n == 0 && got == 0)) {
			ret = n < 0 ? -errno : -ENODATA;
			goto out;
		}
		if (n == 0)
			break;
		nl = memchr(req + got, '\n', (size_t)n);
		got += (size_t)n;
	}
	if (nl)
		got = (size_t)(nl - req);
	if (got && req[got - 1] == '\r')
		got--;
	req[got] = '\0';
	*len = got;
out:
	return ret;
}

static int request_is(const char *req, size_t len, const char *want)
{
	return len == strlen(want) && !memcmp(req, want, len);
}

/*
 * The reply to req: the rendered status in c->reply, or an "error: ..."
 * line written to msg.  *data and *len say which bytes to send.
 */
static void build_reply(struct control *c, char *req, size_t req_len, char *msg, size_t msg_size,
			const void **data, size_t *len, int *hold)
{
	int (*render)(const struct repl_status *, struct buf *) = NULL;
	size_t i;
	int ret;

	msg[0] = '\0';
	if (request_is(req, req_len, "status"))
		render = status_fmt_text;
	else if (request_is(req, req_len, "status json"))
		render = status_fmt_json;
	else if (request_is(req, req_len, "metrics"))
		render = status_fmt_prometheus;
	if (!render && c->action) {
		ret = c->action(c->arg, req, msg, msg_size);
		if (ret == CONTROL_HOLD)
			*hold = 1;
		if (ret != -ENOENT)
			goto out;
		msg[0] = '\0';
	}
	if (!render) {
		/* The echo must stay one printable line whatever the client sent. */
		for (i = 0; i < req_len; i++)
			if ((unsigned char)req[i] < 0x20 || (unsigned char)req[i] >= 0x7f)
				req[i] = '?';
		snprintf(msg, msg_size, "error: unknown request '%s'\n", req);
		goto out;
	}
	memset(&c->st, 0, sizeof(c->st));
	ret = c->snapshot(c->arg, &c->st);
	if (ret) {
		snprintf(msg, msg_size, "error: cannot take a status snapshot: %s\n",
			 strerror(-ret));
		goto out;
	}
	buf_reset(&c->reply);
	ret = render(&c->st, &c->reply);
	if (ret)
		snprintf(msg, msg_size, "error: cannot render the status: %s\n", strerror(-ret));
out:
	*data = msg[0] ? (const void *)msg : c->reply.data;
	*len = msg[0] ? strlen(msg) : c->reply.len;
}

/*
 * Closing a Unix socket with input unread makes the client's next read fail
 * with ECONNRESET instead of seeing the end of the reply, so read what a
 * client sent past its request (an overlong line, say) before closing.
 * Bounded: a client that keeps sending loses that race, and only its own.
 */
static void drain(int fd)
{
	char scratch[512];
	int i;

	for (i = 0; i < DRAIN_MAX_READS; i++)
		if (recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
			break;
}

/* Until the client on fd closes it, CONTROL_HOLD_MS pass or we stop. */
static void wait_close(struct control *c, int fd)
{
	int64_t deadline = clock_mono_ms() + CONTROL_HOLD_MS;
	char scratch[512];
	ssize_t n;
	int ret;

	for (;;) {
		ret = sock_wait(fd, POLLIN, c->stop_pipe[0], deadline);
		if (ret) {
			if (ret == -ETIMEDOUT)
				log_warn("%s: a client held the node for %d s; let go", c->path,
					 CONTROL_HOLD_MS / 1000);
			return;
		}
		n = recv(fd, scratch, sizeof(scratch), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			return;
	}
}

/* Answer the client on fd, then close fd. */
static void serve_client(struct control *c, int fd)
{
	int64_t deadline = clock_mono_ms() + CONTROL_TIMEOUT_MS;
	char req[CONTROL_MAX_REQUEST + 1];
	char msg[CONTROL_MAX_REPLY_LINE];
	const void *data = msg;
	size_t req_len = 0, len;
	int ret, hold = 0;

	ret = read_request(c, fd, deadline, req, &req_len);
	if (ret == 0) {
		build_reply(c, req, req_len, msg, sizeof(msg), &data, &len, &hold);
	} else if (ret == -EMSGSIZE) {
		len = (size_t)snprintf(msg, sizeof(msg), "error: request longer than %d bytes\n",
				       CONTROL_MAX_REQUEST);
	} else {
		/* Stopping, or a client that connected and left (a probe): nothing to say. */
		if (ret != -ECANCELED && ret != -ENODATA)
			log_debug("%s: client dropped before its request: %s", c->path,
				  strerror(-ret));
		goto out;
	}
	ret = sock_send_all(fd, data, len, c->stop_pipe[0], deadline);
	if (ret && ret != -ECANCELED)
		log_debug("%s: reply not delivered: %s", c->path, strerror(-ret));
	if (hold) {
		if (ret == 0)
			wait_close(c, fd);
		if (c->release)
			c->release(c->arg);
	}
	drain(fd);
out:
	close(fd);
}

static void *control_main(void *arg)
{
	struct control *c = arg;
	struct pollfd fds[2] = {{c->stop_pipe[0], POLLIN, 0}, {c->listen_fd, POLLIN, 0}};
	int fd;

	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("%s: poll: %s; control socket no longer served", c->path,
				strerror(errno));
			break;
		}
		if (fds[0].revents)
			break;
		if (!fds[1].revents)
			continue;
		fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_warn("%s: accept: %s", c->path, strerror(errno));
				poll(fds, 1, ACCEPT_BACKOFF_MS);
			}
			/* Others (EAGAIN, ECONNABORTED, EINTR) concern one client only. */
			continue;
		}
		serve_client(c, fd);
	}
	return NULL;
}

/*
 * Make way for the socket at path: nothing there, or a socket file nobody
 * answers on (left by a crash; removed).  -EADDRINUSE if a process answers,
 * -EEXIST if path is some other kind of file.
 */
static int remove_stale(const char *path, const struct sockaddr_un *sa)
{
	struct stat sb;
	int fd = -1, ret = 0;

	if (lstat(path, &sb) < 0) {
		if (errno == ENOENT)
			goto out;
		ret = -errno;
		log_err("%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISSOCK(sb.st_mode)) {
		ret = -EEXIST;
		log_err("%s: exists and is not a socket; not replacing it", path);
		goto out;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		log_err("%s: socket: %s", path, strerror(errno));
		goto out;
	}
	/* Non-blocking, a full backlog gives EAGAIN: someone listens all the same. */
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 || errno == EAGAIN) {
		ret = -EADDRINUSE;
		log_err("%s: another process serves this node's control socket", path);
		goto out;
	}
	if (errno == ENOENT)
		goto out;
	if (errno != ECONNREFUSED) {
		ret = -errno;
		log_err("%s: cannot tell whether the socket is in use: %s", path, strerror(errno));
		goto out;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		ret = -errno;
		log_err("%s: cannot remove the stale socket: %s", path, strerror(errno));
		goto out;
	}
	log_info("%s: removed a stale control socket", path);
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Release what control_start() acquired, in reverse; the thread must not be running. */
static void control_free(struct control *c)
{
	struct stat sb;

	/* Only our own socket: a successor may already have replaced it. */
	if (c->bound && lstat(c->path, &sb) == 0 && sb.st_dev == c->dev && sb.st_ino == c->ino &&
	    unlink(c->path) < 0)
		log_warn("%s: cannot remove: %s", c->path, strerror(errno));
	if (c->stop_pipe[1] >= 0)
		close(c->stop_pipe[1]);
	if (c->stop_pipe[0] >= 0)
		close(c->stop_pipe[0]);
	if (c->listen_fd >= 0)
		close(c->listen_fd);
	buf_free(&c->reply);
	free(c->path);
	free(c);
}

/* Create, bind and listen on c->path; the file is 0600 before anyone can connect. */
static int control_listen(struct control *c, const struct sockaddr_un *sa)
{
	const char *what;
	struct stat sb;
	int ret = 0;

	what = "socket";
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0)
		goto fail;
	what = "bind";
	if (bind(c->listen_fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
		goto fail;
	what = "stat";
	if (lstat(c->path, &sb) < 0)
		goto fail;
	c->bound = 1;
	c->dev = sb.st_dev;
	c->ino = sb.st_ino;
	/* Until listen() a connect() is refused, so the umask's mode is never usable. */
	what = "chmod";
	if (chmod(c->path, 0600) < 0)
		goto fail;
	what = "listen";
	if (listen(c->listen_fd, CONTROL_BACKLOG) < 0)
		goto fail;
	goto out;
fail:
	ret = -errno;
	log_err("%s: %s: %s", c->path, what, strerror(-ret));
out:
	return ret;
}

int control_start(const char *path, int (*snapshot)(void *arg, struct repl_status *st),
		  int (*action)(void *arg, const char *req, char *reply, size_t len),
		  void (*release)(void *arg), void *arg, struct control **out)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct control *c = NULL;
	size_t len = strlen(path);
	int ret;

	*out = NULL;
	if (len >= sizeof(sa.sun_path)) {
		ret = -ENAMETOOLONG;
		log_err("%s: path too long for a Unix socket (at most %zu bytes)", path,
			sizeof(sa.sun_path) - 1);
		goto out;
	}
	memcpy(sa.sun_path, path, len + 1);
	c = calloc(1, sizeof(*c));
	if (!c) {
		ret = -ENOMEM;
		goto out;
	}
	c->listen_fd = -1;
	c->stop_pipe[0] = c->stop_pipe[1] = -1;
	c->snapshot = snapshot;
	c->action = action;
	c->release = release;
	c->arg = arg;
	c->path = strdup(path);
	if (!c->path) {
		ret = -ENOMEM;
		goto out;
	}
	ret = remove_stale(path, &sa);
	if (ret)
		goto out;
	ret = control_listen(c, &sa);
	if (ret)
		goto out;
	if (pipe2(c->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		ret = -errno;
		log_err("%s: pipe: %s", path, strerror(errno));
		goto out;
	}
	ret = -pthread_create(&c->thread, NULL, control_main, c);
	if (ret) {
		log_err("%s: cannot start the control thread: %s", path, strerror(-ret));
		goto out;
	}
	*out = c;
out:
	if (ret && c)
		control_free(c);
	return ret;
}

void control_stop(struct control *c)
{
	if (!c)
		return;
	/* The pipe is empty and large: this write cannot block or fail for want of room. */
	if (write(c->stop_pipe[1], "", 1) < 0)
		log_warn("%s: cannot signal the control thread: %s", c->path, strerror(errno));
	pthread_join(c->thread, NULL);
	control_free(c);
}
