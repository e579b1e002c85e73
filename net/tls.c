/*
 * tls.c - cluster CA, node certificates and mutual-TLS contexts (see tls.h).
 *
 * Certificates are built with OpenSSL's X509 calls instead of running the
 * openssl tool, so ledgerctl needs no external program and every field that
 * identity rests on is set here, in one place.  Private keys are encoded into
 * secure-heap memory BIOs, which OpenSSL wipes when they grow or are freed,
 * and reach disk only through an atomic write with mode 0600.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/files.h"
#include "lib/log.h"
#include "net/tls.h"

#define NODE_URI_PREFIX	   "ledgerfs://node/"
#define CLUSTER_URI_PREFIX "ledgerfs://cluster/"

/* RFC 5280 allows serials of up to 20 octets; 159 random bits stay positive within that. */
#define SERIAL_BITS 159

/* notBefore is set this far back so a peer whose clock lags a little accepts a new certificate. */
#define CLOCK_SKEW_SECS 3600

/* log_err() what failed (fmt) with every reason on this thread's OpenSSL error queue, emptying it.
 */
static void log_ssl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_ssl(const char *fmt, ...)
{
	char what[512], reason[256];
	const char *data = NULL;
	unsigned long e;
	int flags = 0, any = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		int text = (flags & ERR_TXT_STRING) && data && *data;

		ERR_error_string_n(e, reason, sizeof(reason));
		log_err("%s: %s%s%s", what, reason, text ? " " : "", text ? data : "");
		any = 1;
	}
	if (!any)
		log_err("%s", what);
}

/* Never prompt for a passphrase: keys are unencrypted, and a daemon has no terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static void hex_format(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static int path_join(char *out, size_t len, const char *dir, const char *name)
{
	if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len) {
		log_err("%s/%s: path too long", dir, name);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Write dir/name with mode, atomically: temp file, fsync, rename, fsync of dir. */
static int write_file_atomic(const char *dir, const char *name, const char *data, size_t len,
			     mode_t mode)
{
	char path[PATH_MAX];
	int r;

	if ((r = path_join(path, sizeof(path), dir, name)) < 0)
		return r;
	r = file_write_atomic(path, data, len, mode);
	if (r < 0)
		log_err("%s: %s", path, strerror(-r));
	return r;
}

/* Remove dir/name left by a creation that failed later on. */
static void remove_partial(const char *dir, const char *name)
{
	char path[PATH_MAX];

	if (path_join(path, sizeof(path), dir, name) < 0)
		return;
	if (unlink(path) < 0 && errno != ENOENT)
		log_warn("%s: cannot remove after a failed creation: %s", path, strerror(errno));
}

