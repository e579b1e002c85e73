/*
 * test_xattr_at.c - store/xattr_at.c: which xattr names are ledgerfs's own
 * and which of them replication carries, by length, not NUL.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "store/store.h"
#include "store/xattr_at.h"

static bool own(const char *name)
{
	return xattr_is_ledgerfs(name, strlen(name));
}

static bool carried(const char *name)
{
	return xattr_replicated(name, strlen(name));
}

Test(xattr_at, ledgerfs_own_names_are_those_under_its_prefix)
{
	cr_expect(own(STORE_XATTR_FID));
	cr_expect(own(STORE_XATTR_VER));
	cr_expect(own(STORE_XATTR_NODE));
	cr_expect(own("trusted.ledgerfs.anything"));
	cr_expect(own("trusted.ledgerfs."));
	cr_expect_not(own("trusted.ledgerfs"));
	cr_expect_not(own("trusted.ledgerfsx.fid"));
	cr_expect_not(own("user.trusted.ledgerfs.fid"));
	cr_expect_not(own("user.x"));
	cr_expect_not(own(""));
}

Test(xattr_at, own_name_is_judged_on_len_bytes_only)
{
	static const char name[] = "trusted.ledgerfs.fid";

	cr_expect(xattr_is_ledgerfs(name, sizeof(name) - 1));
	cr_expect(xattr_is_ledgerfs(name, strlen("trusted.ledgerfs.")));
	cr_expect_not(xattr_is_ledgerfs(name, strlen("trusted.ledgerfs")));
	cr_expect_not(xattr_is_ledgerfs(name, 0));
}

Test(xattr_at, replication_carries_all_but_the_node_own_ones)
{
	cr_expect(carried("user.x"));
	cr_expect(carried("security.selinux"));
	cr_expect(carried(STORE_XATTR_FID));
	cr_expect(carried(STORE_XATTR_VER));
	cr_expect_not(carried(STORE_XATTR_NODE));
	cr_expect_not(carried("trusted.ledgerfs.other"));
	cr_expect_not(xattr_replicated(STORE_XATTR_FID, strlen(STORE_XATTR_FID) - 1),
		      "a prefix of the fid's name is another name");
}
