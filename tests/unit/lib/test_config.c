/*
 * test_config.c - lib/config.c: loading a full file, defaults, every kind of
 * rejection with the line it names, and exact save/load round trips.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/config.h"

static char dir[] = "/tmp/test_config.XXXXXX";
static char conf[PATH_MAX];

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/%s", dir, CONFIG_FILE);
}

static void teardown(void)
{
	char tmp[PATH_MAX + 8];

	snprintf(tmp, sizeof(tmp), "%s.tmp", conf);
	unlink(tmp);
	unlink(conf);
	rmdir(dir);
}

TestSuite(config, .init = setup, .fini = teardown);

static void write_conf(const char *text)
{
	FILE *f = fopen(conf, "w");

	cr_assert_not_null(f);
	cr_assert_eq(fputs(text, f) >= 0, 1);
	cr_assert_eq(fclose(f), 0);
}

static char *read_conf(void)
{
	static char buf[16384];
	FILE *f = fopen(conf, "r");
	size_t n;

	cr_assert_not_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

#define NODE                                                                                       \
	"[node]\n"                                                                                 \
	"name = a\n"                                                                               \
	"id = 0123456789abcdef\n"                                                                  \
	"cluster = 00112233445566778899aabbccddeeff\n"

Test(config, loads_a_full_example)
{
	struct config cfg;
	char err[512] = "";

	write_conf("# a node\n"
		   "[node]\n"
		   "name = node-1.x_y\n"
		   "id = 0123456789ABCDEF   ; upper case is fine\n"
		   "cluster = 00112233445566778899aabbccddeeff\n"
		   "\n"
		   "[replication]\n"
		   "listen = 127.0.0.1:7001\n"
		   "batch_events = 1\n"
		   "batch_bytes = 4096\n"
		   "batch_ms = 60000\n"
		   "sync_peers = 2\n"
		   "sync_timeout = 250\n"
		   "sync_degrade = yes\n"
		   "\n"
		   "[journal]\n"
		   "retain_bytes = 1G\n"
		   "retain_age = 90m\n"
		   "\n"
		   "[peer b]\n"
		   "address = [::1]:7002\n"
		   "id = fedcba9876543210\n"
		   "[peer c]\n"
		   "address = host.example:65535\n");
	cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), 0, "%s", err);
	cr_expect_str_eq(cfg.name, "node-1.x_y");
	cr_expect_eq(cfg.node_id, 0x0123456789abcdefULL);
	cr_expect_eq(cfg.cluster_id[0], 0x00);
	cr_expect_eq(cfg.cluster_id[15], 0xff);
	cr_expect_str_eq(cfg.listen, "127.0.0.1:7001");
	cr_expect_eq(cfg.batch_events, 1);
	cr_expect_eq(cfg.batch_bytes, 4096);
	cr_expect_eq(cfg.batch_ms, 60000);
	cr_expect_eq(cfg.sync_peers, 2);
	cr_expect_eq(cfg.sync_timeout_ms, 250);
	cr_expect(cfg.sync_degrade);
	cr_expect_eq(cfg.retain_bytes, 1ull << 30);
	cr_expect_eq(cfg.retain_age_sec, 90 * 60);
	cr_assert_eq(cfg.npeers, 2);
	cr_expect_str_eq(cfg.peers[0].name, "b");
	cr_expect_str_eq(cfg.peers[0].address, "[::1]:7002");
	cr_expect_eq(cfg.peers[0].id, 0xfedcba9876543210ULL);
	cr_expect_str_eq(cfg.peers[1].name, "c");
	cr_expect_str_eq(cfg.peers[1].address, "host.example:65535");
	cr_expect_eq(cfg.peers[1].id, 0);
}

Test(config, missing_optional_keys_take_defaults)
{
	struct config cfg, def;
	char err[512] = "";

	write_conf(NODE);
	cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), 0, "%s", err);
	config_defaults(&def);
	cr_expect_eq(cfg.batch_events, 256);
	cr_expect_eq(cfg.batch_bytes, 1048576);
	cr_expect_eq(cfg.batch_ms, 5);
	cr_expect_eq(cfg.sync_peers, 0);
	cr_expect_eq(cfg.sync_timeout_ms, 5000);
	cr_expect_not(cfg.sync_degrade);
	cr_expect_eq(cfg.retain_bytes, 0, "the bound is picked from the filesystem");
	cr_expect_eq(cfg.retain_age_sec, 86400, "a day");
	cr_expect_eq(cfg.batch_events, def.batch_events);
	cr_expect_str_empty(cfg.listen);
	cr_expect_eq(cfg.npeers, 0);
}

Test(config, the_default_bound_is_a_share_of_the_filesystem_capped)
{
	struct config cfg;
	uint64_t gib = 1ull << 30;

	config_defaults(&cfg);
	cr_expect_eq(config_retain_bound(&cfg, 10 * gib), 10 * gib / 100 * 5, "5%% of 10 GiB");
	cr_expect_eq(config_retain_bound(&cfg, 21 * gib), gib, "5%% of 21 GiB is over the cap");
	cr_expect_eq(config_retain_bound(&cfg, 4000 * gib), gib, "capped at 1 GiB");
	cr_expect_eq(config_retain_bound(&cfg, 0), gib, "filesystem size unknown: the cap");
	cr_expect_eq(config_retain_bound(&cfg, 100), 5);
	cfg.retain_bytes = 2 << 20;
	cr_expect_eq(config_retain_bound(&cfg, 4000 * gib), 2 << 20, "retain_bytes set");
	cr_expect_eq(config_retain_bound(&cfg, 0), 2 << 20);
}

Test(config, missing_file_is_enoent_naming_the_path)
{
	struct config cfg;
	char err[512] = "";

	cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), -ENOENT);
	cr_expect_not_null(strstr(err, conf), "%s", err);
}

struct rejection {
	const char *text;
	const char *message; /* expected after "PATH" */
};