/* Write key (PEM, PKCS#8, unencrypted) to dir/name, mode 0600. */
static int save_key(const char *dir, const char *name, EVP_PKEY *key)
{
	BIO *bio = BIO_new(BIO_s_secmem());
	char *data = NULL;
	long len;
	int r;

	if (!bio) {
		log_ssl("%s/%s: cannot encode the key", dir, name);
		return -ENOMEM;
	}
	if (!PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
		log_ssl("%s/%s: cannot encode the key", dir, name);
		r = -EIO;
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	r = write_file_atomic(dir, name, data, (size_t)len, 0600);
out:
	BIO_free(bio);
	return r;
}

/* Write cert (PEM) to dir/name, mode 0644. */
static int save_cert(const char *dir, const char *name, X509 *cert)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long len;
	int r;

	if (!bio) {
		log_ssl("%s/%s: cannot encode the certificate", dir, name);
		return -ENOMEM;
	}
	if (!PEM_write_bio_X509(bio, cert)) {
		log_ssl("%s/%s: cannot encode the certificate", dir, name);
		r = -EIO;
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	r = write_file_atomic(dir, name, data, (size_t)len, 0644);
out:
	BIO_free(bio);
	return r;
}

/* Open dir/name for reading; path (PATH_MAX bytes) receives the name for messages. */
static int pem_open(const char *dir, const char *name, char *path, FILE **f)
{
	int r = path_join(path, PATH_MAX, dir, name);

	if (r < 0)
		return r;
	*f = fopen(path, "re");
	if (!*f) {
		r = -errno;
		log_err("%s: %s", path, strerror(-r));
	}
	return r;
}

/* A read-only stream has nothing to lose on close; a failure is only worth a line. */
static void pem_close(FILE *f, const char *path)
{
	if (fclose(f) != 0)
		log_warn("%s: %s", path, strerror(errno));
}

/* Read the PEM certificate dir/name; *out freed by the caller with X509_free(). */
static int load_cert(const char *dir, const char *name, X509 **out)
{
	char path[PATH_MAX];
	FILE *f;
	int r = pem_open(dir, name, path, &f);

	if (r < 0)
		return r;
	*out = PEM_read_X509(f, NULL, no_passphrase, NULL);
	pem_close(f, path);
	if (!*out) {
		log_ssl("%s: not a PEM certificate", path);
		return -EINVAL;
	}
	return 0;
}

/* Read the PEM private key dir/name; *out freed by the caller with EVP_PKEY_free(). */
static int load_key(const char *dir, const char *name, EVP_PKEY **out)
{
	char path[PATH_MAX];
	FILE *f;
	int r = pem_open(dir, name, path, &f);

	if (r < 0)
		return r;
	*out = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	pem_close(f, path);
	if (!*out) {
		log_ssl("%s: not an unencrypted PEM private key", path);
		return -EINVAL;
	}
	return 0;
}

/* Make dir (0700) or accept it if it exists and is empty; -ENOTEMPTY otherwise. */
static int dir_prepare_empty(const char *dir)
{
	int r;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_err("%s: %s", dir, strerror(-r));
		return r;
	}
	r = dir_is_empty(dir);
	if (r == 0) {
		log_err("%s: directory is not empty; refusing to create a CA there", dir);
		return -ENOTEMPTY;
	}
	if (r < 0)
		log_err("%s: %s", dir, strerror(-r));
	return r < 0 ? r : 0;
}

static int set_random_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	int ok;

	ok = bn && BN_rand(bn, SERIAL_BITS, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
	     BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	return ok ? 0 : -EIO;
}

/* Add the extension nid = value (OpenSSL config syntax) to x, issued by issuer. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -EIO;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -EIO;
}

/*
 * A certificate for key with subject CN cn and subjectAltName uri, valid
 * for days, signed by issuer_key as issuer, or self-signed when issuer is
 * NULL.  ca selects a CA (may sign, no intermediates below it) or a TLS leaf
 * for both link directions.  *out freed by the caller with X509_free();
 * OpenSSL's reasons are left on the error queue.
 */
static int cert_make(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
		     const char *uri, int ca, int days, X509 **out)
{
	X509 *x = X509_new();
	X509_NAME *subject; /* owned by x */
	char san[128];
	int r = -EIO;

	if (!x)
		return -ENOMEM;
	if ((size_t)snprintf(san, sizeof(san), "URI:%s", uri) >= sizeof(san)) {
		r = -ENAMETOOLONG;
		goto out;
	}
	if (!X509_set_version(x, X509_VERSION_3) || set_random_serial(x) < 0)
		goto out;
	if (!X509_gmtime_adj(X509_getm_notBefore(x), -CLOCK_SKEW_SECS) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL))
		goto out;
	subject = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8,
					(const unsigned char *)"ledgerfs", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0))
		goto out;
	if (!X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) ||
	    !X509_set_pubkey(x, key))
		goto out;
	if (!issuer)
		issuer = x;
	/* The subject key id must exist before the authority key id can refer to it. */
	if (add_ext(x, issuer, NID_basic_constraints,
		    ca ? "critical,CA:TRUE,pathlen:0" : "critical,CA:FALSE") < 0 ||
	    add_ext(x, issuer, NID_key_usage,
		    ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") < 0 ||
	    (!ca && add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth") < 0) ||
	    add_ext(x, issuer, NID_subject_key_identifier, "hash") < 0 ||
	    add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") < 0 ||
	    add_ext(x, issuer, NID_subject_alt_name, san) < 0)
		goto out;
	if (!X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()))
		goto out;
	*out = x;
	x = NULL;
	r = 0;
out:
	X509_free(x);
	return r;
}

