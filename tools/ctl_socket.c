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
#include <time.h>
#include <unistd.h>

#include "ctl_socket.h"
#include "ledgerfs/control.h"

/* For the whole exchange: connecting, sending the request, reading the reply. */
#define CLIENT_TIMEOUT_MS 5000
/* A status is kilobytes; anything near this is not a ledgerfs node talking. */
#define MAX_REPLY (16u << 20)
/* Pause before connecting again while the node's listen backlog is full. */
#define BACKLOG_RETRY_MS 20

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
		/* A pause; being woken early by a signal only means trying sooner. */
		poll(NULL, 0, BACKLOG_RETRY_MS);
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

int ctl_ask(const char *path, const char *request, struct pbuf *reply)
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
