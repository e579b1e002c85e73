/*
 * config.h - the node's INI configuration (NODE_DIR/ledgerfs.conf).
 *
 * Parsed with libinih.  Unknown sections or keys and malformed values are
 * errors naming file, line and key, so a typo never silently falls back to
 * a default.  Layout:
 *
 *   [node]
 *   name = a                       ; 1-63 chars of [A-Za-z0-9._-]
 *   id = 0123456789abcdef          ; 16 hex digits, never 0
 *   cluster = <32 hex digits>
 *   [replication]
 *   listen = 127.0.0.1:7001        ; optional
 *   batch_events = 256
 *   batch_bytes = 1048576
 *   batch_ms = 5
 *   sync_peers = 0
 *   sync_timeout = 5000            ; ms an fsync waits for sync_peers confirmations
 *   sync_degrade = no              ; yes: after the timeout go asynchronous instead of failing
 *   [journal]                      ; retention: events every peer confirmed are trimmed
 *   retain_bytes = 0               ; once the journal is over this bound (K/M/G/T = 1024^n);
 *                                  ; 0: min(1G, 5% of the journal's filesystem)
 *   retain_age = 1d                ; or once older than this (seconds, or s/m/h/d)
 *   retain_max_age = 0             ; events older than this go even if a member has not
 *                                  ; confirmed them (it then resyncs by snapshot); 0: never
 *   checkpoint = 30                ; how often the store is flushed (node/checkpoint.c)
 *   [peer b]                       ; one section per peer
 *   address = 127.0.0.1:7002
 *   id = ...                       ; optional until the peer is first seen
 */
#ifndef LEDGERFS_CONFIG_H
#define LEDGERFS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_FILE	 "ledgerfs.conf"
#define CONFIG_NAME_MAX	 64
#define CONFIG_ADDR_MAX	 256
#define CONFIG_MAX_PEERS 32
#define CONFIG_PATH_MAX	 1024

struct config_peer {
	char name[CONFIG_NAME_MAX];
	char address[CONFIG_ADDR_MAX];
	uint64_t id; /* 0 when not known yet */
};

struct config {
	char name[CONFIG_NAME_MAX];
	uint64_t node_id;
	uint8_t cluster_id[16];
	char listen[CONFIG_ADDR_MAX]; /* empty when the node does not listen */
	uint32_t batch_events;
	uint32_t batch_bytes;
	uint32_t batch_ms;
	uint32_t sync_peers;
	uint32_t sync_timeout_ms;
	bool sync_degrade;
	uint64_t retain_bytes;	     /* the journal's bound; 0: config_retain_bound() picks it */
	uint64_t retain_age_sec;     /* 0: confirmed events are not kept for their age */
	uint64_t checkpoint_sec;     /* store checkpoint interval, 1 s to 1 h */
	uint64_t retain_max_age_sec; /* 0: unconfirmed events are never trimmed */
	/* [archive] repository: where the daemon archives its journal; "" none. */
	char archive_repo[CONFIG_PATH_MAX];
	unsigned npeers;
	struct config_peer peers[CONFIG_MAX_PEERS];
};

/* The bound retain_bytes = 0 gives: CONFIG_RETAIN_AUTO_PERCENT of the filesystem, at most this. */
#define CONFIG_RETAIN_AUTO_MAX	   (1ull << 30)
#define CONFIG_RETAIN_AUTO_PERCENT 5

/*
 * The bytes the journal is kept within, trimming what every member
 * confirmed: retain_bytes if set, else CONFIG_RETAIN_AUTO_PERCENT of fs_bytes
 * (the size of the filesystem holding the journal; 0 if unknown) and at
 * most CONFIG_RETAIN_AUTO_MAX.
 */
uint64_t config_retain_bound(const struct config *cfg, uint64_t fs_bytes);

/* Fill cfg with defaults (no name, no ids, no peers). */
void config_defaults(struct config *cfg);

/* True if name is a valid node or peer name. */
int config_name_valid(const char *name);

/*
 * Load path into cfg (defaults first).  0, or a negative errno with a
 * message naming the file, line and key written to err (errlen bytes).
 * Required: node.name, node.id, node.cluster.
 */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);

/* Write cfg to path atomically (temp file, fsync, rename).  0 or -errno. */
int config_save(const char *path, const struct config *cfg);

/*
 * Exactly 2 * n hex digits (len bytes of s, no terminator needed) into
 * out[n], not all zero; 0 or -EINVAL.  Ids and cluster ids are written so.
 */
int config_parse_hex(const char *s, size_t len, uint8_t *out, size_t n);

/* Parse "16 hex digits" into *id; 0 or -EINVAL. */
int config_parse_id(const char *s, uint64_t *id);

#endif