/*
 * From the one subjectAltName URI of x that starts with prefix, the 2 * n
 * hex digits after it into out[n].  -EACCES and *why (static text) if there
 * is no such URI, more than one, or it is malformed.
 */
static int cert_uri_hex(X509 *x, const char *prefix, uint8_t *out, size_t n, const char **why)
{
	GENERAL_NAMES *names;
	const unsigned char *found = NULL;
	size_t plen = strlen(prefix), flen = 0;
	int crit = 0, count = 0, i;

	*why = NULL;
	names = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	if (!names) {
		*why = crit == -1   ? "certificate has no subjectAltName"
		       : crit == -2 ? "certificate has more than one subjectAltName extension"
				    : "certificate's subjectAltName cannot be decoded";
		return -EACCES;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const unsigned char *data;
		int len;

		if (gn->type != GEN_URI)
			continue;
		data = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
		if (len < 0 || (size_t)len < plen || memcmp(data, prefix, plen))
			continue;
		count++;
		found = data + plen;
		flen = (size_t)len - plen;
	}
	/* found points into names: parse before freeing them. */
	if (count == 0)
		*why = "certificate carries no ledgerfs id URI in its subjectAltName";
	else if (count > 1)
		*why = "certificate carries more than one ledgerfs id URI";
	else if (config_parse_hex((const char *)found, flen, out, n) < 0)
		*why = "certificate's ledgerfs id URI is malformed";
	GENERAL_NAMES_free(names);
	return count == 1 && *why == NULL ? 0 : -EACCES;
}

static int ca_cert_cluster_id(X509 *ca, const char *ca_dir, uint8_t cluster_id[16])
{
	const char *why;

	if (cert_uri_hex(ca, CLUSTER_URI_PREFIX, cluster_id, 16, &why) < 0) {
		log_err("%s/%s: not a ledgerfs cluster CA: %s", ca_dir, TLS_CA_CERT, why);
		return -EINVAL;
	}
	return 0;
}

int tls_ca_create(const char *dir, const uint8_t cluster_id[16])
{
	static const uint8_t zero[16];
	char hex[33], cn[64], uri[64];
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int r;

	if (!memcmp(cluster_id, zero, sizeof(zero))) {
		log_err("%s: the cluster id must not be zero", dir);
		return -EINVAL;
	}
	hex_format(cluster_id, 16, hex);
	snprintf(cn, sizeof(cn), "ledgerfs cluster CA %s", hex);
	snprintf(uri, sizeof(uri), "%s%s", CLUSTER_URI_PREFIX, hex);
	r = dir_prepare_empty(dir);
	if (r < 0)
		return r;
	key = EVP_EC_gen("P-256");
	if (!key) {
		log_ssl("%s: cannot generate the CA key", dir);
		return -EIO;
	}
	r = cert_make(key, NULL, NULL, cn, uri, 1, TLS_CA_DAYS, &cert);
	if (r < 0) {
		log_ssl("%s: cannot make the CA certificate", dir);
		goto out;
	}
	r = save_key(dir, TLS_CA_KEY, key);
	if (r < 0)
		goto out;
	r = save_cert(dir, TLS_CA_CERT, cert);
	if (r < 0)
		remove_partial(dir, TLS_CA_KEY);
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	return r;
}

int tls_ca_cluster_id(const char *ca_dir, uint8_t cluster_id[16])
{
	X509 *ca = NULL;
	int r;

	r = load_cert(ca_dir, TLS_CA_CERT, &ca);
	if (r == 0)
		r = ca_cert_cluster_id(ca, ca_dir, cluster_id);
	X509_free(ca);
	return r;
}

