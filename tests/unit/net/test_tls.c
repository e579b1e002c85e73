/*
 * test_tls.c - net/tls.c: the cluster CA, node certificates, and real
 * TLS 1.3 handshakes between two node contexts over a socketpair.
 *
 * Each test works in its own mkdtemp directory, removed by the fixture,
 * which also frees every TLS context a test made.  The two sides of a
 * handshake run in two threads; both sockets time out after a few seconds,
 * so a side that never answers ends the wait instead of hanging the test.
 * Certificates tls.c would never issue (no node URI, expired) are made here
 * with OpenSSL calls and signed by the test's own CA.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "net/tls.h"
#include "tree.h"

#define ID_A	     UINT64_C(0x0123456789abcdef)
#define ID_B	     UINT64_C(0xfedcba9876543210)
#define ID_X	     UINT64_C(0x00000000000000aa)
#define TIMEOUT_SECS 5
#define MAX_CTX	     8

static const uint8_t CLUSTER[16] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,
				    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
static const uint8_t OTHER_CLUSTER[16] = {0xaa, 0xbb};

static char tmp[64];
static SSL_CTX *ctxs[MAX_CTX]; /* freed by teardown, so a failed assertion leaks nothing */
static unsigned nctx;

/* dir/name into a static buffer of each of four rotating slots. */
static const char *in(const char *dir, const char *name)
{
	static char bufs[4][PATH_MAX];
	static unsigned next;
	char *p = bufs[next++ % 4];

	snprintf(p, PATH_MAX, "%s/%s/%s", tmp, dir, name);
	return p;
}

static const char *sub(const char *dir)
{
	static char bufs[4][PATH_MAX];
	static unsigned next;
	char *p = bufs[next++ % 4];

	snprintf(p, PATH_MAX, "%s/%s", tmp, dir);
	return p;
}

static void setup(void)
{
	strcpy(tmp, "/tmp/test_tls.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	/* A side writing after its peer has gone must get EPIPE, not die. */
	cr_assert_neq(signal(SIGPIPE, SIG_IGN), SIG_ERR);
}

static void drop_ctxs(void)
{
	while (nctx > 0)
		SSL_CTX_free(ctxs[--nctx]);
}

static void teardown(void)
{
	drop_ctxs();
	tree_remove(tmp);
}

TestSuite(tls, .init = setup, .fini = teardown);

static SSL_CTX *keep(SSL_CTX *ctx)
{
	cr_assert_not_null(ctx);
	cr_assert_lt(nctx, MAX_CTX);
	ctxs[nctx++] = ctx;
	return ctx;
}

static SSL_CTX *node_ctx(const char *node, int server)
{
	SSL_CTX *ctx = NULL;
	int r = tls_ctx_new(sub(node), server, &ctx);

	cr_assert_eq(r, 0, "tls_ctx_new(%s): %d", node, r);
	return keep(ctx);
}

/* The CA in tmp/ca and nodes a and b certified by it. */
static void make_cluster(void)
{
	cr_assert_eq(tls_ca_create(sub("ca"), CLUSTER), 0);
	cr_assert_eq(mkdir(sub("a"), 0700), 0);
	cr_assert_eq(mkdir(sub("b"), 0700), 0);
	cr_assert_eq(tls_node_cert_issue(sub("ca"), sub("a"), "a", ID_A, CLUSTER), 0);
	cr_assert_eq(tls_node_cert_issue(sub("ca"), sub("b"), "b", ID_B, CLUSTER), 0);
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x, "%s: not a certificate", path);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(k, "%s: not a key", path);
	return k;
}