static const struct rejection rejections[] = {
    {NODE "[nodes]\nx = 1\n", ":5: [nodes]: unknown section"},
    {NODE "[archive]\nrepository = relative/path\n",
     ":6: [archive] repository: invalid path \"relative/path\" (an absolute path"},
    {NODE "[archive]\nrepo = /x\n", ":6: [archive] repo: unknown key"},
    {NODE "[archive]\n[archive]\n", ":6: [archive]: section appears twice"},
    {NODE "[node2]\n", ":5: [node2]: unknown section"},
    {NODE "nmae = b\n", ":5: [node] nmae: unknown key"},
    {NODE "[replication]\nlisten_addr = 1.2.3.4:5\n", ":6: [replication] listen_addr: unknown key"},
    {NODE "[replication]\nbatch_events = 12x\n",
     ":6: [replication] batch_events: \"12x\" is not a decimal number"},
    {NODE "[replication]\nbatch_events = -1\n", ":6: [replication] batch_events: \"-1\" is not"},
    {NODE "[replication]\nbatch_events = \n", ":6: [replication] batch_events: \"\" is not"},
    {NODE "[replication]\nbatch_events = 0x10\n",
     ":6: [replication] batch_events: \"0x10\" is not"},
    {NODE "[replication]\nbatch_events = 0\n",
     ":6: [replication] batch_events: 0 is out of range (1 to 4294967295)"},
    {NODE "[replication]\nbatch_bytes = 4294967296\n",
     ":6: [replication] batch_bytes: 4294967296 is out of range"},
    {NODE "[replication]\nbatch_bytes = 4095\n",
     ":6: [replication] batch_bytes: 4095 is out of range (4096 to"},
    {NODE "[replication]\nbatch_ms = 60001\n",
     ":6: [replication] batch_ms: 60001 is out of range (0 to 60000)"},
    {NODE "[replication]\nsync_peers = 33\n",
     ":6: [replication] sync_peers: 33 is out of range (0 to 32)"},
    {NODE "[replication]\nsync_timeout = 0\n",
     ":6: [replication] sync_timeout: 0 is out of range (1 to 3600000)"},
    {NODE "[replication]\nsync_timeout = 5s\n",
     ":6: [replication] sync_timeout: \"5s\" is not a decimal number"},
    {NODE "[replication]\nsync_degrade = true\n",
     ":6: [replication] sync_degrade: \"true\" is not yes or no"},
    {NODE "[replication]\nsync_degrade = Yes\n", ":6: [replication] sync_degrade: \"Yes\" is not"},
    {NODE "[journal]\nretain_bytes = 1g\n",
     ":6: [journal] retain_bytes: \"1g\" is not a size (a number of bytes, optionally followed "
     "by K, M, G or T)"},
    {NODE "[journal]\nretain_bytes = 1GB\n", ":6: [journal] retain_bytes: \"1GB\" is not a size"},
    {NODE "[journal]\nretain_bytes = G\n", ":6: [journal] retain_bytes: \"G\" is not a size"},
    {NODE "[journal]\nretain_bytes = -1\n", ":6: [journal] retain_bytes: \"-1\" is not a size"},
    {NODE "[journal]\nretain_bytes = 1 G\n", ":6: [journal] retain_bytes: \"1 G\" is not a size"},
    {NODE "[journal]\nretain_bytes = 16777216T\n",
     ":6: [journal] retain_bytes: 16777216T is out of range (0 to 18446744073709551615)"},
    {NODE "[journal]\nretain_bytes = 18446744073709551616\n",
     ":6: [journal] retain_bytes: 18446744073709551616 is out of range"},
    {NODE "[journal]\nretain_age = 1w\n",
     ":6: [journal] retain_age: \"1w\" is not a duration (seconds, optionally followed by s, m, "
     "h or d)"},
    {NODE "[journal]\nretain_age = 1D\n", ":6: [journal] retain_age: \"1D\" is not a duration"},
    {NODE "[journal]\nretain_age = 36501d\n",
     ":6: [journal] retain_age: 36501d is out of range (0 to 3153600000 seconds)"},
    {NODE "[journal]\nretain = 1\n", ":6: [journal] retain: unknown key"},
    {NODE "[journal]\nbatch_ms = 1\n", ":6: [journal] batch_ms: unknown key"},
    {NODE "[journal]\n[journal]\n", ":6: [journal]: section appears twice"},
    {NODE "[journal]\nretain_age = 1d\nretain_age = 2d\n",
     ":7: [journal] retain_age: duplicate key"},
    {"[node]\nname = a\nid = 0123456789abcde\n", ":3: [node] id: invalid id \"0123456789abcde\""},
    {"[node]\nname = a\nid = 0123456789abcdeg\n", ":3: [node] id: invalid id"},
    {"[node]\nname = a\nid = 0000000000000000\n", ":3: [node] id: invalid id"},
    {"[node]\ncluster = 00112233\n", ":2: [node] cluster: invalid cluster id"},
    {"[node]\ncluster = 00000000000000000000000000000000\n",
     ":2: [node] cluster: invalid cluster id"},
    {"[node]\nname = a/b\n", ":2: [node] name: invalid name \"a/b\""},
    {"[node]\nname = ..\n", ":2: [node] name: invalid name"},
    {"[node]\nname = 0123456789012345678901234567890123456789012345678901234567890123\n",
     ":2: [node] name: invalid name"},
    {"[node]\nname = \n", ":2: [node] name: invalid name"},
    {NODE "[peer b c]\naddress = h:1\n", ":5: [peer b c]: invalid peer name"},
    {NODE "[peer ]\naddress = h:1\n", ":5: [peer ]: invalid peer name"},
    {NODE "[peer b]\naddress = h:1\n[peer b]\naddress = h:2\n",
     ":7: [peer b]: duplicate peer (first at line 5)"},
    {NODE "[peer b]\naddress = h\n", ":6: [peer b] address: invalid address \"h\""},
    {NODE "[peer b]\naddress = h:0\n", ":6: [peer b] address: invalid address"},
    {NODE "[peer b]\naddress = h:65536\n", ":6: [peer b] address: invalid address"},
    {NODE "[peer b]\naddress = :7\n", ":6: [peer b] address: invalid address"},
    {NODE "[peer b]\naddress = ::1:7\n", ":6: [peer b] address: invalid address"},
    {NODE "[peer b]\nid = 1111111111111111\n", ":5: [peer b] address: missing (required)"},
    {NODE "[peer b]\n", ":5: [peer b] address: missing (required)"},
    {NODE "[peer a]\naddress = h:1\n", ":5: [peer a]: a peer cannot have this node's name"},
    {NODE "[peer b]\naddress = h:1\nid = 0123456789abcdef\n",
     ":5: [peer b] id: this node's own id"},
    {NODE "[peer b]\naddress = h:1\nid = 1111111111111111\n[peer c]\naddress = h:2\nid = "
	  "1111111111111111\n",
     ":8: [peer c] id: same id as peer b"},
    {NODE "name = b\n", ":5: [node] name: duplicate key"},
    {NODE "[node]\n", ":5: [node]: section appears twice"},
    {"name = a\n" NODE, ":1: name: key outside any [section]"},
    {NODE "garbage\n", ":5: syntax error"},
    {NODE "garbage\nnmae = 1\n", ":5: syntax error"},
    {NODE "[replication\n", ":5: section header without ']'"},
    {NODE "[replication] x\n", ":5: text after the section header"},
    {NODE "  batch_ms = 1\n", ":5: indented line"},
    {"[node]\nname = a\n", ": [node] id: missing (required)"},
    {"[node]\nid = 0123456789abcdef\ncluster = 00112233445566778899aabbccddeeff\n",
     ": [node] name: missing (required)"},
    {"", ": [node] name: missing (required)"},
};

