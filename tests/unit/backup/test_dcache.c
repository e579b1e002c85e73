/*
 * test_dcache.c - the digest cache gives an object's entry (its digest and
 * its index in the manifest it names) back only while its inode, type,
 * size, mtime and ctime are those it was read with, and a damaged cache
 * reads as empty.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/dcache.h"
#include "tree.h"

static char tmp[64], rdir[96];

static void setup(void)
{
	strcpy(tmp, "/tmp/test_dcache.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(rdir, sizeof(rdir), "%s/repo", tmp);
}

static void teardown(void)
{
	tree_remove(tmp);
}

TestSuite(dcache, .init = setup, .fini = teardown);

static struct stat fake(ino_t ino, off_t size, time_t mtime, time_t ctime)
{
	struct stat st = {.st_ino = ino, .st_size = size, .st_mode = S_IFREG | 0644};

	st.st_mtim.tv_sec = mtime;
	st.st_ctim.tv_sec = ctime;
	st.st_ctim.tv_nsec = 5;
	return st;
}

Test(dcache, hits_only_an_unchanged_file)
{
	struct repo *r = NULL;
	struct dcache c;
	struct dcache_entry v[3];
	struct stat a = fake(30, 100, 1000, 1001), b = fake(10, 5, 7, 8), d = fake(20, 0, 1, 1);
	uint8_t sha[MANIFEST_SHA], want[MANIFEST_SHA];
	char err[512];

	cr_assert_eq(repo_open(rdir, 1, &r, err, sizeof(err)), 0, "%s", err);
	memset(want, 0xa5, sizeof(want));
	d.st_mode = S_IFDIR | 0755;
	dcache_entry_set(&v[0], &a, 4, want);
	dcache_entry_set(&v[1], &b, 5, want);
	dcache_entry_set(&v[2], &d, 6, NULL);
	cr_assert_eq(dcache_save(r, 0x77, "20261207T120000.000000Z-b", v, 3), 0);
	dcache_load(r, 0x77, &c);
	cr_assert_eq(c.n, 3);
	cr_assert_str_eq(c.manifest, "20261207T120000.000000Z-b");
	cr_assert_eq(dcache_lookup(&c, &a, sha), 1);
	cr_assert_arr_eq(sha, want, sizeof(sha));
	cr_assert_eq(dcache_find(&c, &a)->index, 4);
	cr_assert_eq(dcache_find(&c, &d)->index, 6, "a directory has its entry too");
	cr_assert_eq(dcache_lookup(&c, &d, sha), 0, "but no digest");
	d.st_mode = S_IFLNK | 0777;
	cr_assert_null(dcache_find(&c, &d), "another type");
	a.st_size++;
	cr_assert_eq(dcache_lookup(&c, &a, sha), 0, "size changed");
	a.st_size--;
	a.st_ctim.tv_nsec++;
	cr_assert_eq(dcache_lookup(&c, &a, sha), 0, "ctime changed");
	a.st_ctim.tv_nsec--;
	a.st_mtim.tv_sec++;
	cr_assert_eq(dcache_lookup(&c, &a, sha), 0, "mtime changed");
	a.st_ino = 31;
	cr_assert_eq(dcache_lookup(&c, &a, sha), 0, "another inode");
	dcache_free(&c);
	/* Another node's cache is another file. */
	dcache_load(r, 0x78, &c);
	cr_assert_eq(c.n, 0);
	dcache_free(&c);
	cr_assert(dcache_settled(&b, 8ll * 1000000000 + DCACHE_SETTLE_NS + 10));
	cr_assert(!dcache_settled(&b, 8ll * 1000000000 + 10));
	repo_close(r);
}

Test(dcache, a_damaged_cache_is_empty)
{
	struct repo *r = NULL;
	struct dcache c;
	struct dcache_entry v[1];
	struct stat a = fake(3, 1, 2, 3);
	uint8_t sha[MANIFEST_SHA] = {1};
	char err[512], path[256];
	FILE *f;

	cr_assert_eq(repo_open(rdir, 1, &r, err, sizeof(err)), 0, "%s", err);
	dcache_entry_set(&v[0], &a, 0, sha);
	cr_assert_eq(dcache_save(r, 1, "m", v, 1), 0);
	snprintf(path, sizeof(path), "%s/cache/%016x", rdir, 1);
	f = fopen(path, "r+b");
	cr_assert_not_null(f);
	fseek(f, 14, SEEK_SET);
	fputc(0x55, f);
	fclose(f);
	dcache_load(r, 1, &c);
	cr_assert_eq(c.n, 0);
	cr_assert_eq(dcache_lookup(&c, &a, sha), 0);
	dcache_free(&c);
	repo_close(r);
}
