"""One driver per study (study/state/lock.py): a second `study run`/`resume` is refused naming the holder; a driver
killed with SIGKILL leaves nothing locked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from study.state.lock import StudyLocked, read_holder, study_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time\nfrom study.state.lock import study_lock\n"
        "with study_lock(sys.argv[1], command='dastudy study resume held'):\n"
        "    print('locked', flush=True)\n    time.sleep(120)\n")


def _holder(home: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(home)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_driver_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(StudyLocked) as refused:
            with study_lock(tmp_path):
                pass
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "dastudy study resume held" in message and "\n" not in message
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: no clean-up runs
        holder.wait(timeout=30)
    with study_lock(tmp_path, command="next"):  # the kernel released the lock with the process
        assert read_holder(tmp_path)["pid"] == os.getpid()
    with study_lock(tmp_path):  # and ours went with the block
        pass


def test_study_resume_of_a_held_study_exits_with_one_line_naming_the_holder(tmp_path, capsys, tiny_benchmark):
    from study.cli import main
    from study_helpers import study_table
    from study.config.study_config import study_from_dict
    from study.state.location import locate, write_study_files

    location = locate("held", str(tmp_path / "studies"))
    write_study_files(study_from_dict(study_table(tiny_benchmark, name="held"), source="test"), location, extra={})
    holder = _holder(location.home)
    try:
        code = main(["study", "resume", str(location.home)])
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and str(location.home) in err, err


# ---------------------------------------------------------------------------------------------------------
# is the lock cluster-wide? (the study's mount, from a /proc/mounts text)

MOUNTS = r"""proc /proc proc rw,relatime 0 0
/dev/nvme0n1p1 / ext4 rw,relatime 0 0
10.0.0.5@o2ib:/scratch /lustre/scratch lustre rw,localflock,lazystatfs 0 0
10.0.0.5@o2ib:/project /lustre/project lustre rw,flock,lazystatfs 0 0
10.0.0.6@tcp:/home /lustre/home lustre rw,lazystatfs 0 0
nfs1:/export/v3 /nfs/v3 nfs rw,vers=3,nolock,proto=tcp 0 0
nfs1:/export/v4 /nfs/v4 nfs4 rw,vers=4.2,local_lock=none,proto=tcp 0 0
nfs1:/export/ll /nfs/ll nfs4 rw,vers=4.1,local_lock=flock 0 0
nfs1:/export/v4 /nfs/v4/inner\040dir ext4 rw 0 0
10.0.0.5@o2ib:/my\040fs /data/my\040lustre lustre rw,localflock 0 0
sshfs#me@host: /mnt/sshfs fuse.sshfs rw,user_id=0 0 0
beegfs_nodev /mnt/beegfs beegfs rw,cfgFile=/etc/beegfs/beegfs-client.conf 0 0
"""


@pytest.mark.parametrize("path, verdict, words", [
    ("/lustre/scratch/studies/demo", "refuse", ["mounted with localflock", "node-local", "remount with -o flock"]),
    ("/lustre/project/studies/demo", None, []),
    ("/lustre/home/me/studies/demo", "refuse", ["no flock", "-o flock"]),
    ("/nfs/v3/studies/demo", "refuse", ["nolock", "node-local"]),
    ("/nfs/v4/studies/demo", None, []),
    ("/nfs/ll/demo", "refuse", ["local_lock=flock"]),
    ("/nfs/v4/inner dir/demo", None, []),  # a local disk mounted inside the NFS tree (\040 is a space)
    ("/data/my lustre/demo", "refuse", ["localflock", "/data/my lustre ("]),  # \040 in /proc/mounts
    ("/mnt/sshfs/demo", "warn", ["FUSE"]),
    ("/mnt/beegfs/demo", "warn", ["tuneUseGlobalFileLocks"]),
    ("/home/me/studies/demo", None, []),  # a local disk: no other node sees the study there
])
def test_the_lock_is_refused_where_the_mount_keeps_it_on_one_node(path, verdict, words):
    from study.state.lock import mount_of, node_local_lock

    found = node_local_lock(mount_of(path, MOUNTS))
    assert (found and found[0]) == verdict, found
    for word in words:
        assert word in found[1], found


def test_a_node_local_lock_is_refused_in_one_line_unless_the_user_says_one_node_drives_the_study(monkeypatch):
    from study.state.lock import NODE_LOCAL_ENV, check_cluster_wide_lock

    monkeypatch.delenv(NODE_LOCAL_ENV, raising=False)
    with pytest.raises(StudyLocked) as refused:
        check_cluster_wide_lock(Path("/lustre/scratch/studies/demo"), mounts_text=MOUNTS)
    message = str(refused.value)
    assert "\n" not in message and "/lustre/scratch/studies/demo" in message and f"{NODE_LOCAL_ENV}=1" in message
    monkeypatch.setenv(NODE_LOCAL_ENV, "1")
    assert "localflock" in check_cluster_wide_lock(Path("/lustre/scratch/studies/demo"), mounts_text=MOUNTS)
    assert check_cluster_wide_lock(Path("/lustre/project/studies/demo"), mounts_text=MOUNTS) is None


def test_the_study_directorys_own_mount_is_read_from_proc_mounts(tmp_path):
    from study.state.lock import mount_of

    mount = mount_of(tmp_path / "not yet made")
    assert mount is not None and (tmp_path.resolve() == Path(mount.point)
                                  or Path(mount.point) in tmp_path.resolve().parents)


# Lines a /proc/mounts reader meets: a short line (a truncated read) before the real ones, two mounts on one point
# (the later one is what the kernel shows), NFS with local_lock=all, the Ceph FUSE client (which arbitrates flock
# cluster-wide), CIFS.
MORE_MOUNTS = r"""rootfs
/dev/nvme0n1p1 / ext4 rw,relatime 0 0
nfs1:/export/a /mnt/over nfs4 rw,local_lock=none 0 0
nfs2:/export/b /mnt/over nfs4 rw,nolock 0 0
nfs1:/export/all /nfs/all nfs4 rw,vers=4.1,local_lock=all 0 0
ceph-fuse /mnt/cephfs fuse.ceph-fuse rw,allow_other 0 0
//fs/share /mnt/smb cifs rw,vers=3.0 0 0
fs:/x /mnt/gluster fuse.glusterfs rw 0 0
"""


@pytest.mark.parametrize("path, expected", [
    ("/mnt/over/studies/demo", ("refuse", "/mnt/over (nfs4 from nfs2:/export/b, options rw,nolock): nolock makes "
                                "flock node-local, a driver on another node would not see this one; remount without "
                                "it (NFSv3 needs the lock daemon, rpc.statd)")),
    ("/nfs/all/demo", ("refuse", "/nfs/all (nfs4 from nfs1:/export/all, options rw,vers=4.1,local_lock=all): "
                       "local_lock=all makes flock node-local, a driver on another node would not see this one; "
                       "remount without it (NFSv3 needs the lock daemon, rpc.statd)")),
    ("/mnt/cephfs/demo", None),
    ("/mnt/smb/demo", ("warn", "/mnt/smb (cifs from //fs/share, options rw,vers=3.0): CIFS/SMB flock is emulated per "
                       "client; two drivers on different nodes may not exclude each other")),
    ("/mnt/gluster/demo", ("warn", "/mnt/gluster (fuse.glusterfs from fs:/x, options rw): a FUSE filesystem may keep "
                           "flock on this node; two drivers on different nodes may not exclude each other")),
    ("/srv/demo", None),
])
def test_each_verdict_names_the_mount_and_what_to_change(path, expected):
    from study.state.lock import mount_of, node_local_lock

    assert node_local_lock(mount_of(path, MORE_MOUNTS)) == expected


@pytest.mark.parametrize("path, expected", [
    ("/lustre/scratch/studies/demo", "/lustre/scratch (lustre from 10.0.0.5@o2ib:/scratch, options "
     "rw,localflock,lazystatfs) is mounted with localflock: flock is node-local, a driver on another node would not "
     "see this one; remount with -o flock"),
    ("/lustre/home/me", "/lustre/home (lustre from 10.0.0.6@tcp:/home, options rw,lazystatfs) has no flock (mounted "
     "without -o flock); remount with -o flock"),
])
def test_the_lustre_refusals_word_for_word(path, expected):
    from study.state.lock import mount_of, node_local_lock

    assert node_local_lock(mount_of(path, MOUNTS)) == ("refuse", expected)


def test_the_holder_is_described_by_what_its_lock_file_says():
    from study.state.lock import _describe

    assert _describe(None) == _describe({}) == "another process"
    assert _describe({"pid": 12, "host": "node3", "command": "dastudy study run demo", "since": "2026-12-07T06:00"}) \
        == "pid 12 on node3 (`dastudy study run demo`, since 2026-12-07T06:00)"
    assert _describe({"pid": 12, "host": "node3"}) == "pid 12 on node3 (`?`, since ?)"  # a lock file of older code


def test_the_node_local_refusal_word_for_word(monkeypatch):
    from study.state.lock import NODE_LOCAL_ENV, check_cluster_wide_lock

    monkeypatch.delenv(NODE_LOCAL_ENV, raising=False)
    with pytest.raises(StudyLocked) as refused:
        check_cluster_wide_lock(Path("/nfs/all/demo"), mounts_text=MORE_MOUNTS)
    assert str(refused.value) == (
        "/nfs/all/demo: the driver lock cannot exclude other nodes: /nfs/all (nfs4 from nfs1:/export/all, options "
        "rw,vers=4.1,local_lock=all): local_lock=all makes flock node-local, a driver on another node would not see "
        "this one; remount without it (NFSv3 needs the lock daemon, rpc.statd); or set DASTUDY_NODE_LOCAL_LOCK=1 if "
        "only this node ever drives the study")
    assert check_cluster_wide_lock(Path("/mnt/smb/demo"), mounts_text=MORE_MOUNTS) == (
        "warning: /mnt/smb/demo: /mnt/smb (cifs from //fs/share, options rw,vers=3.0): CIFS/SMB flock is emulated per "
        "client; two drivers on different nodes may not exclude each other")


def test_a_mount_line_needs_its_first_four_fields_and_no_more():
    """/proc/mounts has six fields per line; a table given by hand may stop after the options, and a line cut
    shorter than that is skipped rather than misread."""
    from study.state.lock import Mount, mount_of

    table = "srv:/export /data nfs4 rw,localflock\nbroken /data/cut\n"
    assert mount_of("/data/study", table) == Mount("srv:/export", "/data", "nfs4", ("rw", "localflock"))