Test(config, rejects_bad_files_naming_line_and_key)
{
	size_t i;

	for (i = 0; i < sizeof(rejections) / sizeof(rejections[0]); i++) {
		struct config cfg;
		char err[512] = "", want[PATH_MAX + 256];

		write_conf(rejections[i].text);
		cr_expect_eq(config_load(conf, &cfg, err, sizeof(err)), -EINVAL, "case %zu: %s", i,
			     err);
		snprintf(want, sizeof(want), "%s%s", conf, rejections[i].message);
		cr_expect_eq(strncmp(err, want, strlen(want)), 0, "case %zu:\n got %s\nwant %s", i,
			     err, want);
	}
}

Test(config, rejects_too_many_peers)
{
	char text[8192], err[512] = "", want[PATH_MAX + 64];
	size_t len;
	struct config cfg;
	int i;

	len = (size_t)snprintf(text, sizeof(text), "%s", NODE);
	for (i = 0; i <= CONFIG_MAX_PEERS; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
					"[peer p%d]\naddress = h:%d\n", i, i + 1);
	write_conf(text);
	cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), -EINVAL);
	/* Four header lines, then two lines per peer: peer 32 starts at line 69. */
	snprintf(want, sizeof(want), "%s:69: [peer p32]: too many peers (at most 32)", conf);
	cr_expect_str_eq(err, want);
}

