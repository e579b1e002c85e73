/*
 * peer_arg.h - the HOST:PORT and NAME=HOST:PORT arguments of ledgerctl
 * (init --listen and --peer, peer add), parsed and checked in one place so
 * every command accepts and refuses the same spellings.
 *
 * Each function that can fail writes a reason for a person into why
 * (whylen bytes), without the argument itself: the caller knows which
 * option or file to name in front of it.
 */
#ifndef LEDGERFS_TOOLS_PEER_ARG_H
#define LEDGERFS_TOOLS_PEER_ARG_H

#include <stddef.h>

#include "lib/config.h"

/*
 * Whether s is HOST:PORT with a port 1-65535, an IPv6 host in brackets
 * ("[::1]:7001"), short enough for the configuration.  0 or -EINVAL.
 */
int peer_arg_address(const char *s, char *why, size_t whylen);

/* "NAME=HOST:PORT" into *p (name and address; id 0).  0 or -EINVAL. */
int peer_arg_parse(const char *arg, struct config_peer *p, char *why, size_t whylen);

/*
 * Whether p may be added to cfg's peers: it is not this node (name, id or
 * listen address), no configured peer has its name, id or address, and
 * there is room.  0, -EINVAL (this node), -EEXIST (clash) or -ENOSPC.
 */
int peer_arg_check(const struct config *cfg, const struct config_peer *p, char *why, size_t whylen);

#endif
