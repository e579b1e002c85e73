/*
 * control.h - a node's control socket: the local admin interface that
 * `ledgerctl status` and `ledgerctl metrics` talk to.
 *
 * A Unix stream socket, mode 0600 (root-only, since it is the node's
 * administration interface), served by one thread.  A client sends one
 * request line of at most CONTROL_MAX_REQUEST bytes, '\n' included:
 *
 *   status        the status for a person (status_fmt_text)
 *   status json   the status as one JSON object (status_fmt_json)
 *   metrics       Prometheus text format 0.0.4 (status_fmt_prometheus)
 *   applied       "ok: moves=M ORIGIN:SEQ ...": the applied vector, read under
 *                 the node lock, and the store's renames and links so far
 *                 (store_moves()); what a backup of a running node reads
 *   pause         the same reply, and the node lock stays taken until the
 *                 client closes the connection (at most CONTROL_HOLD_MS):
 *                 the store does not change meanwhile (a backup's walk of a
 *                 store renamed in constantly)
 *
 * and reads the reply until the server closes.  Anything else gets
 * "error: unknown request 'X'\n".  A request is served within
 * CONTROL_TIMEOUT_MS of being accepted or dropped, so a stuck client delays
 * the next by at most that; one request is served at a time.
 */
#ifndef LEDGERFS_CONTROL_H
#define LEDGERFS_CONTROL_H

#include "repl/repl.h"

#define CONTROL_SOCKET	    "control.sock"
#define CONTROL_MAX_REQUEST 64
#define CONTROL_TIMEOUT_MS  2000
/* The longest reply line an action may write, newline included. */
#define CONTROL_MAX_REPLY_LINE 4096
/* An action's return: keep the connection after the reply (control_start()). */
#define CONTROL_HOLD	1
#define CONTROL_HOLD_MS 120000

struct control;

/*
 * Serve the control socket at path.  snapshot(arg, st) fills *st for each
 * request, on the control thread; it returns 0 or a negative errno, which
 * the client gets as "error: ...".  Any other request goes to action
 * (may be NULL): it writes the reply line (starting "ok: " or "error: ")
 * into reply and returns 0, or -ENOENT for a request it does not know.
 * An action that returns CONTROL_HOLD has taken something the client then
 * holds (the node lock): once its reply is sent, the server waits until
 * the client closes the connection, CONTROL_HOLD_MS pass or control_stop()
 * is called, then calls release(arg) (may be NULL otherwise) on the same
 * thread as the action; other requests wait meanwhile.
 * A leftover socket file at path is
 * replaced, unless a process still answers on it (-EADDRINUSE); any other
 * kind of file there is left alone (-EEXIST).  Failures are logged with
 * the path.  *out is the caller's, released with control_stop().
 */
int control_start(const char *path, int (*snapshot)(void *arg, struct repl_status *st),
		  int (*action)(void *arg, const char *req, char *reply, size_t len),
		  void (*release)(void *arg), void *arg, struct control **out);

/*
 * Stop serving: interrupts a request in progress, joins the thread and
 * removes the socket file (if it is still ours).  NULL is allowed.
 */
void control_stop(struct control *c);

#endif
