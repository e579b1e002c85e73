/*
 * status_fmt.h - render a node's replication status (repl.h) for people,
 * for programs and for Prometheus.
 *
 * The renderers only format: no I/O, no clock, no locks, so the control
 * socket (control.h) can call them on a snapshot and the tests can call
 * them on a hand-made status.  Each appends to a struct buf (lib/buf.h) and keeps
 * the text NUL-terminated after b->len, so the caller may use b->data as a
 * C string.  On error b may hold part of the output; the caller resets it.
 *
 * Every string in the status is treated as untrusted: a peer's refusal
 * reason (`why`) can carry any bytes, so each format escapes what its
 * readers could misread (terminal control characters, JSON and label
 * syntax, bytes that are not UTF-8).
 */
#ifndef LEDGERFS_STATUS_FMT_H
#define LEDGERFS_STATUS_FMT_H

#include "lib/buf.h"
#include "repl/repl.h"

/*
 * Human-readable, several lines: the node, its applied vector (origins by
 * name where the status knows it), each peer's link, lag, confirmations
 * and traffic, then the recent OUTAGE/RECOVERED notes with UTC times.
 * 0, -ENOMEM, -EOVERFLOW, or -EINVAL if a count in st exceeds its array.
 */
int status_fmt_text(const struct repl_status *st, struct buf *b);

/*
 * One JSON object and a newline; the schema is documented in
 * repl/status_fmt.c and is a contract with scripts: add keys, never
 * rename them.  Errors as status_fmt_text().
 */
int status_fmt_json(const struct repl_status *st, struct buf *b);

/*
 * Prometheus text exposition format 0.0.4: every family with # HELP and
 * # TYPE, every sample labelled node="NAME".  Errors as status_fmt_text().
 */
int status_fmt_prometheus(const struct repl_status *st, struct buf *b);

#endif