Test(config, rejects_lines_too_long_for_the_parser)
{
	char text[1024], err[512] = "", want[PATH_MAX + 64];
	struct config cfg;
	char host[300];

	memset(host, 'h', 250);
	host[250] = '\0';
	snprintf(text, sizeof(text), NODE "[peer b]\naddress = %s:1\n", host);
	write_conf(text);
	cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:6: line longer than", conf);
	cr_expect_eq(strncmp(err, want, strlen(want)), 0, "%s", err);
}

Test(config, accepts_long_peer_names_and_crlf)
{
	char text[1024], err[512] = "";
	struct config cfg;
	const char *name = "p23456789012345678901234567890123456789012345678901234567890123";

	snprintf(text, sizeof(text), NODE "[peer %s]\r\naddress = h:1\r\n", name);
	write_conf(text);
	cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.npeers, 1);
	cr_expect_str_eq(cfg.peers[0].name, name);
	cr_expect_str_eq(cfg.peers[0].address, "h:1");
}

static void full_config(struct config *cfg)
{
	int i;

	config_defaults(cfg);
	strcpy(cfg->name, "alpha");
	cfg->node_id = 0x8000000000000001ULL;
	for (i = 0; i < 16; i++)
		cfg->cluster_id[i] = (uint8_t)(i * 17 + 1);
	strcpy(cfg->listen, "[2001:db8::1]:7001");
	cfg->batch_events = 4294967295u;
	cfg->batch_bytes = 4096;
	cfg->batch_ms = 0;
	cfg->sync_peers = 32;
	cfg->sync_timeout_ms = 3600000;
	cfg->sync_degrade = true;
	cfg->retain_bytes = 1536;
	cfg->retain_age_sec = 3153600000u;
	strcpy(cfg->archive_repo, "/srv/backups/ledgerfs repo");
	for (i = 0; i < CONFIG_MAX_PEERS; i++) {
		snprintf(cfg->peers[i].name, CONFIG_NAME_MAX, "peer-%02d", i);
		snprintf(cfg->peers[i].address, CONFIG_ADDR_MAX, "10.0.0.%d:%d", i, 7000 + i);
		cfg->peers[i].id = i % 2 ? 0 : 0x1000 + (uint64_t)i;
	}
	cfg->npeers = CONFIG_MAX_PEERS;
}