static mode_t file_mode(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

static int ext_critical(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);

	cr_assert_geq(i, 0, "extension %d missing", nid);
	return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

/*
 * Write tmp/dir/{node.key,node.crt,ca.crt}: a new P-256 key and a
 * certificate for it signed by tmp/ca, with subjectAltName san (OpenSSL
 * syntax, NULL for none), valid from now + from_days to now + to_days.
 */
static void make_odd_node(const char *dir, const char *san, int from_days, int to_days)
{
	X509 *ca = read_cert(in("ca", TLS_CA_CERT));
	EVP_PKEY *ca_key = read_key(in("ca", TLS_CA_KEY));
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	FILE *f;

	cr_assert_not_null(key);
	cr_assert_not_null(x);
	cr_assert_eq(mkdir(sub(dir), 0700), 0);
	cr_assert(X509_set_version(x, X509_VERSION_3));
	cr_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), 7));
	cr_assert_not_null(X509_time_adj_ex(X509_getm_notBefore(x), from_days, 0, NULL));
	cr_assert_not_null(X509_time_adj_ex(X509_getm_notAfter(x), to_days, 0, NULL));
	cr_assert(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
					     (const unsigned char *)dir, -1, -1, 0));
	cr_assert(X509_set_issuer_name(x, X509_get_subject_name(ca)));
	cr_assert(X509_set_pubkey(x, key));
	if (san) {
		X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
		cr_assert_not_null(ext, "bad subjectAltName '%s'", san);
		cr_assert(X509_add_ext(x, ext, -1));
		X509_EXTENSION_free(ext);
	}
	cr_assert(X509_sign(x, ca_key, EVP_sha256()));

	f = fopen(in(dir, TLS_NODE_KEY), "w");
	cr_assert_not_null(f);
	cr_assert(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
	cr_assert_eq(fclose(f), 0);
	f = fopen(in(dir, TLS_NODE_CERT), "w");
	cr_assert_not_null(f);
	cr_assert(PEM_write_X509(f, x));
	cr_assert_eq(fclose(f), 0);
	f = fopen(in(dir, TLS_CA_CERT), "w");
	cr_assert_not_null(f);
	cr_assert(PEM_write_X509(f, ca));
	cr_assert_eq(fclose(f), 0);

	X509_free(x);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	X509_free(ca);
}

/* What one side of a link saw.  Filled by run_side() in its own thread. */
struct side {
	SSL_CTX *ctx;
	int fd;
	int server;
	int handshake; /* SSL_accept/SSL_connect succeeded */
	int version;   /* negotiated protocol after the handshake */
	long verify;   /* SSL_get_verify_result() */
	int id_rc;     /* tls_peer_node_id() */
	uint64_t peer_id;
	const char *why;
	int confirmed; /* server: sent its byte after accepting the peer id; client: got it */
	char err[256];
};

/*
 * One side of a link: handshake, peer id, then one byte from server to
 * client, as the protocol's first message would be.  The server sends it
 * only if the client's id was read, so a client learns of any refusal.
 */
static void *run_side(void *arg)
{
	struct side *s = arg;
	unsigned char byte = 'k';
	SSL *ssl = SSL_new(s->ctx);

	if (!ssl) {
		snprintf(s->err, sizeof(s->err), "SSL_new failed");
		goto out;
	}
	if (SSL_set_fd(ssl, s->fd) != 1) {
		snprintf(s->err, sizeof(s->err), "SSL_set_fd failed");
		goto out;
	}
	s->handshake = (s->server ? SSL_accept(ssl) : SSL_connect(ssl)) == 1;
	s->verify = SSL_get_verify_result(ssl);
	if (!s->handshake) {
		tls_error_text(ssl, s->err, sizeof(s->err));
		goto out;
	}
	s->version = SSL_version(ssl);
	s->id_rc = tls_peer_node_id(ssl, &s->peer_id, &s->why);
	if (s->server) {
		if (s->id_rc == 0)
			s->confirmed = SSL_write(ssl, &byte, 1) == 1;
	} else {
		byte = 0;
		s->confirmed = SSL_read(ssl, &byte, 1) == 1 && byte == 'k';
		if (!s->confirmed)
			tls_error_text(ssl, s->err, sizeof(s->err));
	}
	if (s->confirmed && SSL_shutdown(ssl) < 0)
		snprintf(s->err, sizeof(s->err), "SSL_shutdown failed");
out:
	/* Whatever happened, the other side now sees the end of the stream. */
	if (shutdown(s->fd, SHUT_WR) < 0 && !s->err[0])
		snprintf(s->err, sizeof(s->err), "shutdown: %s", strerror(errno));
	SSL_free(ssl);
	ERR_clear_error();
	return NULL;
}

