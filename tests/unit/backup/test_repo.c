/*
 * test_repo.c - a repository's blobs: one written at once is named and
 * whole; blobs written through a batch have no name until the batch is
 * committed (one syncfs, then the renames), and an aborted batch leaves
 * nothing behind.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "backup/repo.h"
#include "tree.h"

static char tmp[64], rdir[96];

static void setup(void)
{
	strcpy(tmp, "/tmp/test_repo.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(rdir, sizeof(rdir), "%s/repo", tmp);
}

static void teardown(void)
{
	tree_remove(tmp);
}

TestSuite(repo, .init = setup, .fini = teardown);

static void sha_of(const char *s, uint8_t sha[MANIFEST_SHA])
{
	unsigned len;

	cr_assert_eq(EVP_Digest(s, strlen(s), sha, &len, EVP_sha256(), NULL), 1);
}

/* Files in the repository's tmp/. */
static int tmp_files(void)
{
	char path[160];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", rdir, REPO_TMP);
	d = opendir(path);
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

Test(repo, a_batch_names_its_blobs_only_when_committed)
{
	const char *data[3] = {"one\n", "two\n", "three\n"};
	uint8_t sha[3][MANIFEST_SHA], buf[64];
	struct repo_batch batch;
	struct repo *r = NULL;
	uint64_t written, size;
	char err[512];
	int i;

	cr_assert_eq(repo_open(rdir, 1, &r, err, sizeof(err)), 0, "%s", err);
	repo_batch_init(&batch, r);
	for (i = 0; i < 3; i++) {
		sha_of(data[i], sha[i]);
		cr_assert_eq(repo_blob_put_mem(r, &batch, data[i], strlen(data[i]), sha[i],
					       &written, err, sizeof(err)),
			     0, "%s", err);
		cr_assert_eq(written, strlen(data[i]));
	}
	for (i = 0; i < 3; i++)
		cr_assert_eq(repo_blob_has(r, sha[i]), 0, "no name before the commit");
	cr_assert_eq(tmp_files(), 3);
	cr_assert_eq(repo_batch_commit(&batch, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(batch.n, 0);
	cr_assert_eq(tmp_files(), 0);
	for (i = 0; i < 3; i++) {
		cr_assert_eq(repo_blob_has(r, sha[i]), 1);
		cr_assert_eq(repo_blob_check(r, sha[i], buf, sizeof(buf), &size), 0);
		cr_assert_eq(size, strlen(data[i]));
	}
	/* An aborted batch leaves neither names nor temp files. */
	sha_of("four\n", sha[0]);
	cr_assert_eq(repo_blob_put_mem(r, &batch, "four\n", 5, sha[0], &written, err, sizeof(err)),
		     0, "%s", err);
	repo_batch_abort(&batch);
	cr_assert_eq(tmp_files(), 0);
	cr_assert_eq(repo_blob_has(r, sha[0]), 0);
	/* Without a batch, a blob is named at once. */
	cr_assert_eq(repo_blob_put_mem(r, NULL, "four\n", 5, sha[0], &written, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(repo_blob_has(r, sha[0]), 1);
	repo_batch_abort(&batch);
	repo_close(r);
}