/* -EEXIST (logged) if dir/name exists: issuing never replaces a node's identity. */
static int check_absent(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;
	int r;

	if ((r = path_join(path, sizeof(path), dir, name)) < 0)
		return r;
	if (lstat(path, &st) == 0) {
		log_err("%s: already exists; refusing to replace a node's identity", path);
		return -EEXIST;
	}
	if (errno != ENOENT) {
		r = -errno;
		log_err("%s: %s", path, strerror(-r));
		return r;
	}
	return 0;
}

int tls_node_cert_issue(const char *ca_dir, const char *node_dir, const char *node_name,
			uint64_t node_id, const uint8_t cluster_id[16])
{
	char uri[64], want[33], have[33];
	uint8_t ca_cluster[16];
	EVP_PKEY *ca_key = NULL, *key = NULL;
	X509 *ca = NULL, *cert = NULL;
	int r;

	if (!config_name_valid(node_name)) {
		log_err("%s: invalid node name '%s' (1-63 of A-Z a-z 0-9 . _ -)", node_dir,
			node_name);
		return -EINVAL;
	}
	if (node_id == 0) {
		log_err("%s: node id 0 is not a node id", node_dir);
		return -EINVAL;
	}
	snprintf(uri, sizeof(uri), "%s%016" PRIx64, NODE_URI_PREFIX, node_id);
	r = load_cert(ca_dir, TLS_CA_CERT, &ca);
	if (r < 0)
		goto out;
	r = load_key(ca_dir, TLS_CA_KEY, &ca_key);
	if (r < 0)
		goto out;
	if (X509_check_private_key(ca, ca_key) != 1) {
		log_ssl("%s: %s does not belong to %s", ca_dir, TLS_CA_KEY, TLS_CA_CERT);
		r = -EINVAL;
		goto out;
	}
	r = ca_cert_cluster_id(ca, ca_dir, ca_cluster);
	if (r < 0)
		goto out;
	if (memcmp(ca_cluster, cluster_id, sizeof(ca_cluster))) {
		hex_format(ca_cluster, 16, have);
		hex_format(cluster_id, 16, want);
		log_err("%s: CA of cluster %s cannot certify node %s of cluster %s", ca_dir, have,
			node_name, want);
		r = -ESTALE;
		goto out;
	}
	if ((r = check_absent(node_dir, TLS_NODE_KEY)) < 0 ||
	    (r = check_absent(node_dir, TLS_NODE_CERT)) < 0 ||
	    (r = check_absent(node_dir, TLS_CA_CERT)) < 0)
		goto out;
	key = EVP_EC_gen("P-256");
	if (!key) {
		log_ssl("%s: cannot generate the node key", node_dir);
		r = -EIO;
		goto out;
	}
	r = cert_make(key, ca, ca_key, node_name, uri, 0, TLS_NODE_DAYS, &cert);
	if (r < 0) {
		log_ssl("%s: cannot make the node certificate", node_dir);
		goto out;
	}
	r = save_key(node_dir, TLS_NODE_KEY, key);
	if (r == 0)
		r = save_cert(node_dir, TLS_NODE_CERT, cert);
	if (r == 0)
		r = save_cert(node_dir, TLS_CA_CERT, ca);
	if (r < 0) {
		remove_partial(node_dir, TLS_CA_CERT);
		remove_partial(node_dir, TLS_NODE_CERT);
		remove_partial(node_dir, TLS_NODE_KEY);
	}
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	X509_free(ca);
	return r;
}

/* -errno (logged) unless path is readable: names the missing file before OpenSSL would. */
static int check_readable(const char *path)
{
	int r;

	if (access(path, R_OK) == 0)
		return 0;
	r = -errno;
	log_err("%s: %s", path, strerror(-r));
	return r;
}

