/*
 * test_snapshot.c - resync/snapshot.c: xattr blobs survive a round trip and
 * hostile ones are refused with a reason; entries are read as they are;
 * staged objects are exactly the entries they were made from (holes,
 * owner, mode, xattrs, mtime); plans survive disk and damaged ones are
 * refused; an install makes the store equal to the source tree, changes
 * nothing when run again, and gives the same store after a crash at any
 * step; removal never follows a symlink out of the tree.  Runs as root
 * (chown, mknod, trusted.* xattrs).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/crc32c.h"
#include "resync/snapshot.h"
#include "store/store.h"

static char base[PATH_MAX], node_dir[PATH_MAX], store[PATH_MAX], src[PATH_MAX], outside[PATH_MAX];

static void remove_tree(const char *path)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", path);
	cr_expect_eq(system(cmd), 0);
}

static void setup(void)
{
	strcpy(base, "/tmp/test_snapshot.XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	snprintf(node_dir, sizeof(node_dir), "%s/node", base);
	snprintf(store, sizeof(store), "%s/node/store", base);
	snprintf(src, sizeof(src), "%s/src", base);
	snprintf(outside, sizeof(outside), "%s/outside", base);
	cr_assert_eq(mkdir(node_dir, 0755), 0);
	umask(022);
}

static void teardown(void)
{
	remove_tree(base);
}

TestSuite(snapshot, .init = setup, .fini = teardown);

/* ---- building trees ---- */

static void at(char *out, const char *root, const char *rel)
{
	cr_assert_lt(snprintf(out, PATH_MAX, "%s/%s", root, rel), PATH_MAX);
}

static void put_file(const char *root, const char *rel, const char *data)
{
	char p[PATH_MAX];
	int fd;

	at(p, root, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
	cr_assert_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	cr_assert_eq(close(fd), 0);
}

/* A file of size bytes, holes but for data at each offset in offs. */
static void put_sparse(const char *root, const char *rel, off_t size, const off_t *offs, int n,
		       const char *data)
{
	char p[PATH_MAX];
	int fd;

	at(p, root, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, size), 0);
	for (int i = 0; i < n; i++)
		cr_assert_eq(pwrite(fd, data, strlen(data), offs[i]), (ssize_t)strlen(data));
	cr_assert_eq(close(fd), 0);
}

static void make_dir(const char *root, const char *rel, mode_t mode)
{
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(mkdir(p, mode), 0, "%s: %s", p, strerror(errno));
	cr_assert_eq(chmod(p, mode), 0);
}

static void make_symlink(const char *root, const char *rel, const char *target)
{
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(symlink(target, p), 0, "%s: %s", p, strerror(errno));
}

static void make_node(const char *root, const char *rel, mode_t mode, dev_t dev)
{
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(mknod(p, mode, dev), 0, "%s: %s", p, strerror(errno));
	cr_assert_eq(chmod(p, mode & 07777), 0);
}

static void make_hardlink(const char *root, const char *rel, const char *to)
{
	char a[PATH_MAX], b[PATH_MAX];

	at(a, root, to);
	at(b, root, rel);
	cr_assert_eq(link(a, b), 0, "%s: %s", b, strerror(errno));
}

static void xset(const char *root, const char *rel, const char *name, const void *v, size_t n)
{
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(lsetxattr(p, name, v, n, 0), 0, "%s %s: %s", p, name, strerror(errno));
}

static void xset_str(const char *root, const char *rel, const char *name, const char *v)
{
	xset(root, rel, name, v, strlen(v));
}

static void set_pair(const char *root, const char *rel, const char *name, uint64_t a, uint64_t b)
{
	uint8_t v[16];

	put_le64(v, a);
	put_le64(v + 8, b);
	xset(root, rel, name, v, sizeof(v));
}

static void set_ids(const char *root, const char *rel, uint64_t fo, uint64_t fc, uint64_t vo,
		    uint64_t vs)
{
	set_pair(root, rel, STORE_XATTR_FID, fo, fc);
	set_pair(root, rel, STORE_XATTR_VER, vo, vs);
}

static void own(const char *root, const char *rel, uid_t uid, gid_t gid)
{
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(lchown(p, uid, gid), 0);
}

static void set_mode(const char *root, const char *rel, mode_t mode)
{
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(chmod(p, mode), 0);
}

static void set_mtime(const char *root, const char *rel, time_t sec, long nsec)
{
	struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void lstat_at(const char *root, const char *rel, struct stat *st)
{
	char p[PATH_MAX];

	at(p, root, rel);
	cr_assert_eq(lstat(p, st), 0, "%s: %s", p, strerror(errno));
}

static int exists(const char *root, const char *rel)
{
	struct stat st;
	char p[PATH_MAX];

	at(p, root, rel);
	return lstat(p, &st) == 0;
}

/* An empty staging area, as snap_stage_open() leaves it. */
static void make_stage_dirs(void)
{
	struct snap_stage *s;

	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	snap_stage_close(s);
}

static int open_root(const char *dir)
{
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);

	cr_assert_geq(fd, 0, "%s: %s", dir, strerror(errno));
	return fd;
}

static void digest_for(const char *s, uint8_t d[SNAP_DIGEST_LEN])
{
	for (int i = 0; i < SNAP_DIGEST_LEN / 4; i++)
		put_le32(d + 4 * i, crc32c((uint32_t)i, s, strlen(s)));
}

static void obj_path(char *out, const uint8_t d[SNAP_DIGEST_LEN])
{
	char rel[sizeof("snap/obj/") + 2 * SNAP_DIGEST_LEN] = "snap/obj/";

	for (int i = 0; i < SNAP_DIGEST_LEN; i++)
		sprintf(rel + strlen(rel), "%02x", d[i]);
	at(out, node_dir, rel);
}

/* ---- describing trees: one sorted line per entry, everything replication carries ---- */

static int covered(const char *name)
{
	return strncmp(name, STORE_XATTR_PREFIX, strlen(STORE_XATTR_PREFIX)) != 0 ||
	       !strcmp(name, STORE_XATTR_FID) || !strcmp(name, STORE_XATTR_VER);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void dump_xattrs(FILE *f, const char *path)
{
	char names[8192], *v[128], val[4096];
	ssize_t len = llistxattr(path, names, sizeof(names)), n;
	size_t count = 0;

	cr_assert_geq(len, 0);
	for (char *p = names; p < names + len; p += strlen(p) + 1)
		if (covered(p))
			v[count++] = p;
	qsort(v, count, sizeof(char *), cmp_str);
	for (size_t i = 0; i < count; i++) {
		n = lgetxattr(path, v[i], val, sizeof(val));
		cr_assert_geq(n, 0);
		fprintf(f, " %s=", v[i]);
		for (ssize_t j = 0; j < n; j++)
			fprintf(f, "%02x", (uint8_t)val[j]);
	}
}

static uint32_t file_crc(const char *path)
{
	char buf[65536];
	uint32_t crc = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY);

	cr_assert_geq(fd, 0);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		crc = crc32c(crc, buf, (size_t)n);
	cr_assert_eq(n, 0);
	close(fd);
	return crc;
}

