/*
 * peer_arg.c - parse and check ledgerctl's HOST:PORT and NAME=HOST:PORT
 * arguments (see peer_arg.h).
 *
 * The address rules are those config_load() applies to listen and peer
 * addresses, checked here first so a bad argument is refused with a reason
 * instead of failing later when the configuration is saved (config_save()
 * refuses anything it could not load back, but cannot say why).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "peer_arg.h"

int peer_arg_address(const char *s, char *why, size_t whylen)
{
	const char *colon = strrchr(s, ':'), *p;
	size_t hostlen;
	unsigned long port = 0;

	if (strlen(s) >= CONFIG_ADDR_MAX) {
		snprintf(why, whylen, "longer than %d characters", CONFIG_ADDR_MAX - 1);
		return -EINVAL;
	}
	/* "[::1]" has colons but no port: its last colon is inside the brackets. */
	if (!colon || colon == s || !colon[1] || (s[0] == '[' && colon[-1] != ']')) {
		snprintf(why, whylen, "want HOST:PORT (an IPv6 host as [ADDR]:PORT)");
		return -EINVAL;
	}
	/* Digits only, as the loader reads them: no sign, spaces or 0x. */
	for (p = colon + 1; *p && port <= 65535; p++) {
		if (*p < '0' || *p > '9')
			break;
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (*p || port == 0 || port > 65535) {
		snprintf(why, whylen, "port '%s' is not a number from 1 to 65535", colon + 1);
		return -EINVAL;
	}
	hostlen = (size_t)(colon - s);
	/* These would change the meaning of the configuration line. */
	for (p = s; p < colon; p++) {
		unsigned char c = (unsigned char)*p;

		if (c <= ' ' || c >= 0x7f || c == ';' || c == '#' || c == '=') {
			snprintf(why, whylen,
				 "the host has a space, control character, ';', '#' or '='");
			return -EINVAL;
		}
	}
	if (s[0] == '[' ? hostlen < 3 || s[hostlen - 1] != ']' : memchr(s, ':', hostlen) != NULL) {
		snprintf(why, whylen, "an IPv6 host goes in brackets: [ADDR]:PORT");
		return -EINVAL;
	}
	return 0;
}

int peer_arg_parse(const char *arg, struct config_peer *p, char *why, size_t whylen)
{
	const char *eq = strchr(arg, '=');
	size_t nlen = eq ? (size_t)(eq - arg) : 0;
	char sub[256];

	memset(p, 0, sizeof(*p));
	if (!eq) {
		snprintf(why, whylen, "want NAME=HOST:PORT");
		return -EINVAL;
	}
	/* Too long a name stays empty in p, which config_name_valid() refuses. */
	if (nlen < sizeof(p->name))
		memcpy(p->name, arg, nlen);
	if (!config_name_valid(p->name)) {
		snprintf(why, whylen, "invalid name '%.*s' (1-63 of A-Z a-z 0-9 . _ -)", (int)nlen,
			 arg);
		return -EINVAL;
	}
	if (peer_arg_address(eq + 1, sub, sizeof(sub)) < 0) {
		snprintf(why, whylen, "address '%s': %s", eq + 1, sub);
		return -EINVAL;
	}
	snprintf(p->address, sizeof(p->address), "%s", eq + 1);
	return 0;
}

int peer_arg_check(const struct config *cfg, const struct config_peer *p, char *why, size_t whylen)
{
	unsigned i;

	if (!strcmp(p->name, cfg->name)) {
		snprintf(why, whylen, "'%s' is this node's own name", p->name);
		return -EINVAL;
	}
	if (p->id && p->id == cfg->node_id) {
		snprintf(why, whylen, "%016" PRIx64 " is this node's own id", p->id);
		return -EINVAL;
	}
	if (cfg->listen[0] && !strcmp(p->address, cfg->listen)) {
		snprintf(why, whylen, "%s is this node's own listen address", p->address);
		return -EINVAL;
	}
	for (i = 0; i < cfg->npeers; i++) {
		const struct config_peer *q = &cfg->peers[i];

		if (!strcmp(q->name, p->name)) {
			snprintf(why, whylen, "there is already a peer named '%s'", p->name);
			return -EEXIST;
		}
		if (p->id && q->id == p->id) {
			snprintf(why, whylen, "peer '%s' already has id %016" PRIx64, q->name,
				 p->id);
			return -EEXIST;
		}
		if (!strcmp(q->address, p->address)) {
			snprintf(why, whylen, "peer '%s' already has address %s", q->name,
				 p->address);
			return -EEXIST;
		}
	}
	if (cfg->npeers >= CONFIG_MAX_PEERS) {
		snprintf(why, whylen, "a node has at most %d peers", CONFIG_MAX_PEERS);
		return -ENOSPC;
	}
	return 0;
}
