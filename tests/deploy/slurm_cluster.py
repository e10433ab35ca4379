"""A real single-node SLURM cluster for the tests: Debian's ``slurm-wlm`` daemons and ``munge``, private to one test.

``munged``, ``slurmctld`` and ``slurmd`` run as this user with their own key, socket, config, state and spool
directories and ports on 127.0.0.1, so they touch nothing of the machine's (no ``/etc/slurm``, ``/run/munge`` or
default ports); the clients (``sbatch``, ``scontrol``, ``squeue``) find this cluster through ``SLURM_CONF``. The
node offers this machine's cores and one generic GPU resource without a device (``Gres=gpu:1``, ``Count`` only), so
a job script that asks ``--gpus-per-node=1`` is scheduled as on a GPU cluster; what runs in it sees no GPU. At the
end the jobs of this private cluster are cancelled (through its own ``SLURM_CONF``: no other cluster's jobs) and
every daemon is stopped by its PID (never ``killall``: other jobs share the machine).

The Makefile installs the packages (``make slurm``); where they are missing, :func:`missing` says so and the tests
skip themselves with that line.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def missing() -> str | None:
    """Why a private cluster cannot start here, or None."""
    absent = [n for n in (*DAEMONS, "sbatch", "scontrol", "squeue", "srun") if _which(n) is None]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} missing): `make slurm` installs slurm-wlm and munge"
    return None


class SlurmCluster:
    """``slurmctld`` + ``slurmd`` (one node named after this host) + ``munged``, all under ``root``."""

    def __init__(self, root: Path, *, cpus: int | None = None, memory_mb: int = 4096):
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if key != "SLURM_CONF":  # a test run inside a SLURM job must not hand its own job to this cluster
                del self.env[key]

    # --- set-up -------------------------------------------------------------------------------------------------
    def _write_files(self) -> None:
        for sub in ("state", "spool", "munge", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        from test_job_submit import free_ports

        ctld_port, slurmd_port = free_ports(2)
        r = self.root
        self.munge_socket = r / "munge" / "munge.socket"
        self.conf.write_text("\n".join([
            "ClusterName=dastudytest",
            f"FirstJobId={random.randrange(1000, 900000)}",  # job ids (and the job's paths) unlike another cluster's
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            f"SlurmUser={_user()}",
            f"SlurmdUser={_user()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire=5",  # also the wait before a requeued job runs
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "ReturnToService=2",
            "JobRequeue=1",
            "MinJobAge=3600",
            "KillWait=2",  # Slurm's default is 30 s: a step that ignores SIGTERM is killed sooner here
            # the main scheduling loop every second (Slurm's default is 60 s): a requeued job starts as soon as its
            # hold (cred_expire) ends
            "SchedulerParameters=sched_interval=1",
            "SchedulerType=sched/builtin",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "GresTypes=gpu",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:1 "
            "State=UNKNOWN",
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
            "",
        ]))
        (self.root / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File=/dev/null\n")

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self._write_files()
        r = self.root
        self._spawn("munged", [_which("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'munge' / 'munged.pid'}",
                               f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'seed'}"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged made no socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._node_idle, timeout, "the node never became idle")
        return self

    def _spawn(self, name: str, argv: list) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "wb")
        self.procs[name] = subprocess.Popen([str(a) for a in argv], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _node_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}): {self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} within {timeout:.0f} s: {self.logs()}")

    def logs(self, tail: int = 1500) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace")[-tail:]
            parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    # --- use ----------------------------------------------------------------------------------------------------
    def run(self, argv: list, *, check: bool = True, env: dict | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
        exe = _which(str(argv[0])) or str(argv[0])
        out = subprocess.run([exe, *map(str, argv[1:])], env={**self.env, **(env or {})}, cwd=cwd,
                             capture_output=True, text=True, timeout=60)
        if check and out.returncode:
            raise RuntimeError(f"{' '.join(map(str, argv))}: exit {out.returncode}: {out.stderr or out.stdout}")
        return out

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as key=value pairs (finished jobs stay listed for MinJobAge)."""
        text = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        fields: dict[str, str] = {}
        for token in text.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def wait_job(self, job_id: str, *, states: tuple[str, ...], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f} s: {info}")
            time.sleep(1)

    def stop(self) -> None:
        """Cancel this cluster's jobs (a test that failed mid-job leaves one running: slurmstepd outlives slurmd by
        design), wait for them to end, then stop the daemons by PID."""
        if all(self.procs.get(n) is not None and self.procs[n].poll() is None for n in DAEMONS):
            try:
                self.run(["scancel", "--full", "--partition=test", f"--user={_user()}"], check=False)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    left = self.run(["squeue", "-h", "-o", "%i"], check=False)
                    if left.returncode or not left.stdout.strip():
                        break
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in reversed(DAEMONS):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc in self.procs.values():
            if proc.stdout:
                proc.stdout.close()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