static char *dump_lines[1024];
static size_t dump_n;
static size_t dump_root_len;

static int dump_one(const char *fpath, const struct stat *st, int flag, struct FTW *ftw)
{
	const char *rel = fpath[dump_root_len] ? fpath + dump_root_len + 1 : ".";
	char target[PATH_MAX];
	size_t size;
	ssize_t n;
	FILE *f;

	cr_assert_lt(dump_n, sizeof(dump_lines) / sizeof(dump_lines[0]));
	f = open_memstream(&dump_lines[dump_n], &size);
	cr_assert_not_null(f);
	fprintf(f, "%s %06o %u:%u", rel, (unsigned)st->st_mode, st->st_uid, st->st_gid);
	if (S_ISREG(st->st_mode))
		fprintf(f, " size=%lld mtime=%lld.%09ld crc=%08x nlink=%lu", (long long)st->st_size,
			(long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, file_crc(fpath),
			(unsigned long)st->st_nlink);
	if (S_ISLNK(st->st_mode)) {
		n = readlink(fpath, target, sizeof(target) - 1);
		cr_assert_gt(n, 0);
		target[n] = '\0';
		fprintf(f, " -> %s", target);
	}
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
		fprintf(f, " rdev=%u,%u", major(st->st_rdev), minor(st->st_rdev));
	dump_xattrs(f, fpath);
	cr_assert_eq(fclose(f), 0);
	dump_n++;
	return 0;
}

/* The tree at root as text (malloc'd); equal texts, equal trees as replication sees them. */
static char *tree_dump(const char *root)
{
	char *out = NULL;
	size_t size = 0;
	FILE *f;

	dump_n = 0;
	dump_root_len = strlen(root);
	cr_assert_eq(nftw(root, dump_one, 16, FTW_PHYS), 0);
	qsort(dump_lines, dump_n, sizeof(char *), cmp_str);
	f = open_memstream(&out, &size);
	for (size_t i = 0; i < dump_n; i++) {
		fprintf(f, "%s\n", dump_lines[i]);
		free(dump_lines[i]);
	}
	fclose(f);
	return out;
}

/* ---- the resync scenario: a peer's tree, an older local store, the plan between them ---- */

static const uint8_t SRC_STAMP[16] = "peer-node-stamp";
static const uint8_t LOCAL_STAMP[16] = "this-node-stamp";

static void make_outside(void)
{
	cr_assert_eq(mkdir(outside, 0755), 0);
	put_file(outside, "precious", "must survive");
}

static void make_src(void)
{
	static const off_t offs[] = {0, 600000, 3 * 1024 * 1024 - 5};

	cr_assert_eq(mkdir(src, 0755), 0);
	set_ids(src, ".", 0, 1, 7, 100);
	xset_str(src, ".", "user.rootattr", "r");
	xset(src, ".", STORE_XATTR_NODE, SRC_STAMP, 16);
	make_dir(src, "dir", 0750);
	own(src, "dir", 1000, 1000);
	set_ids(src, "dir", 7, 2, 7, 60);
	xset_str(src, "dir", "user.d", "dv");
	put_sparse(src, "dir/file", 3 * 1024 * 1024, offs, 3, "data!");
	own(src, "dir/file", 1001, 1002);
	set_mode(src, "dir/file", 04755);
	set_ids(src, "dir/file", 7, 3, 7, 50);
	xset_str(src, "dir/file", "user.a", "1");
	xset_str(src, "dir/file", "trusted.t", "x");
	set_mtime(src, "dir/file", 1600000000, 123456789);
	make_hardlink(src, "dir/link2", "dir/file");
	make_symlink(src, "sym", "dir/file");
	own(src, "sym", 1003, 1004);
	set_ids(src, "sym", 7, 4, 7, 61);
	xset_str(src, "sym", "trusted.s", "sv");
	make_node(src, "fifo", S_IFIFO | 0640, 0);
	set_ids(src, "fifo", 7, 5, 7, 62);
	make_node(src, "cdev", S_IFCHR | 0600, makedev(1, 3));
	set_ids(src, "cdev", 7, 6, 7, 63);
	make_dir(src, "was_file", 0700);
	set_ids(src, "was_file", 7, 7, 7, 64);
	put_file(src, "was_file/inner", "inner");
	set_ids(src, "was_file/inner", 7, 8, 7, 65);
	set_mtime(src, "was_file/inner", 1600000001, 0);
	make_dir(src, "was_sym", 0711);
	set_ids(src, "was_sym", 7, 9, 7, 66);
	put_file(src, "was_dir", "now a file");
	set_ids(src, "was_dir", 7, 10, 7, 67);
	set_mtime(src, "was_dir", 1600000002, 5);
	put_file(src, "same", "same on both");
	set_ids(src, "same", 7, 11, 7, 68);
	set_mtime(src, "same", 1600000003, 0);
}

static void make_local(void)
{
	char deep[PATH_MAX];

	cr_assert_eq(mkdir(store, 0700), 0);
	set_ids(store, ".", 0, 1, 7, 20);
	xset_str(store, ".", "user.stale", "s");
	xset(store, ".", STORE_XATTR_NODE, LOCAL_STAMP, 16);
	make_dir(store, "dir", 0777);
	set_ids(store, "dir", 7, 2, 7, 10);
	xset_str(store, "dir", "user.old", "o");
	put_file(store, "dir/file", "old contents");
	set_ids(store, "dir/file", 7, 3, 7, 11);
	put_file(store, "was_file", "a file for now");
	set_ids(store, "was_file", 3, 1, 3, 1);
	make_symlink(store, "was_sym", outside);
	make_dir(store, "was_dir", 0755);
	make_dir(store, "was_dir/a", 0755);
	make_dir(store, "was_dir/a/b", 0000);
	put_file(store, "was_dir/a/b/f", "x");
	put_file(store, "was_dir/a/g", "y");
	make_symlink(store, "was_dir/out", outside);
	strcpy(deep, "was_dir/a/deep");
	for (int i = 0; i < 40; i++) {
		make_dir(store, deep, 0755);
		strcat(deep, "/d");
	}
	put_file(store, "gone", "to be deleted");
	set_ids(store, "gone", 3, 9, 3, 9);
	make_dir(store, "gone_dir", 0755);
	set_ids(store, "gone_dir", 3, 12, 3, 12);
	make_symlink(store, "gone_dir/out", outside);
	put_file(store, "gone_dir/f", "f");
	put_file(store, "same", "same on both");
	set_ids(store, "same", 7, 11, 7, 68);
	set_mtime(store, "same", 1600000003, 0);
}

/* Stage src's entry rel, copying only the data that is not a hole. */
static void stage_from(struct snap_stage *s, const char *rel, uint8_t digest[SNAP_DIGEST_LEN])
{
	static char buf[65536], zero[65536];
	struct snap_meta m;
	struct snap_obj *o;
	const char *why = NULL;
	int root = open_root(src), fd;
	uint64_t off;
	ssize_t n;

	cr_assert_eq(snap_read_entry(root, rel, &m, &fd), 0, "%s", rel);
	digest_for(rel, digest);
	cr_assert_eq(snap_obj_begin(s, digest, &m, &o, &why), 0, "%s: %s", rel, why);
	for (off = 0; fd >= 0; off += (uint64_t)n) {
		n = pread(fd, buf, sizeof(buf), (off_t)off);
		cr_assert_geq(n, 0);
		if (n == 0)
			break;
		if (memcmp(buf, zero, (size_t)n))
			cr_assert_eq(snap_obj_write(o, off, buf, (size_t)n, &why), 0, "%s", why);
	}
	cr_assert_eq(snap_obj_commit(o, &why), 0, "%s: %s", rel, why);
	if (fd >= 0)
		close(fd);
	snap_meta_free(&m);
	close(root);
}

static void add_dir(struct snap_plan *p, const char *rel)
{
	struct snap_step st = {.op = SNAP_OP_DIR, .path = (char *)rel};
	struct snap_meta m;
	int root = open_root(src), fd;

	cr_assert_eq(snap_read_entry(root, rel, &m, &fd), 0);
	cr_assert_eq(fd, -1);
	st.mode = m.mode;
	st.uid = m.uid;
	st.gid = m.gid;
	st.xattrs = m.xattrs;
	st.xattrs_len = m.xattrs_len;
	cr_assert_eq(snap_plan_add(p, &st), 0);
	snap_meta_free(&m);
	close(root);
}

static void add_obj(struct snap_plan *p, struct snap_stage *s, const char *rel)
{
	struct snap_step st = {.op = SNAP_OP_OBJ, .path = (char *)rel};

	stage_from(s, rel, st.digest);
	cr_assert_eq(snap_plan_add(p, &st), 0);
}

static void add_delete(struct snap_plan *p, const char *rel, uint64_t origin, uint64_t counter)
{
	struct snap_step st = {.op = SNAP_OP_DELETE, .path = (char *)rel, .fid = {origin, counter}};

	cr_assert_eq(snap_plan_add(p, &st), 0);
}

static void add_link(struct snap_plan *p, const char *rel, const char *to)
{
	struct snap_step st = {.op = SNAP_OP_LINK, .path = (char *)rel, .link_to = (char *)to};

	cr_assert_eq(snap_plan_add(p, &st), 0);
}

/* Local store, staged objects and the plan that turns the store into src; every op is in it. */
static void make_scenario(struct snap_plan *p)
{
	struct snap_stage *s;

	make_local();
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	add_dir(p, ".");
	add_delete(p, "gone", 3, 9);
	add_delete(p, "gone_dir", 3, 12);
	add_dir(p, "dir");
	add_obj(p, s, "dir/file");
	add_link(p, "dir/link2", "dir/file");
	add_obj(p, s, "sym");
	add_obj(p, s, "fifo");
	add_obj(p, s, "cdev");
	add_dir(p, "was_file");
	add_obj(p, s, "was_file/inner");
	add_dir(p, "was_sym");
	add_obj(p, s, "was_dir");
	cr_assert_eq(snap_plan_save(s, p), 0);
	snap_stage_close(s);
}

static size_t touched_count;

static void count_touched(void *arg, const char *path)
{
	touched_count++;
}

static void install(const struct snap_plan *p)
{
	const char *why = NULL, *path = NULL;
	int root = open_root(store);
	int r = snap_install(node_dir, root, p, count_touched, NULL, &why, &path);

	cr_assert_eq(r, 0, "install: %s: %s (%s)", path, why, strerror(-r));
	close(root);
}

static void assert_stamp(const char *root, const uint8_t want[16])
{
	uint8_t got[16];

	cr_assert_eq(getxattr(root, STORE_XATTR_NODE, got, sizeof(got)), 16);
	cr_assert_arr_eq(got, want, 16);
}

/* ---- xattr blobs ---- */

/* A blob of n (name, value) pairs in the order given, for hostile cases. */
static size_t make_blob(uint8_t *out, const char *const *kv, int n)
{
	size_t off = 2;

	put_le16(out, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		size_t nl = strlen(kv[2 * i]), vl = strlen(kv[2 * i + 1]);

		out[off] = (uint8_t)nl;
		memcpy(out + off + 1, kv[2 * i], nl);
		put_le32(out + off + 1 + nl, (uint32_t)vl);
		memcpy(out + off + 5 + nl, kv[2 * i + 1], vl);
		off += 5 + nl + vl;
	}
	return off;
}

Test(snapshot, xattr_blob_round_trip_keeps_carried_xattrs_sorted)
{
	static const char *const want[] = {"trusted.ledgerfs.fid",
					   "FID-sixteen-byte",
					   "trusted.ledgerfs.ver",
					   "VER-sixteen-byte",
					   "trusted.z",
					   "zz",
					   "user.a",
					   "",
					   "user.b",
					   "bee"};
	uint8_t expect[256], *blob;
	struct fid fid;
	struct evid ver;
	const char *why = NULL;
	size_t len, elen;
	int fd;

	cr_assert_eq(mkdir(src, 0755), 0);
	put_file(src, "f", "x");
	xset_str(src, "f", "user.b", "bee");
	xset_str(src, "f", "user.a", "");
	xset_str(src, "f", "trusted.z", "zz");
	xset_str(src, "f", STORE_XATTR_FID, "FID-sixteen-byte");
	xset_str(src, "f", STORE_XATTR_VER, "VER-sixteen-byte");
	xset_str(src, "f", STORE_XATTR_NODE, "not carried");
	xset_str(src, "f", "trusted.ledgerfs.other", "not carried");
	elen = make_blob(expect, want, 5);

	fd = open(strcat(strcpy((char[PATH_MAX]){0}, src), "/f"), O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(snap_xattrs_read(fd, 0, &blob, &len), 0);
	cr_assert_eq(len, elen);
	cr_assert_arr_eq(blob, expect, elen);
	cr_assert_eq(snap_xattrs_check(blob, len, &fid, &ver, &why), 0, "%s", why);
	cr_assert_eq(fid.origin, get_le64((const uint8_t *)"FID-sixteen-byte"));
	cr_assert_eq(fid.counter, get_le64((const uint8_t *)"FID-sixteen-byte" + 8));
	cr_assert_eq(ver.origin, get_le64((const uint8_t *)"VER-sixteen-byte"));
	cr_assert_eq(ver.seq, get_le64((const uint8_t *)"VER-sixteen-byte" + 8));
	free(blob);
	close(fd);

	/* Through an O_PATH descriptor the same, and nothing at all is a NULL blob. */
	fd = open(src, O_PATH | O_DIRECTORY);
	cr_assert_eq(snap_xattrs_read(fd, 1, &blob, &len), 0);
	cr_assert_null(blob);
	cr_assert_eq(len, 0);
	cr_assert_eq(snap_xattrs_check(NULL, 0, &fid, &ver, &why), 0);
	cr_assert(fid.origin == 0 && fid.counter == 0 && ver.origin == 0 && ver.seq == 0);
	close(fd);
}

Test(snapshot, xattr_blob_check_refuses_each_malformation)
{
	static const char *const unsorted[] = {"user.b", "1", "user.a", "2"};
	static const char *const dup[] = {"user.a", "1", "user.a", "2"};
	static const char *const node[] = {"trusted.ledgerfs.node", "x"};
	static const char *const other[] = {"trusted.ledgerfs.zz", "x"};
	static const char *const good[] = {"user.a", "1", "user.ab", "2"};
	uint8_t b[512];
	const char *why;
	size_t len;

#define REFUSED(buf, n, text)                                                                      \
	do {                                                                                       \
		why = NULL;                                                                        \
		cr_assert_eq(snap_xattrs_check(buf, n, NULL, NULL, &why), -EBADMSG, "%s", text);   \
		cr_assert_not_null(why);                                                           \
		cr_assert_not_null(strstr(why, text), "%s: got '%s'", text, why);                  \
	} while (0)

	len = make_blob(b, good, 2);
	cr_assert_eq(snap_xattrs_check(b, len, NULL, NULL, &why), 0);
	/* Every proper prefix is truncated (or, for one byte, shorter than its count). */
	for (size_t cut = 1; cut < len; cut++)
		cr_assert_eq(snap_xattrs_check(b, cut, NULL, NULL, &why), -EBADMSG, "cut %zu", cut);
	REFUSED(b, 1, "shorter than its count");
	REFUSED(b, len - 1, "truncated");
	b[len] = 0;
	REFUSED(b, len + 1, "trailing bytes");
	put_le16(b, 3);
	REFUSED(b, len, "truncated");

	len = make_blob(b, unsorted, 2);
	REFUSED(b, len, "not sorted");
	len = make_blob(b, dup, 2);
	REFUSED(b, len, "not sorted");
	len = make_blob(b, node, 1);
	REFUSED(b, len, "node-own");
	len = make_blob(b, other, 1);
	REFUSED(b, len, "node-own");

	len = make_blob(b, good, 1);
	b[2 + 1 + 2] = '\0'; /* "us\0r.a" */
	REFUSED(b, len, "NUL in an xattr name");
	b[2] = 0;
	REFUSED(b, len, "empty xattr name");

	len = make_blob(b, good, 1);
	put_le32(b + 2 + 1 + 6, 65537);
	REFUSED(b, len, "too long");
	put_le32(b + 2 + 1 + 6, 2);
	REFUSED(b, len, "truncated");
#undef REFUSED
}

/* ---- reading entries ---- */

Test(snapshot, read_entry_gives_file_dir_symlink_fifo_with_xattrs)
{
	struct snap_meta m;
	char buf[64];
	int root, fd;

	cr_assert_eq(mkdir(src, 0755), 0);
	put_file(src, "f", "contents");
	own(src, "f", 1001, 1002);
	set_mode(src, "f", 02640);
	set_ids(src, "f", 5, 6, 5, 7);
	xset_str(src, "f", "user.x", "1");
	set_mtime(src, "f", 1500000000, 42);
	make_dir(src, "d", 0710);
	xset_str(src, "d", "user.d", "2");
	set_ids(src, "d", 5, 8, 5, 9);
	make_symlink(src, "d/l", "../f");
	xset_str(src, "d/l", "trusted.l", "3");
	make_node(src, "p", S_IFIFO | 0600, 0);
	xset_str(src, "p", "trusted.p", "4");
	root = open_root(src);

	cr_assert_eq(snap_read_entry(root, "f", &m, &fd), 0);
	cr_assert_eq(m.mode, S_IFREG | 02640);
	cr_assert(m.uid == 1001 && m.gid == 1002 && m.size == 8);
	cr_assert(m.mtime_sec == 1500000000 && m.mtime_nsec == 42);
	cr_assert(m.fid.origin == 5 && m.fid.counter == 6 && m.ver.origin == 5 && m.ver.seq == 7);
	cr_assert_null(m.target);
	cr_assert_not_null(memmem(m.xattrs, m.xattrs_len, "user.x", 6));
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, buf, sizeof(buf), 0), 8);
	cr_assert_arr_eq(buf, "contents", 8);
	close(fd);
	snap_meta_free(&m);

	cr_assert_eq(snap_read_entry(root, "d", &m, &fd), 0);
	cr_assert_eq(fd, -1);
	cr_assert(S_ISDIR(m.mode) && (m.mode & 07777) == 0710 && m.size == 0);
	cr_assert(m.fid.origin == 5 && m.fid.counter == 8);
	cr_assert_not_null(memmem(m.xattrs, m.xattrs_len, "user.d", 6));
	snap_meta_free(&m);

	cr_assert_eq(snap_read_entry(root, "d/l", &m, &fd), 0);
	cr_assert_eq(fd, -1);
	cr_assert(S_ISLNK(m.mode) && m.size == 4);
	cr_assert_str_eq(m.target, "../f");
	cr_assert_not_null(memmem(m.xattrs, m.xattrs_len, "trusted.l", 9));
	cr_assert(m.fid.origin == 0 && m.fid.counter == 0);
	snap_meta_free(&m);

	cr_assert_eq(snap_read_entry(root, "p", &m, &fd), 0);
	cr_assert_eq(fd, -1);
	cr_assert(S_ISFIFO(m.mode) && (m.mode & 07777) == 0600 && m.size == 0);
	cr_assert_not_null(memmem(m.xattrs, m.xattrs_len, "trusted.p", 9));
	snap_meta_free(&m);

	cr_assert_eq(snap_read_entry(root, ".", &m, &fd), 0);
	cr_assert(S_ISDIR(m.mode));
	snap_meta_free(&m);
	close(root);
}

