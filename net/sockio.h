/*
 * sockio.h - bounded waits and writes on a non-blocking local socket.
 *
 * Shared by the control socket's server and its client (ledgerctl): both
 * must give up at a deadline rather than hang on a wedged other side.
 */
#ifndef LEDGERFS_SOCKIO_H
#define LEDGERFS_SOCKIO_H

#include <stddef.h>
#include <stdint.h>

/*
 * Wait until fd is ready for events (POLLIN, POLLOUT).  cancel_fd, when
 * >= 0, is polled too: anything readable on it cancels the wait.
 * 0, -ETIMEDOUT at deadline (clock_mono_ms() time), -ECANCELED, or -errno.
 */
int sock_wait(int fd, short events, int cancel_fd, int64_t deadline);

/*
 * Send all len bytes of data on the non-blocking socket fd, waiting as
 * sock_wait() does.  A peer gone early costs -EPIPE, never a SIGPIPE.
 */
int sock_send_all(int fd, const void *data, size_t len, int cancel_fd, int64_t deadline);

#endif