static void handshake(SSL_CTX *server_ctx, SSL_CTX *client_ctx, struct side *srv, struct side *cli)
{
	struct timeval tv = {.tv_sec = TIMEOUT_SECS};
	pthread_t t;
	int sv[2], i, r;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	for (i = 0; i < 2; i++) {
		if (setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
		    setsockopt(sv[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
			close(sv[0]);
			close(sv[1]);
			cr_assert_fail("setsockopt: %s", strerror(errno));
		}
	}
	memset(srv, 0, sizeof(*srv));
	memset(cli, 0, sizeof(*cli));
	srv->ctx = server_ctx;
	srv->fd = sv[0];
	srv->server = 1;
	cli->ctx = client_ctx;
	cli->fd = sv[1];
	r = pthread_create(&t, NULL, run_side, srv);
	if (r != 0) {
		close(sv[0]);
		close(sv[1]);
		cr_assert_fail("pthread_create: %s", strerror(r));
	}
	run_side(cli);
	r = pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	cr_assert_eq(r, 0, "pthread_join: %s", strerror(r));
}

Test(tls, ca_create_makes_private_key_and_self_signed_ca)
{
	uint8_t cluster[16];
	char cn[128];
	X509 *ca;
	EVP_PKEY *key;
	int days = 0, secs = 0;

	cr_assert_eq(tls_ca_create(sub("ca"), CLUSTER), 0);
	cr_assert_eq(file_mode(sub("ca")), 0700);
	cr_assert_eq(file_mode(in("ca", TLS_CA_KEY)), 0600);
	ca = read_cert(in("ca", TLS_CA_CERT));
	key = read_key(in("ca", TLS_CA_KEY));
	cr_assert(EVP_PKEY_is_a(key, "EC"));
	cr_assert_eq(EVP_PKEY_get_bits(key), 256);
	cr_assert_eq(X509_check_private_key(ca, key), 1);
	cr_assert_eq(X509_verify(ca, X509_get0_pubkey(ca)), 1, "not self-signed");
	cr_assert_eq(X509_check_ca(ca), 1);
	cr_assert(ext_critical(ca, NID_basic_constraints));
	cr_assert_eq(X509_get_key_usage(ca), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	cr_assert_gt(
	    X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn, sizeof(cn)),
	    0);
	cr_assert_str_eq(cn, "ledgerfs cluster CA 1032547698badcfe0123456789abcdef");
	cr_assert(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(ca)));
	cr_assert(days >= 3650 && days <= 3653, "CA valid for %d days", days);
	cr_assert_eq(tls_ca_cluster_id(sub("ca"), cluster), 0);
	cr_assert_eq(memcmp(cluster, CLUSTER, 16), 0);
	EVP_PKEY_free(key);
	X509_free(ca);
}

Test(tls, ca_create_refuses_non_empty_directory)
{
	struct stat st;
	FILE *f;

	cr_assert_eq(mkdir(sub("ca"), 0700), 0);
	f = fopen(in("ca", "notes"), "w");
	cr_assert_not_null(f);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(tls_ca_create(sub("ca"), CLUSTER), -ENOTEMPTY);
	cr_assert_eq(stat(in("ca", TLS_CA_KEY), &st), -1);
	cr_assert_eq(stat(in("ca", "notes"), &st), 0);

	cr_assert_eq(tls_ca_create(sub("ca2"), CLUSTER), 0);
	cr_assert_eq(tls_ca_create(sub("ca2"), CLUSTER), -ENOTEMPTY, "an existing CA was replaced");
}

Test(tls, ca_create_refuses_zero_cluster_id)
{
	static const uint8_t zero[16];
	struct stat st;

	cr_assert_eq(tls_ca_create(sub("ca"), zero), -EINVAL);
	cr_assert_eq(stat(sub("ca"), &st), -1);
}

Test(tls, node_cert_carries_name_id_and_both_usages)
{
	X509 *ca, *node;
	GENERAL_NAMES *names;
	const GENERAL_NAME *gn;
	char cn[64];
	int days = 0, secs = 0;

	make_cluster();
	cr_assert_eq(file_mode(in("a", TLS_NODE_KEY)), 0600);
	ca = read_cert(in("a", TLS_CA_CERT));
	node = read_cert(in("a", TLS_NODE_CERT));
	cr_assert_eq(X509_verify(node, X509_get0_pubkey(ca)), 1, "not signed by the CA");
	cr_assert_eq(X509_check_issued(ca, node), X509_V_OK);
	cr_assert_eq(X509_check_ca(node), 0);
	cr_assert_gt(
	    X509_NAME_get_text_by_NID(X509_get_subject_name(node), NID_commonName, cn, sizeof(cn)),
	    0);
	cr_assert_str_eq(cn, "a");
	cr_assert_eq(X509_get_extended_key_usage(node) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
		     XKU_SSL_SERVER | XKU_SSL_CLIENT);
	names = X509_get_ext_d2i(node, NID_subject_alt_name, NULL, NULL);
	cr_assert_not_null(names);
	cr_assert_eq(sk_GENERAL_NAME_num(names), 1);
	gn = sk_GENERAL_NAME_value(names, 0);
	cr_assert_eq(gn->type, GEN_URI);
	cr_assert_str_eq((const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier),
			 "ledgerfs://node/0123456789abcdef");
	GENERAL_NAMES_free(names);
	cr_assert(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(node)));
	cr_assert(days >= 1825 && days <= 1827, "node certificate valid for %d days", days);
	X509_free(node);
	X509_free(ca);
}