Test(snapshot, read_entry_refuses_bad_paths_and_reports_gone_ones)
{
	struct snap_meta m;
	int root, fd;

	cr_assert_eq(mkdir(src, 0755), 0);
	put_file(src, "f", "x");
	make_symlink(src, "l", ".");
	root = open_root(src);
	cr_assert_eq(snap_read_entry(root, "../x", &m, &fd), -EINVAL);
	cr_assert_eq(snap_read_entry(root, "/etc/passwd", &m, &fd), -EINVAL);
	cr_assert_eq(snap_read_entry(root, "a//b", &m, &fd), -EINVAL);
	cr_assert_eq(snap_read_entry(root, "", &m, &fd), -EINVAL);
	cr_assert_eq(snap_read_entry(root, "missing", &m, &fd), -ENOENT);
	cr_assert_eq(snap_read_entry(root, "f/under", &m, &fd), -ENOENT);
	/* Through a symlink is not beneath the root as the store sees it. */
	cr_assert_eq(snap_read_entry(root, "l/f", &m, &fd), -ENOENT);
	cr_assert_eq(fd, -1);
	cr_assert_null(m.xattrs);
	close(root);
}

/* ---- staging ---- */

Test(snapshot, staged_file_is_exact_with_holes_and_metadata)
{
	static const char *const kv[] = {"trusted.ledgerfs.fid", "0123456789abcdef", "user.q", "v"};
	uint8_t blob[128], digest[SNAP_DIGEST_LEN];
	struct snap_meta m = {
	    .mode = S_IFREG | 04750,
	    .uid = 1234,
	    .gid = 5678,
	    .size = 8 * 1024 * 1024,
	    .mtime_sec = 1234567890,
	    .mtime_nsec = 987654321,
	    .xattrs = blob,
	};
	struct snap_stage *s;
	struct snap_obj *o;
	const char *why = NULL;
	char p[PATH_MAX], val[64];
	struct stat st;
	int fd;

	m.xattrs_len = make_blob(blob, kv, 2);
	digest_for("staged", digest);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_stage_has(s, digest), 0);
	cr_assert_eq(snap_obj_begin(s, digest, &m, &o, &why), 0, "%s", why);
	/* Out of order, as frames may be; the rest is holes. */
	cr_assert_eq(snap_obj_write(o, 5 * 1024 * 1024, "tail", 4, &why), 0);
	cr_assert_eq(snap_obj_write(o, 0, "head", 4, &why), 0);
	cr_assert_eq(snap_obj_commit(o, &why), 0, "%s", why);
	/* Not trusted under its final name before a flush made it durable. */
	cr_assert_eq(snap_stage_has(s, digest), 0);
	cr_assert_eq(snap_stage_pending(s), 1);
	cr_assert_eq(snap_stage_flush(s), 0);
	cr_assert_eq(snap_stage_pending(s), 0);
	cr_assert_eq(snap_stage_has(s, digest), 1);
	cr_assert_geq(snap_stage_bytes(s), m.size);

	obj_path(p, digest);
	cr_assert_eq(lstat(p, &st), 0);
	cr_assert_eq(st.st_mode, S_IFREG | 04750, "mode %o", st.st_mode);
	cr_assert(st.st_uid == 1234 && st.st_gid == 5678);
	cr_assert_eq(st.st_size, 8 * 1024 * 1024);
	cr_assert_lt(st.st_blocks * 512, 1024 * 1024, "holes were written");
	cr_assert(st.st_mtim.tv_sec == 1234567890 && st.st_mtim.tv_nsec == 987654321);
	cr_assert_eq(getxattr(p, "user.q", val, sizeof(val)), 1);
	cr_assert_eq(val[0], 'v');
	cr_assert_eq(getxattr(p, STORE_XATTR_FID, val, sizeof(val)), 16);
	cr_assert_arr_eq(val, "0123456789abcdef", 16);
	fd = open(p, O_RDONLY);
	cr_assert_eq(pread(fd, val, 4, 0), 4);
	cr_assert_arr_eq(val, "head", 4);
	cr_assert_eq(pread(fd, val, 8, 5 * 1024 * 1024 - 4), 8);
	cr_assert_arr_eq(val, "\0\0\0\0tail", 8);
	close(fd);
	snap_stage_close(s);
}

