/*
 * tls.h - the cluster CA, node certificates and mutual-TLS contexts for
 * peer links.
 *
 * Trust is the cluster CA and nothing else: no system trust store, no host
 * names.  A node is identified by the subjectAltName URI
 * "ledgerfs://node/<16 hex digits>" in its CA-signed certificate, and the
 * cluster by "ledgerfs://cluster/<32 hex digits>" in the CA certificate, so
 * both are read from signed fields rather than guessed from a common name.
 *
 * Files (PEM):
 *   CA_DIR/ca.key, CA_DIR/ca.crt          made by tls_ca_create()
 *   NODE_DIR/node.key, NODE_DIR/node.crt  made by tls_node_cert_issue(),
 *   NODE_DIR/ca.crt                       with a copy of the CA certificate,
 *                                         so a node never needs the CA key.
 *
 * Keys are EC P-256: ecdsa_secp256r1_sha256 is the signature scheme every
 * TLS 1.3 implementation must support (RFC 8446, 9.1) and every OpenSSL 3
 * build and provider (FIPS included) offers, which Ed25519 is not.
 *
 * Functions return 0 or a negative errno.  Failures are logged with
 * log_err() naming the file or directory and OpenSSL's own reason.
 */
#ifndef LEDGERFS_TLS_H
#define LEDGERFS_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/config.h"

#define TLS_CA_KEY    "ca.key"
#define TLS_CA_CERT   "ca.crt"
#define TLS_NODE_KEY  "node.key"
#define TLS_NODE_CERT "node.crt"

#define TLS_CA_DAYS   3652 /* ten years */
#define TLS_NODE_DAYS 1826 /* five years */

/*
 * Create a cluster CA in dir (created 0700 if absent; -ENOTEMPTY if it has
 * entries): ca.key (0600) and a self-signed ca.crt naming cluster_id.  Each
 * file is written atomically; on failure neither is left behind.
 */
int tls_ca_create(const char *dir, const uint8_t cluster_id[16]);

/* Read the cluster id from ca_dir's ca.crt into cluster_id. */
int tls_ca_cluster_id(const char *ca_dir, uint8_t cluster_id[16]);

/*
 * Issue node_dir's node.key (0600) and node.crt, signed by the CA in ca_dir,
 * with CN node_name and the node id URI, for TLS server and client use; and
 * copy ca.crt into node_dir.  node_dir must exist.  -EEXIST if node_dir
 * already has a key or certificate, -ESTALE if cluster_id is not the CA's,
 * -EINVAL for an invalid name or a zero id.
 */
int tls_node_cert_issue(const char *ca_dir, const char *node_dir, const char *node_name,
			uint64_t node_id, const uint8_t cluster_id[16]);

/*
 * A TLS 1.3-only context for one side of a peer link (server nonzero for the
 * listening side), presenting cert_path/key_path and trusting ca_path alone.
 * Both sides require and verify the other's certificate.  Session resumption
 * is off, so every link verifies a certificate afresh.  *out is freed by the
 * caller with SSL_CTX_free().
 */
int tls_ctx_new_paths(const char *cert_path, const char *key_path, const char *ca_path, int server,
		      SSL_CTX **out);

/* tls_ctx_new_paths() with node_dir's node.crt, node.key and ca.crt. */
int tls_ctx_new(const char *node_dir, int server, SSL_CTX **out);

/*
 * After a successful handshake, the node id from the verified peer
 * certificate.  -EACCES if there is no verified certificate or it does not
 * carry exactly one well-formed node id URI; *why (static text) says which.
 *
 * In TLS 1.3 the client finishes its handshake before the server has judged
 * the client's certificate: a refusal reaches the client at its first read.
 * Read the peer's first message before trusting the link either way.
 */
int tls_peer_node_id(SSL *ssl, uint64_t *id, const char **why);

/*
 * The node name (subject CN) of the verified peer certificate into buf
 * (len bytes).  The CA signs it together with the id, which is what lets
 * a node learn a configured peer's id on first contact.  -EACCES if there
 * is no verified certificate or its CN is not a valid node name.
 */
int tls_peer_name(SSL *ssl, char *buf, size_t len);

/*
 * 0 and *name (pointing into cfg) if id is a configured peer's id, else
 * -EACCES.  This node's own id and 0 are never members: a peer whose id is
 * not known yet (0 in the config) is matched by nothing.
 */
int tls_check_member(const struct config *cfg, uint64_t id, const char **name);

/*
 * Why the last operation on ssl failed, for a log line naming the peer:
 * the certificate verification result if it was not OK, then the first
 * reason on this thread's OpenSSL error queue, which is emptied.
 */
void tls_error_text(const SSL *ssl, char *buf, size_t len);

#endif
