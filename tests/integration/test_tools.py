"""Ordinary file tools on the mount behave as on a local disk (issue point 5):
cp -a, tar x, rsync -a, git clone/status/gc, make, an editor's save, sqlite3."""

import os
import sqlite3
import stat

import lfs
from lfs import check, check_eq, run

FIXED_NS = 1_700_000_000_000_000_000


def make_tree(root):
    """Build a small tree with dirs, sizes from 0 to 1 MiB, a symlink, a
    dangling symlink, a hard link, xattrs, odd modes and fixed mtimes."""
    os.makedirs(root / "a/b/c")
    os.makedirs(root / "empty")
    sizes = [0, 1, 4095, 4096, 4097, 65536, 1 << 20]
    for i, size in enumerate(sizes):
        lfs.write_file(root / f"a/f{i}", os.urandom(size))
    lfs.write_file(root / "a/b/c/deep.txt", "deep\n" * 100)
    lfs.write_file(root / "script.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    os.chmod(root / "script.sh", 0o755)
    os.chmod(root / "a/f1", 0o600)
    os.symlink("a/b/c/deep.txt", root / "link")
    os.symlink("../nowhere", root / "dangling")
    os.link(root / "a/f2", root / "hardlink")
    os.setxattr(root / "a/f3", "user.note", b"kept by cp -a")
    os.setxattr(root / "a/b", "user.dirnote", b"on a directory")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(FIXED_NS, FIXED_NS),
                     follow_symlinks=False)


def test_cp_a_tree_digest_matches_source():
    """`cp -a` of a generated tree into the mount digests like the source,
    keeps hard links as one inode, and the store digests the same."""
    with lfs.one_node() as n:
        src = n.dir.parent / "src"
        make_tree(src)
        run(["cp", "-a", src, n.m("copy")])
        lfs.check_same_tree(src, n.m("copy"), "cp -a source vs mount")
        lfs.check_same_tree(src, n.s("copy"), "cp -a source vs store")
        check_eq(os.stat(n.m("copy/hardlink")).st_ino, os.stat(n.m("copy/a/f2")).st_ino,
                 "hard link survives cp -a")
        n.unmount()
        lfs.check_rebuild_matches(n)


def system_tree():
    """A real tree this machine has: bash's docs, or (where images strip
    /usr/share/doc) the kernel headers that build-essential brings."""
    for path in ("/usr/share/doc/bash", "/usr/include/linux"):
        if os.path.isdir(path) and len(os.listdir(path)) > 3:
            return path
    raise lfs.Failure("neither /usr/share/doc/bash nor /usr/include/linux is here")


def test_cp_a_system_tree():
    """`cp -a` of a real system tree (docs or headers) digests alike."""
    with lfs.one_node() as n:
        src = system_tree()
        run(["cp", "-a", src, n.m("systree")])
        lfs.check_same_tree(src, n.m("systree"), f"cp -a {src}")


def test_tar_extract_matches_source():
    """`tar x` (with xattrs) of a tarball gives the same tree as its source."""
    with lfs.one_node() as n:
        src = n.dir.parent / "src"
        make_tree(src)
        tarball = n.dir.parent / "t.tar"
        run(["tar", "--xattrs", "--xattrs-include=user.*", "-cf", tarball, "-C", src, "."])
        os.mkdir(n.m("x"))
        os.utime(n.m("x"), ns=(FIXED_NS, FIXED_NS))
        run(["tar", "--xattrs", "--xattrs-include=user.*", "-xpf", tarball, "-C", n.m("x")])
        lfs.check_same_tree(src, n.m("x"), "tar x source vs mount")


def test_rsync_archive_and_noop_second_pass():
    """`rsync -aHX` copies a tree exactly; a second run finds nothing to do."""
    with lfs.one_node() as n:
        src = n.dir.parent / "src"
        make_tree(src)
        run(["rsync", "-aHX", f"{src}/", f"{n.m('r')}/"])
        lfs.check_same_tree(src, n.m("r"), "rsync source vs mount")
        again = run(["rsync", "-aHXi", "--dry-run", f"{src}/", f"{n.m('r')}/"]).stdout
        changed = [line for line in again.splitlines() if not line.startswith(".d")]
        check_eq(changed, [], "second rsync pass itemized changes")


def git_env(home):
    """An environment where git reads no user or system config."""
    return dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1",
                GIT_AUTHOR_NAME="T", GIT_AUTHOR_EMAIL="t@example.invalid",
                GIT_COMMITTER_NAME="T", GIT_COMMITTER_EMAIL="t@example.invalid")