Test(snapshot, staged_symlink_and_nodes_keep_owner_mode_xattrs)
{
	static const char *const kv[] = {"trusted.k", "v"};
	uint8_t blob[64], d1[SNAP_DIGEST_LEN], d2[SNAP_DIGEST_LEN], d3[SNAP_DIGEST_LEN];
	struct snap_meta lnk = {.mode = S_IFLNK | 0777, .uid = 7, .gid = 8, .size = 6};
	struct snap_meta blk = {.mode = S_IFBLK | 0660, .uid = 9, .gid = 10};
	struct snap_meta sock = {.mode = S_IFSOCK | 0755};
	struct snap_stage *s;
	struct snap_obj *o;
	const char *why = NULL;
	char p[PATH_MAX], val[8], target[16];
	struct stat st;

	lnk.target = "../abc";
	lnk.xattrs = blob;
	lnk.xattrs_len = make_blob(blob, kv, 1);
	blk.rdev = makedev(7, 0);
	blk.xattrs = blob;
	blk.xattrs_len = lnk.xattrs_len;
	digest_for("lnk", d1);
	digest_for("blk", d2);
	digest_for("sock", d3);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_obj_begin(s, d1, &lnk, &o, &why), 0, "%s", why);
	cr_assert_eq(snap_obj_write(o, 0, "x", 1, &why), -EINVAL);
	cr_assert_eq(snap_obj_commit(o, &why), 0, "%s", why);
	cr_assert_eq(snap_obj_begin(s, d2, &blk, &o, &why), 0, "%s", why);
	cr_assert_eq(snap_obj_commit(o, &why), 0, "%s", why);
	cr_assert_eq(snap_obj_begin(s, d3, &sock, &o, &why), 0, "%s", why);
	cr_assert_eq(snap_obj_commit(o, &why), 0, "%s", why);
	cr_assert_eq(snap_stage_flush(s), 0);

	obj_path(p, d1);
	cr_assert_eq(lstat(p, &st), 0);
	cr_assert(S_ISLNK(st.st_mode) && st.st_uid == 7 && st.st_gid == 8);
	cr_assert_eq(readlink(p, target, sizeof(target)), 6);
	cr_assert_arr_eq(target, "../abc", 6);
	cr_assert_eq(lgetxattr(p, "trusted.k", val, sizeof(val)), 1);
	obj_path(p, d2);
	cr_assert_eq(lstat(p, &st), 0);
	cr_assert_eq(st.st_mode, S_IFBLK | 0660);
	cr_assert(st.st_rdev == makedev(7, 0) && st.st_uid == 9 && st.st_gid == 10);
	cr_assert_eq(lgetxattr(p, "trusted.k", val, sizeof(val)), 1);
	obj_path(p, d3);
	cr_assert_eq(lstat(p, &st), 0);
	cr_assert_eq(st.st_mode, S_IFSOCK | 0755);
	snap_stage_close(s);
}

