/*
 * ctl_socket.c - ask a running node over its control socket (ctl_socket.h).
 *
 * Every step is bounded by one deadline, so a node that is wedged reads as
 * "not answering" instead of a hung command.  The whole reply is read
 * before the caller sees any of it.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl_socket.h"
#include "lib/clock.h"
#include "net/sockio.h"
#include "repl/control.h"

/* For the whole exchange: connecting, sending the request, reading the reply. */
#define CLIENT_TIMEOUT_MS 5000
/* A status is kilobytes; anything near this is not a ledgerfs node talking. */
#define MAX_REPLY (16u << 20)
/* Pause before connecting again while the node's listen backlog is full. */
#define BACKLOG_RETRY_MS 20

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
		if (clock_mono_ms() + BACKLOG_RETRY_MS >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		/* A pause; being woken early by a signal only means trying sooner. */
		poll(NULL, 0, BACKLOG_RETRY_MS);
	}
	return ret;
}

/* Append everything fd sends until it closes to reply. */
static int recv_by(int fd, struct buf *reply, int64_t deadline)
{
	ssize_t n = 1;
	int ret = 0;

	while (n && !ret) {
		ret = sock_wait(fd, POLLIN, -1, deadline);
		if (!ret && reply->len >= MAX_REPLY)
			ret = -EMSGSIZE;
		if (!ret)
			ret = buf_reserve(reply, 64 * 1024);
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

int ctl_ask(const char *path, const char *request, struct buf *reply)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int64_t deadline = clock_mono_ms() + CLIENT_TIMEOUT_MS;
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
	ret = sock_send_all(fd, line, strlen(line), -1, deadline);
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

int ctl_hold(const char *path, const char *request, struct buf *reply, int *out)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int64_t deadline = clock_mono_ms() + CLIENT_TIMEOUT_MS;
	char line[CONTROL_MAX_REQUEST + 1], c;
	int fd = -1, ret;
	ssize_t n;

	*out = -1;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = connect_by(fd, &sa, deadline);
	if (ret)
		goto out;
	snprintf(line, sizeof(line), "%s\n", request);
	ret = sock_send_all(fd, line, strlen(line), -1, deadline);
	/* The reply's line, a byte at a time: the connection stays open after it. */
	while (!ret) {
		ret = sock_wait(fd, POLLIN, -1, deadline);
		if (ret)
			break;
		n = recv(fd, &c, 1, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -ENODATA;
			break;
		}
		if (reply->len >= CONTROL_MAX_REPLY_LINE) {
			ret = -EMSGSIZE;
			break;
		}
		if (buf_put(reply, &c, 1) < 0) {
			ret = -ENOMEM;
			break;
		}
		if (c == '\n')
			break;
	}
out:
	if (ret) {
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
}

const char *ctl_failure_meaning(int err)
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
