/*
 * ctl_socket.h - the client side of a node's control socket (control.h),
 * shared by the ledgerctl commands that talk to a running node: status,
 * metrics, promote, demote.
 */
#ifndef LEDGERFS_TOOLS_CTL_SOCKET_H
#define LEDGERFS_TOOLS_CTL_SOCKET_H

#include "lib/buf.h"

/* Replies the node writes for requests that change it start with one of these. */
#define CTL_OK_PREFIX	 "ok: "
#define CTL_ERROR_PREFIX "error: "

/*
 * Send request (without its newline) to the socket at path and append the
 * reply to *reply.  Connecting, sending and reading share one deadline of
 * a few seconds.  0 or a negative errno: -ENOENT or -ECONNREFUSED when no
 * node listens there, -ETIMEDOUT, -ENODATA if the node closed without a
 * word, -EMSGSIZE for a reply too large to be a node's.
 */
int ctl_ask(const char *path, const char *request, struct buf *reply);

/*
 * Send request (a "hold" request, control.h: "pause") and append the
 * reply's first line to *reply, leaving the connection open: *fd is the
 * caller's, and the node lets go when it is closed.  0 or a negative errno
 * as ctl_ask().
 */
int ctl_hold(const char *path, const char *request, struct buf *reply, int *fd);

/* What a failure of ctl_ask() means for the person who asked ("node not running", ...). */
const char *ctl_failure_meaning(int err);

#endif