Test(snapshot, obj_write_past_size_and_bad_meta_refused)
{
	static const char *const bad[] = {"user.b", "1", "user.a", "2"};
	uint8_t blob[64], d[SNAP_DIGEST_LEN];
	struct snap_meta m = {.mode = S_IFREG | 0644, .size = 10};
	struct snap_stage *s;
	struct snap_obj *o;
	const char *why = NULL;

	digest_for("x", d);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_obj_begin(s, d, &m, &o, &why), 0);
	cr_assert_eq(snap_obj_write(o, 0, "0123456789", 10, &why), 0);
	why = NULL;
	cr_assert_eq(snap_obj_write(o, 9, "ab", 2, &why), -EINVAL);
	cr_assert_not_null(why);
	cr_assert_eq(snap_obj_write(o, 11, "", 0, &why), -EINVAL);
	cr_assert_eq(snap_obj_write(o, UINT64_MAX, "a", 1, &why), -EINVAL);
	cr_assert_eq(snap_obj_write(o, 10, "", 0, &why), 0);
	snap_obj_abort(o);
	cr_assert_eq(snap_stage_has(s, d), 0);
	cr_assert_eq(snap_stage_bytes(s), 0, "abort left its temporary file");

	m.mode = S_IFDIR | 0755;
	cr_assert_eq(snap_obj_begin(s, d, &m, &o, &why), -EINVAL);
	m.mode = S_IFLNK | 0777;
	cr_assert_eq(snap_obj_begin(s, d, &m, &o, &why), -EINVAL, "symlink without target");
	m.target = "abc";
	m.size = 4;
	cr_assert_eq(snap_obj_begin(s, d, &m, &o, &why), -EINVAL, "target shorter than size");
	m.target = NULL;
	m.size = 0;
	m.mode = S_IFREG | 0644 | 0100000000;
	cr_assert_eq(snap_obj_begin(s, d, &m, &o, &why), -EINVAL);
	m.mode = S_IFREG | 0644;
	m.xattrs = blob;
	m.xattrs_len = make_blob(blob, bad, 2);
	why = NULL;
	cr_assert_eq(snap_obj_begin(s, d, &m, &o, &why), -EBADMSG);
	cr_assert_not_null(why);
	cr_assert_null(o);
	cr_assert_eq(snap_stage_bytes(s), 0);
	snap_stage_close(s);
}