int tls_ctx_new_paths(const char *cert_path, const char *key_path, const char *ca_path, int server,
		      SSL_CTX **out)
{
	SSL_CTX *ctx = NULL;
	int r;

	if ((r = check_readable(cert_path)) < 0 || (r = check_readable(key_path)) < 0 ||
	    (r = check_readable(ca_path)) < 0)
		return r;
	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		log_ssl("cannot make a TLS context");
		return -ENOMEM;
	}
	r = -EINVAL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)) {
		log_ssl("cannot require TLS 1.3");
		goto fail;
	}
	/*
	 * Links are long-lived: resumption would save little and would let a
	 * reconnect skip verifying a certificate that has since expired.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (server && !SSL_CTX_set_num_tickets(ctx, 0)) {
		log_ssl("cannot turn session tickets off");
		goto fail;
	}
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
		log_ssl("%s: cannot load the certificate", cert_path);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
		log_ssl("%s: cannot load the private key", key_path);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		log_ssl("%s does not belong to %s", key_path, cert_path);
		goto fail;
	}
	if (SSL_CTX_load_verify_file(ctx, ca_path) != 1) {
		log_ssl("%s: cannot load the cluster CA certificate", ca_path);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	/* The CA signs nodes directly (its pathlen is 0): depth 0 admits no intermediate CA. */
	SSL_CTX_set_verify_depth(ctx, 0);
	*out = ctx;
	return 0;
fail:
	SSL_CTX_free(ctx);
	return r;
}

int tls_ctx_new(const char *node_dir, int server, SSL_CTX **out)
{
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	int r;

	if ((r = path_join(cert, sizeof(cert), node_dir, TLS_NODE_CERT)) < 0 ||
	    (r = path_join(key, sizeof(key), node_dir, TLS_NODE_KEY)) < 0 ||
	    (r = path_join(ca, sizeof(ca), node_dir, TLS_CA_CERT)) < 0)
		return r;
	return tls_ctx_new_paths(cert, key, ca, server, out);
}

int tls_peer_node_id(SSL *ssl, uint64_t *id, const char **why)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	uint8_t b[8];
	uint64_t v = 0;
	int i, r;

	if (!peer) {
		*why = "peer presented no certificate";
		return -EACCES;
	}
	/* The handshake fails on a bad chain; this guards against a context set up otherwise. */
	if (SSL_get_verify_result(ssl) != X509_V_OK) {
		*why = "peer certificate was not verified";
		return -EACCES;
	}
	r = cert_uri_hex(peer, NODE_URI_PREFIX, b, sizeof(b), why);
	if (r < 0)
		return r;
	for (i = 0; i < 8; i++)
		v = v << 8 | b[i];
	*id = v;
	return 0;
}

int tls_peer_name(SSL *ssl, char *buf, size_t len)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	int n;

	if (!peer || SSL_get_verify_result(ssl) != X509_V_OK || len == 0)
		return -EACCES;
	n = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, buf, (int)len);
	if (n <= 0 || (size_t)n >= len || !config_name_valid(buf))
		return -EACCES;
	return 0;
}

int tls_check_member(const struct config *cfg, uint64_t id, const char **name)
{
	unsigned i;

	if (id == 0 || id == cfg->node_id)
		return -EACCES;
	for (i = 0; i < cfg->npeers && i < CONFIG_MAX_PEERS; i++) {
		if (cfg->peers[i].id == id) {
			*name = cfg->peers[i].name;
			return 0;
		}
	}
	return -EACCES;
}

void tls_error_text(const SSL *ssl, char *buf, size_t len)
{
	long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long e = ERR_get_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	char code[256];
	int n = 0;

	if (len == 0)
		goto out;
	buf[0] = '\0';
	if (verify != X509_V_OK)
		n = snprintf(buf, len, "certificate verify failed: %s",
			     X509_verify_cert_error_string(verify));
	if ((size_t)n >= len)
		goto out;
	if (e && !reason) {
		ERR_error_string_n(e, code, sizeof(code));
		reason = code;
	}
	if (reason)
		snprintf(buf + n, len - (size_t)n, "%s%s", n ? "; " : "", reason);
	else if (n == 0)
		snprintf(buf, len, "no TLS error recorded (connection closed or timed out)");
out:
	ERR_clear_error();
}