Test(config, save_then_load_gives_the_same_config)
{
	struct config cfg, back;
	char err[512] = "";
	struct stat st;
	char tmp[PATH_MAX + 8];

	full_config(&cfg);
	cr_assert_eq(config_save(conf, &cfg), 0);
	cr_assert_eq(config_load(conf, &back, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(memcmp(&cfg, &back, sizeof(cfg)), 0);
	snprintf(tmp, sizeof(tmp), "%s.tmp", conf);
	cr_expect_eq(stat(tmp, &st), -1, "temporary file left behind");
}

Test(config, saved_file_reads_as_documented)
{
	struct config cfg;
	char err[512] = "";
	char first[16384];

	config_defaults(&cfg);
	strcpy(cfg.name, "a");
	cfg.node_id = 0x0123456789abcdefULL;
	cfg.cluster_id[15] = 1;
	strcpy(cfg.peers[0].name, "b");
	strcpy(cfg.peers[0].address, "127.0.0.1:7002");
	cfg.npeers = 1;
	cr_assert_eq(config_save(conf, &cfg), 0);
	strcpy(first, read_conf());
	cr_expect_eq(strncmp(first, "# ledgerfs node configuration", 29), 0, "%s", first);
	cr_expect_not_null(strstr(first, "[node]\n"
					 "name = a\n"
					 "id = 0123456789abcdef\n"
					 "cluster = 00000000000000000000000000000001\n"
					 "\n"
					 "[replication]\n"
					 "batch_events = 256\n"
					 "batch_bytes = 1048576\n"
					 "batch_ms = 5\n"
					 "sync_peers = 0\n"
					 "sync_timeout = 5000\n"
					 "sync_degrade = no\n"
					 "\n"
					 "[journal]\n"
					 "retain_bytes = 0\n"
					 "retain_age = 1d\n"
					 "retain_max_age = 0\n"
					 "checkpoint = 30\n"
					 "\n"
					 "[peer b]\n"
					 "address = 127.0.0.1:7002\n"),
			   "%s", first);
	/* Loading and saving again must not change a byte. */
	cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(config_save(conf, &cfg), 0);
	cr_expect_str_eq(read_conf(), first);
}

Test(config, parses_sizes_and_durations)
{
	static const struct {
		const char *bytes;
		uint64_t bytes_want;
		const char *age;
		uint64_t age_want;
	} cases[] = {
	    {"0", 0, "0", 0},
	    {"5", 5, "30", 30},
	    {"1K", 1024, "30s", 30},
	    {"3M", 3ull << 20, "2m", 120},
	    {"1G", 1ull << 30, "3h", 10800},
	    {"16T", 16ull << 40, "1d", 86400},
	    {"16777215T", 16777215ull << 40, "36500d", 3153600000u},
	    {"18446744073709551615", UINT64_MAX, "0d", 0},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config cfg;
		char text[512], err[512] = "";

		snprintf(text, sizeof(text), NODE "[journal]\nretain_bytes = %s\nretain_age = %s\n",
			 cases[i].bytes, cases[i].age);
		write_conf(text);
		cr_assert_eq(config_load(conf, &cfg, err, sizeof(err)), 0, "case %zu: %s", i, err);
		cr_expect_eq(cfg.retain_bytes, cases[i].bytes_want, "case %zu", i);
		cr_expect_eq(cfg.retain_age_sec, cases[i].age_want, "case %zu", i);
	}
}

Test(config, sizes_and_durations_round_trip_in_their_largest_exact_unit)
{
	static const struct {
		uint64_t bytes;
		const char *bytes_text;
		uint64_t age;
		const char *age_text;
	} cases[] = {
	    {0, "retain_bytes = 0\n", 0, "retain_age = 0\n"},
	    {1023, "retain_bytes = 1023\n", 59, "retain_age = 59\n"},
	    {1536, "retain_bytes = 1536\n", 90, "retain_age = 90\n"},
	    {3 << 20, "retain_bytes = 3M\n", 120, "retain_age = 2m\n"},
	    {1ull << 30, "retain_bytes = 1G\n", 7200, "retain_age = 2h\n"},
	    {1025ull << 30, "retain_bytes = 1025G\n", 86401, "retain_age = 86401\n"},
	    {UINT64_MAX, "retain_bytes = 18446744073709551615\n", 3153600000u,
	     "retain_age = 36500d\n"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config cfg, back;
		char err[512] = "";
		const char *text;

		full_config(&cfg);
		cfg.retain_bytes = cases[i].bytes;
		cfg.retain_age_sec = cases[i].age;
		cr_assert_eq(config_save(conf, &cfg), 0, "case %zu", i);
		text = read_conf();
		cr_expect_not_null(strstr(text, cases[i].bytes_text), "case %zu:\n%s", i, text);
		cr_expect_not_null(strstr(text, cases[i].age_text), "case %zu:\n%s", i, text);
		cr_assert_eq(config_load(conf, &back, err, sizeof(err)), 0, "case %zu: %s", i, err);
		cr_expect_eq(memcmp(&cfg, &back, sizeof(cfg)), 0, "case %zu", i);
	}
}

Test(config, save_refuses_what_would_not_load_back)
{
	struct config cfg;
	struct stat st;

	full_config(&cfg);
	strcpy(cfg.name, "bad name");
	cr_expect_eq(config_save(conf, &cfg), -EINVAL);
	full_config(&cfg);
	strcpy(cfg.peers[3].address, "no-port");
	cr_expect_eq(config_save(conf, &cfg), -EINVAL);
	full_config(&cfg);
	cfg.batch_bytes = 1;
	cr_expect_eq(config_save(conf, &cfg), -EINVAL);
	full_config(&cfg);
	cfg.node_id = 0;
	cr_expect_eq(config_save(conf, &cfg), -EINVAL);
	full_config(&cfg);
	cfg.sync_timeout_ms = 0;
	cr_expect_eq(config_save(conf, &cfg), -EINVAL);
	full_config(&cfg);
	cfg.retain_age_sec = 3153600001u;
	cr_expect_eq(config_save(conf, &cfg), -EINVAL);
	full_config(&cfg);
	cfg.npeers = CONFIG_MAX_PEERS + 1;
	cr_expect_eq(config_save(conf, &cfg), -EINVAL);
	cr_expect_eq(stat(conf, &st), -1, "nothing may be written");
}

Test(config, save_replaces_an_existing_file)
{
	struct config cfg, back;
	char err[512] = "";

	write_conf("old contents\n");
	full_config(&cfg);
	cr_assert_eq(config_save(conf, &cfg), 0);
	cr_assert_eq(config_load(conf, &back, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(memcmp(&cfg, &back, sizeof(cfg)), 0);
}

Test(config, parses_ids)
{
	uint64_t id = 7;

	cr_expect_eq(config_parse_id("0123456789abcdef", &id), 0);
	cr_expect_eq(id, 0x0123456789abcdefULL);
	cr_expect_eq(config_parse_id("FFFFFFFFFFFFFFFF", &id), 0);
	cr_expect_eq(id, UINT64_MAX);
	cr_expect_eq(config_parse_id("0000000000000000", &id), -EINVAL);
	cr_expect_eq(config_parse_id("123", &id), -EINVAL);
	cr_expect_eq(config_parse_id("0123456789abcdef0", &id), -EINVAL);
	cr_expect_eq(config_parse_id(" 123456789abcdef", &id), -EINVAL);
	cr_expect_eq(config_parse_id("", &id), -EINVAL);
	cr_expect_eq(id, UINT64_MAX, "failed parses leave the id alone");
}

Test(config, validates_names)
{
	char longest[CONFIG_NAME_MAX], toolong[CONFIG_NAME_MAX + 1];

	memset(longest, 'x', sizeof(longest) - 1);
	longest[sizeof(longest) - 1] = '\0';
	cr_expect(config_name_valid("a"));
	cr_expect(config_name_valid("Node_1.example-2"));
	cr_expect(config_name_valid(longest));
	cr_expect(config_name_valid("..."));
	cr_expect_not(config_name_valid(""));
	cr_expect_not(config_name_valid("."));
	cr_expect_not(config_name_valid(".."));
	cr_expect_not(config_name_valid("a b"));
	cr_expect_not(config_name_valid("a/b"));
	cr_expect_not(config_name_valid("a\n"));
	cr_expect_not(config_name_valid("\xc3\xa9"));
	memset(toolong, 'x', sizeof(toolong) - 1);
	toolong[sizeof(toolong) - 1] = '\0';
	cr_expect_not(config_name_valid(toolong));
}
