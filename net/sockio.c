/*
 * sockio.c - bounded waits and writes on a non-blocking local socket
 * (see sockio.h).
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "lib/clock.h"
#include "net/sockio.h"

int sock_wait(int fd, short events, int cancel_fd, int64_t deadline)
{
	struct pollfd fds[2] = {{fd, events, 0}, {cancel_fd, POLLIN, 0}};
	nfds_t nfds = cancel_fd >= 0 ? 2 : 1;
	int64_t left;
	int n;

	for (;;) {
		left = deadline - clock_mono_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(fds, nfds, left > 1000000 ? 1000000 : (int)left);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0 && nfds == 2 && fds[1].revents)
			return -ECANCELED;
		if (n > 0)
			return 0;
	}
}

int sock_send_all(int fd, const void *data, size_t len, int cancel_fd, int64_t deadline)
{
	const char *p = data;
	ssize_t n;
	int r = 0;

	while (len && !r) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n >= 0) {
			p += n;
			len -= (size_t)n;
		} else if (errno == EAGAIN) {
			r = sock_wait(fd, POLLOUT, cancel_fd, deadline);
		} else if (errno != EINTR) {
			r = -errno;
		}
	}
	return r;
}