Test(tls, node_cert_issue_refuses_foreign_cluster_bad_names_and_existing_identity)
{
	struct stat st;

	make_cluster();
	cr_assert_eq(mkdir(sub("c"), 0700), 0);
	cr_assert_eq(tls_node_cert_issue(sub("ca"), sub("c"), "c", ID_X, OTHER_CLUSTER), -ESTALE);
	cr_assert_eq(tls_node_cert_issue(sub("ca"), sub("c"), "c/d", ID_X, CLUSTER), -EINVAL);
	cr_assert_eq(tls_node_cert_issue(sub("ca"), sub("c"), "c", 0, CLUSTER), -EINVAL);
	cr_assert_eq(stat(in("c", TLS_NODE_KEY), &st), -1);
	cr_assert_eq(tls_node_cert_issue(sub("ca"), sub("a"), "a", ID_X, CLUSTER), -EEXIST);
	cr_assert_eq(tls_node_cert_issue(sub("nowhere"), sub("c"), "c", ID_X, CLUSTER), -ENOENT);
}

Test(tls, handshake_is_tls13_and_each_side_reads_the_others_id)
{
	struct side srv, cli;
	SSL_CTX *server_ctx, *client_ctx;

	make_cluster();
	server_ctx = node_ctx("a", 1);
	client_ctx = node_ctx("b", 0);
	cr_assert_eq(SSL_CTX_get_min_proto_version(server_ctx), TLS1_3_VERSION);
	cr_assert_eq(SSL_CTX_get_min_proto_version(client_ctx), TLS1_3_VERSION);
	handshake(server_ctx, client_ctx, &srv, &cli);
	cr_assert(srv.handshake, "server: %s", srv.err);
	cr_assert(cli.handshake, "client: %s", cli.err);
	cr_assert_eq(srv.version, TLS1_3_VERSION);
	cr_assert_eq(cli.version, TLS1_3_VERSION);
	cr_assert_eq(srv.id_rc, 0, "server: %s", srv.why);
	cr_assert_eq(cli.id_rc, 0, "client: %s", cli.why);
	cr_assert_eq(srv.peer_id, ID_B);
	cr_assert_eq(cli.peer_id, ID_A);
	cr_assert(srv.confirmed);
	cr_assert(cli.confirmed, "client: %s", cli.err);
}

Test(tls, refuses_client_without_certificate)
{
	struct side srv, cli;
	SSL_CTX *bare = keep(SSL_CTX_new(TLS_client_method()));

	make_cluster();
	cr_assert_eq(SSL_CTX_load_verify_file(bare, in("b", TLS_CA_CERT)), 1);
	SSL_CTX_set_verify(bare, SSL_VERIFY_PEER, NULL);
	handshake(node_ctx("a", 1), bare, &srv, &cli);
	cr_assert_not(srv.handshake);
	cr_assert_not_null(strstr(srv.err, "peer did not return a certificate"), "server: %s",
			   srv.err);
	cr_assert_not(cli.confirmed);
}

Test(tls, refuses_client_signed_by_another_ca)
{
	struct side srv, cli;
	SSL_CTX *intruder = NULL;

	make_cluster();
	cr_assert_eq(tls_ca_create(sub("ca2"), OTHER_CLUSTER), 0);
	cr_assert_eq(mkdir(sub("x"), 0700), 0);
	cr_assert_eq(tls_node_cert_issue(sub("ca2"), sub("x"), "x", ID_X, OTHER_CLUSTER), 0);
	/* It trusts our CA, so only the server's verdict on its certificate can stop it. */
	cr_assert_eq(tls_ctx_new_paths(in("x", TLS_NODE_CERT), in("x", TLS_NODE_KEY),
				       in("a", TLS_CA_CERT), 0, &intruder),
		     0);
	keep(intruder);
	handshake(node_ctx("a", 1), intruder, &srv, &cli);
	cr_assert_not(srv.handshake);
	cr_assert_neq(srv.verify, X509_V_OK);
	cr_assert_not_null(strstr(srv.err, "certificate verify failed"), "server: %s", srv.err);
	cr_assert_not(cli.confirmed);

	/* Nor does a node of ours accept a server signed by the other CA. */
	handshake(node_ctx("x", 1), node_ctx("b", 0), &srv, &cli);
	cr_assert_not(cli.handshake);
	cr_assert_neq(cli.verify, X509_V_OK);
	cr_assert_not(srv.handshake);
}