def test_git_clone_status_gc():
    """`git clone` of a local repo into the mount, then `git status` is clean,
    `git gc` packs, and `git fsck` finds nothing wrong."""
    with lfs.one_node() as n:
        work = n.dir.parent
        env = git_env(work)
        repo = work / "origin"
        run(["git", "init", "-q", "-b", "main", repo], env=env)
        for i in range(20):
            lfs.write_file(repo / f"file{i % 5}.txt", f"revision {i}\n" * (i + 1))
            run(["git", "-C", repo, "add", "-A"], env=env)
            run(["git", "-C", repo, "commit", "-q", "-m", f"commit {i}"], env=env)
        run(["git", "clone", "-q", "--no-local", repo, n.m("clone")], env=env)
        status = run(["git", "-C", n.m("clone"), "status", "--porcelain"], env=env).stdout
        check_eq(status, "", "git status after clone")
        run(["git", "-C", n.m("clone"), "gc", "-q", "--aggressive", "--prune=now"], env=env)
        run(["git", "-C", n.m("clone"), "fsck", "--strict"], env=env)
        count = run(["git", "-C", n.m("clone"), "rev-list", "--count", "HEAD"], env=env)
        check_eq(count.stdout.strip(), "20", "commits in the clone")
        lfs.write_file(n.m("clone/new.txt"), "new\n")
        status = run(["git", "-C", n.m("clone"), "status", "--porcelain"], env=env).stdout
        check_eq(status.strip(), "?? new.txt", "git status sees a new file")


MAKEFILE = """\
hello: main.o util.o
\tcc -o $@ main.o util.o
%.o: %.c util.h
\tcc -O1 -c -o $@ $<
clean:
\trm -f hello *.o
"""


def test_make_builds_and_runs():
    """`make` of a two-file C project builds a program that runs; `make -q`
    says up to date, and touching a source makes it rebuild."""
    with lfs.one_node() as n:
        proj = n.m("proj")
        os.mkdir(proj)
        lfs.write_file(proj / "Makefile", MAKEFILE)
        lfs.write_file(proj / "util.h", "int triple(int x);\n")
        lfs.write_file(proj / "util.c", '#include "util.h"\nint triple(int x) { return 3 * x; }\n')
        lfs.write_file(proj / "main.c", '#include <stdio.h>\n#include "util.h"\n'
                       'int main(void) { printf("%d\\n", triple(14)); return 0; }\n')
        run(["make", "-C", proj])
        check_eq(run([proj / "hello"]).stdout, "42\n", "program output")
        check(os.stat(n.s("proj/hello")).st_mode & stat.S_IXUSR, "store copy is executable")
        check_eq(run(["make", "-q", "-C", proj], check=False).returncode, 0,
                 "make -q after a build")
        os.utime(proj / "util.c", ns=(FIXED_NS * 2, FIXED_NS * 2))
        check_eq(run(["make", "-q", "-C", proj], check=False).returncode, 1,
                 "make -q after touching a source")
        run(["make", "-C", proj])
        check_eq(run([proj / "hello"]).stdout, "42\n", "program output after rebuild")


def test_editor_save_by_rename():
    """An editor's save (write temp, fsync, rename over) 30 times leaves the
    last version in mount and store, and journals create/write/rename."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("doc.txt"), "v0\n")
        mark = n.last_seq()
        for i in range(1, 31):
            tmp = n.m(".doc.txt.swp")
            lfs.write_file(tmp, f"version {i}\n" * i, fsync=True)
            os.rename(tmp, n.m("doc.txt"))
        want = ("version 30\n" * 30).encode()
        check_eq(lfs.read_file(n.m("doc.txt")), want, "final content via mount")
        check_eq(lfs.read_file(n.s("doc.txt")), want, "final content in store")
        check_eq(sorted(os.listdir(n.m())), ["doc.txt"], "no temp file left")
        lfs.check_events(n.events_since(mark),
                         [("create", ".doc.txt.swp"), ("write", ".doc.txt.swp"),
                          ("rename", ".doc.txt.swp")] * 30)
        n.unmount()
        lfs.check_rebuild_matches(n)


def sqlite_workload(path, wal):
    """1000 inserts in 10 transactions, one rolled back; return the row count."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if wal:
            check_eq(db.execute("PRAGMA journal_mode=WAL").fetchone()[0], "wal",
                     "journal mode")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        for batch in range(10):
            db.execute("BEGIN")
            for i in range(100):
                db.execute("INSERT INTO t (v) VALUES (?)", (f"row {batch}.{i}" * 10,))
            db.execute("COMMIT")
        db.execute("BEGIN")
        db.execute("DELETE FROM t")
        db.execute("INSERT INTO t (v) VALUES ('doomed')")
        db.execute("ROLLBACK")
        check_eq(db.execute("PRAGMA integrity_check").fetchone()[0], "ok", "integrity_check")
        return db.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        db.close()


def test_sqlite_transactions_rollback_journal():
    """sqlite3 with its rollback journal: commits kept, rollback undone,
    integrity_check ok, also after a remount through the sqlite3 CLI."""
    with lfs.one_node() as n:
        check_eq(sqlite_workload(str(n.m("db.sqlite")), wal=False), 1000, "rows")
        n.remount()
        out = run(["sqlite3", n.m("db.sqlite"),
                   "PRAGMA integrity_check; SELECT count(*) FROM t;"]).stdout.split()
        check_eq(out, ["ok", "1000"], "sqlite3 CLI after remount")


def test_sqlite_transactions_wal():
    """sqlite3 in WAL mode (shared-memory mmap of the -shm file) works too."""
    with lfs.one_node() as n:
        check_eq(sqlite_workload(str(n.m("wal.sqlite")), wal=True), 1000, "rows")
        n.remount()
        out = run(["sqlite3", n.m("wal.sqlite"),
                   "PRAGMA integrity_check; SELECT count(*) FROM t;"]).stdout.split()
        check_eq(out, ["ok", "1000"], "sqlite3 CLI after remount")