Test(snapshot, stage_open_removes_leftover_tmp_files_only)
{
	struct snap_meta m = {.mode = S_IFREG | 0644, .size = 3};
	uint8_t d[SNAP_DIGEST_LEN], d2[SNAP_DIGEST_LEN];
	struct snap_stage *s;
	struct snap_obj *o;
	const char *why;
	char p[PATH_MAX];

	digest_for("kept", d);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_obj_begin(s, d, &m, &o, &why), 0);
	cr_assert_eq(snap_obj_write(o, 0, "abc", 3, &why), 0);
	cr_assert_eq(snap_obj_commit(o, &why), 0);
	cr_assert_eq(snap_stage_flush(s), 0);
	/* Committed but never flushed: gone at the next open, like a crash would leave it. */
	digest_for("unflushed", d2);
	cr_assert_eq(snap_obj_begin(s, d2, &m, &o, &why), 0);
	cr_assert_eq(snap_obj_write(o, 0, "abc", 3, &why), 0);
	cr_assert_eq(snap_obj_commit(o, &why), 0);
	snap_stage_close(s);
	at(p, node_dir, "snap/obj");
	put_file(p, "tmp.0123.7", "half an object");
	make_node(p, "tmp.fifo", S_IFIFO | 0600, 0);
	make_symlink(p, "tmp.lnk", outside);

	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert(!exists(p, "tmp.0123.7") && !exists(p, "tmp.fifo") && !exists(p, "tmp.lnk"));
	cr_assert_eq(snap_stage_has(s, d), 1);
	cr_assert_eq(snap_stage_has(s, d2), 0);
	cr_assert_eq(snap_stage_bytes(s), 3);
	snap_stage_close(s);
}

/* ---- plans ---- */

static void assert_steps_eq(const struct snap_step *a, const struct snap_step *b)
{
	cr_assert_eq(a->op, b->op);
	cr_assert_str_eq(a->path, b->path);
	switch (a->op) {
	case SNAP_OP_DELETE:
		cr_assert(a->fid.origin == b->fid.origin && a->fid.counter == b->fid.counter);
		break;
	case SNAP_OP_DIR:
		cr_assert(a->mode == b->mode && a->uid == b->uid && a->gid == b->gid);
		cr_assert_eq(a->xattrs_len, b->xattrs_len);
		if (a->xattrs_len)
			cr_assert_arr_eq(a->xattrs, b->xattrs, a->xattrs_len);
		break;
	case SNAP_OP_OBJ:
		cr_assert_arr_eq(a->digest, b->digest, SNAP_DIGEST_LEN);
		break;
	default:
		cr_assert_str_eq(a->link_to, b->link_to);
	}
}

static void sample_plan(struct snap_plan *p)
{
	static const char *const kv[] = {"user.a", "1"};
	uint8_t blob[32];
	struct snap_step st = {.op = SNAP_OP_DIR, .path = ".", .mode = S_IFDIR | 01777, .uid = 3};

	st.xattrs = blob;
	st.xattrs_len = make_blob(blob, kv, 1);
	cr_assert_eq(snap_plan_add(p, &st), 0);
	st = (struct snap_step){.op = SNAP_OP_DIR, .path = "d", .mode = 0700, .gid = 4};
	cr_assert_eq(snap_plan_add(p, &st), 0);
	add_delete(p, "d/old", 0x0102030405060708ull, 0x1112131415161718ull);
	add_delete(p, "any", 0, 0);
	st = (struct snap_step){.op = SNAP_OP_OBJ, .path = "d/f"};
	digest_for("d/f", st.digest);
	cr_assert_eq(snap_plan_add(p, &st), 0);
	add_link(p, "d/g", "d/f");
}

Test(snapshot, plan_save_load_round_trip)
{
	struct snap_plan p = {0}, q = {0};
	struct snap_stage *s;
	const char *why = NULL;

	cr_assert_eq(snap_plan_load(node_dir, &q, &why), -ENOENT);
	sample_plan(&p);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_plan_save(s, &p), 0);
	snap_stage_close(s);
	cr_assert_eq(snap_plan_load(node_dir, &q, &why), 0, "%s", why);
	cr_assert_eq(q.n, p.n);
	for (size_t i = 0; i < p.n; i++)
		assert_steps_eq(&p.v[i], &q.v[i]);
	snap_plan_free(&q);
	cr_assert(q.n == 0 && q.v == NULL);

	/* An empty plan too. */
	snap_plan_free(&p);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_plan_save(s, &p), 0);
	snap_stage_close(s);
	cr_assert_eq(snap_plan_load(node_dir, &q, &why), 0, "%s", why);
	cr_assert_eq(q.n, 0);
	snap_plan_free(&q);
}