Test(tls, refuses_certificate_without_node_uri)
{
	static const char *const sans[] = {
	    NULL,
	    "DNS:a.example",
	    "URI:ledgerfs://node/0123",
	    "URI:ledgerfs://node/0123456789abcdeg",
	    "URI:ledgerfs://node/0000000000000000",
	    "URI:ledgerfs://node/0123456789abcdef0",
	    "URI:ledgerfs://node/0123456789abcdef,URI:ledgerfs://node/fedcba9876543210",
	};
	struct side srv, cli;
	char dir[16];
	size_t i;

	make_cluster();
	for (i = 0; i < sizeof(sans) / sizeof(sans[0]); i++) {
		snprintf(dir, sizeof(dir), "odd%zu", i);
		make_odd_node(dir, sans[i], -1, 30);
		handshake(node_ctx("a", 1), node_ctx(dir, 0), &srv, &cli);
		drop_ctxs();
		cr_assert(srv.handshake, "%s: server: %s", sans[i], srv.err);
		cr_assert_eq(srv.id_rc, -EACCES, "%s accepted", sans[i]);
		cr_assert_not_null(srv.why);
		cr_assert_not(cli.confirmed, "%s: client was not told", sans[i]);
	}
}

Test(tls, well_formed_test_certificate_is_accepted)
{
	struct side srv, cli;

	/* The same builder as the refusals, with a good URI: what they refuse is the URI. */
	make_cluster();
	make_odd_node("good", "URI:ledgerfs://node/00000000000000aa", -1, 30);
	handshake(node_ctx("a", 1), node_ctx("good", 0), &srv, &cli);
	cr_assert_eq(srv.id_rc, 0, "server: %s %s", srv.err, srv.why ? srv.why : "");
	cr_assert_eq(srv.peer_id, ID_X);
	cr_assert(cli.confirmed, "client: %s", cli.err);
}

Test(tls, refuses_expired_certificate)
{
	struct side srv, cli;

	make_cluster();
	make_odd_node("old", "URI:ledgerfs://node/00000000000000aa", -30, -1);
	handshake(node_ctx("a", 1), node_ctx("old", 0), &srv, &cli);
	cr_assert_not(srv.handshake);
	cr_assert_eq(srv.verify, X509_V_ERR_CERT_HAS_EXPIRED, "server: %s", srv.err);
	cr_assert_not(cli.confirmed);

	handshake(node_ctx("old", 1), node_ctx("b", 0), &srv, &cli);
	cr_assert_not(cli.handshake);
	cr_assert_eq(cli.verify, X509_V_ERR_CERT_HAS_EXPIRED, "client: %s", cli.err);
	cr_assert_not_null(strstr(cli.err, "expired"), "client: %s", cli.err);
}

Test(tls, ctx_refuses_missing_files_and_a_key_of_another_node)
{
	SSL_CTX *ctx = NULL;

	make_cluster();
	cr_assert_eq(tls_ctx_new(sub("nowhere"), 1, &ctx), -ENOENT);
	cr_assert_eq(tls_ctx_new_paths(in("a", TLS_NODE_CERT), in("b", TLS_NODE_KEY),
				       in("a", TLS_CA_CERT), 1, &ctx),
		     -EINVAL);
	cr_assert_null(ctx);
}

Test(tls, membership_accepts_configured_peer_ids_only)
{
	struct config cfg;
	const char *name = NULL;

	config_defaults(&cfg);
	snprintf(cfg.name, sizeof(cfg.name), "a");
	cfg.node_id = ID_A;
	cfg.npeers = 2;
	snprintf(cfg.peers[0].name, sizeof(cfg.peers[0].name), "b");
	cfg.peers[0].id = ID_B;
	snprintf(cfg.peers[1].name, sizeof(cfg.peers[1].name), "c");
	cfg.peers[1].id = 0;

	cr_assert_eq(tls_check_member(&cfg, ID_B, &name), 0);
	cr_assert_str_eq(name, "b");
	cr_assert_eq(tls_check_member(&cfg, ID_X, &name), -EACCES);
	cr_assert_eq(tls_check_member(&cfg, ID_A, &name), -EACCES, "own id taken for a peer");
	cr_assert_eq(tls_check_member(&cfg, 0, &name), -EACCES, "unknown-id peer matched 0");
}