Test(snapshot, plan_add_refuses_bad_steps)
{
	struct snap_plan p = {0};
	struct snap_step st = {.op = SNAP_OP_DELETE, .path = "../x"};

	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL);
	st.path = "/abs";
	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL);
	st.path = ".";
	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL, "deleting the root");
	st.op = SNAP_OP_OBJ;
	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL, "the root as an object");
	st = (struct snap_step){.op = SNAP_OP_LINK, .path = "a", .link_to = "../b"};
	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL);
	st.link_to = ".";
	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL);
	st = (struct snap_step){.op = SNAP_OP_DIR, .path = "a", .mode = S_IFREG | 0644};
	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL);
	st = (struct snap_step){.op = 9, .path = "a"};
	cr_assert_eq(snap_plan_add(&p, &st), -EINVAL);
	cr_assert_eq(p.n, 0);
}

static void plan_file(char *out)
{
	at(out, node_dir, "snap/plan");
}

static void write_bytes(const char *path, const uint8_t *b, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(b, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

/* A plan of one DELETE of path, with a good CRC unless told otherwise. */
static size_t raw_plan(uint8_t *b, const char *magic, uint16_t version, uint32_t count,
		       const char *path)
{
	size_t n = strlen(path), off;

	memcpy(b, magic, 4);
	put_le16(b + 4, version);
	put_le32(b + 6, count);
	b[10] = SNAP_OP_DELETE;
	put_le16(b + 11, (uint16_t)n);
	memcpy(b + 13, path, n);
	off = 13 + n;
	memset(b + off, 0, 16);
	off += 16;
	put_le32(b + off, crc32c(0, b, off));
	return off + 4;
}

static void assert_load_refused(const uint8_t *b, size_t len, const char *text)
{
	struct snap_plan p = {0};
	const char *why = NULL;
	char path[PATH_MAX];

	plan_file(path);
	write_bytes(path, b, len);
	cr_assert_eq(snap_plan_load(node_dir, &p, &why), -EBADMSG, "%s", text);
	cr_assert_not_null(why);
	cr_assert_not_null(strstr(why, text), "%s: got '%s'", text, why);
	cr_assert(p.n == 0 && p.v == NULL);
}

Test(snapshot, plan_load_refuses_damage)
{
	struct snap_plan p = {0};
	struct snap_stage *s;
	uint8_t b[4096];
	char path[PATH_MAX];
	const char *why;
	size_t len;
	FILE *f;

	sample_plan(&p);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_plan_save(s, &p), 0);
	snap_stage_close(s);
	snap_plan_free(&p);
	plan_file(path);
	f = fopen(path, "rb");
	len = fread(b, 1, sizeof(b), f);
	fclose(f);
	/* Any one byte flipped, anywhere, is caught. */
	for (size_t i = 0; i < len; i++) {
		b[i] ^= 0x20;
		write_bytes(path, b, len);
		cr_assert_eq(snap_plan_load(node_dir, &p, &why), -EBADMSG, "byte %zu", i);
		b[i] ^= 0x20;
	}
	assert_load_refused(b, len - 1, "CRC");
	assert_load_refused(b, 5, "shorter than its header");

	len = raw_plan(b, "LFSQ", 1, 1, "x");
	assert_load_refused(b, len, "magic");
	len = raw_plan(b, "LFSP", 2, 1, "x");
	assert_load_refused(b, len, "version");
	len = raw_plan(b, "LFSP", 1, 1, "../x");
	assert_load_refused(b, len, "'.' or '..'");
	len = raw_plan(b, "LFSP", 1, 1, "/abs");
	assert_load_refused(b, len, "absolute");
	len = raw_plan(b, "LFSP", 1, 1, "a_b");
	b[14] = '\0';
	put_le32(b + len - 4, crc32c(0, b, len - 4));
	assert_load_refused(b, len, "NUL in a plan path");
	len = raw_plan(b, "LFSP", 1, 1, "a//b");
	assert_load_refused(b, len, "empty path component");
	len = raw_plan(b, "LFSP", 1, 1, ".");
	assert_load_refused(b, len, "root");
	len = raw_plan(b, "LFSP", 1, 2, "x");
	assert_load_refused(b, len, "truncated");
	len = raw_plan(b, "LFSP", 1, 1000000, "x");
	assert_load_refused(b, len, "count");
	len = raw_plan(b, "LFSP", 1, 0, "x");
	assert_load_refused(b, len, "trailing");
	len = raw_plan(b, "LFSP", 1, 1, "x");
	b[10] = 77;
	put_le32(b + len - 4, crc32c(0, b, len - 4));
	assert_load_refused(b, len, "unknown plan step");
}

/* ---- install ---- */

Test(snapshot, install_makes_store_equal_to_source_and_keeps_node_stamp)
{
	struct snap_plan p = {0};
	char *want, *got, path[PATH_MAX];
	struct stat a, b;

	make_outside();
	make_src();
	make_scenario(&p);
	touched_count = 0;
	install(&p);
	cr_assert_eq(touched_count, p.n, "every step of this plan changes something");
	want = tree_dump(src);
	got = tree_dump(store);
	cr_assert_str_eq(got, want);
	assert_stamp(store, LOCAL_STAMP);
	lstat_at(store, "dir/file", &a);
	lstat_at(store, "dir/link2", &b);
	cr_assert(a.st_ino == b.st_ino && a.st_nlink == 2);
	cr_assert(exists(outside, "precious"), "a removal followed a symlink");
	at(path, node_dir, "snap/obj");
	cr_assert_eq(rmdir(path), 0, "every staged object was moved in");
	free(want);
	free(got);
	snap_plan_free(&p);
}

Test(snapshot, install_twice_changes_nothing_the_second_time)
{
	struct snap_plan p = {0};
	char *once, *twice;

	make_outside();
	make_src();
	make_scenario(&p);
	install(&p);
	once = tree_dump(store);
	touched_count = 0;
	install(&p);
	cr_assert_eq(touched_count, 0);
	twice = tree_dump(store);
	cr_assert_str_eq(twice, once);
	free(once);
	free(twice);
	snap_plan_free(&p);
}

/* A crash after the first k steps, then the whole plan from disk: the same store, for every k. */
Test(snapshot, install_after_crash_at_any_step_equals_clean_install)
{
	struct snap_plan full = {0}, prefix, loaded;
	const char *why = NULL;
	char *want, *got;
	size_t n;

	make_outside();
	make_src();
	want = tree_dump(src);
	make_scenario(&full);
	n = full.n;
	snap_plan_free(&full);
	for (size_t k = 0; k <= n; k++) {
		remove_tree(node_dir);
		cr_assert_eq(mkdir(node_dir, 0755), 0);
		make_scenario(&full);
		prefix = (struct snap_plan){0};
		for (size_t i = 0; i < k; i++)
			cr_assert_eq(snap_plan_add(&prefix, &full.v[i]), 0);
		install(&prefix);
		cr_assert_eq(snap_plan_load(node_dir, &loaded, &why), 0, "%s", why);
		install(&loaded);
		got = tree_dump(store);
		cr_assert_str_eq(got, want, "crash after %zu steps", k);
		assert_stamp(store, LOCAL_STAMP);
		cr_assert(exists(outside, "precious"));
		free(got);
		snap_plan_free(&loaded);
		snap_plan_free(&prefix);
		snap_plan_free(&full);
	}
	free(want);
}

Test(snapshot, delete_leaves_entry_whose_fid_does_not_match)
{
	struct snap_plan p = {0};

	make_outside();
	cr_assert_eq(mkdir(store, 0755), 0);
	put_file(store, "kept", "k");
	set_ids(store, "kept", 3, 10, 3, 10);
	put_file(store, "nofid", "n");
	make_dir(store, "d", 0755);
	set_ids(store, "d", 3, 20, 3, 20);
	make_symlink(store, "d/out", outside);
	make_dir(store, "d/e", 0);
	put_file(store, "d/e/f", "f");
	put_file(store, "any", "a");
	make_stage_dirs();

	add_delete(&p, "kept", 3, 11);
	add_delete(&p, "nofid", 3, 12);
	add_delete(&p, "d", 3, 20);
	add_delete(&p, "any", 0, 0);
	add_delete(&p, "missing", 3, 13);
	add_delete(&p, "missing/under/it", 0, 0);
	add_delete(&p, "kept/under", 0, 0);
	touched_count = 0;
	install(&p);
	cr_assert(exists(store, "kept") && exists(store, "nofid"));
	cr_assert(!exists(store, "d") && !exists(store, "any"));
	cr_assert(exists(outside, "precious"));
	cr_assert_eq(touched_count, 2);
	snap_plan_free(&p);
}

Test(snapshot, link_makes_one_inode)
{
	struct snap_plan p = {0};
	const char *why = NULL, *bad = NULL;
	struct stat a, b, c;
	int root;

	cr_assert_eq(mkdir(store, 0755), 0);
	make_dir(store, "d", 0755);
	put_file(store, "d/a", "the one");
	put_file(store, "b", "another file");
	make_dir(store, "c", 0755);
	put_file(store, "c/x", "a dir in the way");
	make_stage_dirs();
	add_link(&p, "b", "d/a");
	add_link(&p, "c", "d/a");
	add_link(&p, "d/new", "d/a");
	touched_count = 0;
	install(&p);
	cr_assert_eq(touched_count, 3);
	lstat_at(store, "d/a", &a);
	lstat_at(store, "b", &b);
	lstat_at(store, "c", &c);
	cr_assert(a.st_ino == b.st_ino && a.st_ino == c.st_ino && a.st_nlink == 4);
	touched_count = 0;
	install(&p);
	cr_assert_eq(touched_count, 0);
	snap_plan_free(&p);

	/* A missing target or a directory target fails, naming the step. */
	add_link(&p, "e", "nothere");
	root = open_root(store);
	cr_assert_eq(snap_install(node_dir, root, &p, NULL, NULL, &why, &bad), -ENOENT);
	cr_assert_str_eq(bad, "e");
	cr_assert_not_null(why);
	snap_plan_free(&p);
	add_link(&p, "e", "d");
	cr_assert_eq(snap_install(node_dir, root, &p, NULL, NULL, &why, &bad), -EPERM);
	cr_assert(!exists(store, "e"));
	snap_plan_free(&p);
	close(root);
}

Test(snapshot, install_refuses_hostile_steps_and_missing_parents)
{
	struct snap_step bad = {.op = SNAP_OP_DELETE, .path = "../outside"};
	struct snap_plan p = {.v = &bad, .n = 1, .cap = 1};
	struct snap_step st = {.op = SNAP_OP_DIR, .mode = 0755};
	struct snap_plan q = {0};
	const char *why = NULL, *path = NULL;
	int root;

	make_outside();
	cr_assert_eq(mkdir(store, 0755), 0);
	make_stage_dirs();
	root = open_root(store);
	cr_assert_eq(snap_install(node_dir, root, &p, NULL, NULL, &why, &path), -EINVAL);
	cr_assert_str_eq(path, "../outside");
	cr_assert(exists(outside, "precious"));

	/* A symlink in the store does not lead a step out of it. */
	make_symlink(store, "esc", outside);
	add_delete(&q, "esc/precious", 0, 0);
	cr_assert_eq(snap_install(node_dir, root, &q, NULL, NULL, &why, &path), 0);
	cr_assert(exists(outside, "precious"));
	snap_plan_free(&q);
	st.path = "esc/sub";
	cr_assert_eq(snap_plan_add(&q, &st), 0);
	cr_assert_eq(snap_install(node_dir, root, &q, NULL, NULL, &why, &path), -ENOENT);
	cr_assert_str_eq(path, "esc/sub");
	cr_assert(!exists(outside, "sub"));
	snap_plan_free(&q);
	close(root);
}

Test(snapshot, stage_remove_deletes_everything_without_following_symlinks)
{
	struct snap_stage *s;
	char snap[PATH_MAX], deep[PATH_MAX];

	make_outside();
	cr_assert_eq(snap_stage_remove(node_dir), 0, "nothing there is fine");
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	snap_stage_close(s);
	at(snap, node_dir, "snap");
	make_symlink(snap, "obj/out", outside);
	make_symlink(snap, "dirlink", outside);
	make_node(snap, "obj/fifo", S_IFIFO | 0600, 0);
	make_dir(snap, "locked", 0);
	put_file(snap, "locked/f", "x");
	strcpy(deep, "deep");
	for (int i = 0; i < 300; i++) {
		make_dir(snap, deep, 0755);
		put_file(snap, strcat(strcpy((char[PATH_MAX]){0}, deep), "/f"), "f");
		strcat(deep, "/d");
		if (strlen(deep) > 1000)
			break;
	}
	cr_assert_eq(snap_stage_remove(node_dir), 0);
	cr_assert(!exists(node_dir, "snap"));
	cr_assert(exists(outside, "precious"));
	cr_assert_eq(snap_stage_remove(node_dir), 0);
}
