"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd started as root.

Everything lives in one folder (its own munge key and socket, slurm.conf, spool, state and
logs); clients find the cluster through ``SLURM_CONF``. One exception: the Snakemake
jobstep plugin strips ``SLURM_*`` variables before its ``srun`` inside a job, so that
``srun`` reads the default ``/etc/slurm/slurm.conf``: the test links it to its own config
when the machine has none (and removes the link afterwards), and refuses to run over a
machine's real SLURM configuration. No accounting database: ``sacct`` does not work, so the Snakemake
plugin is told to query job states with ``squeue``. Daemons run in the foreground as
children of the test and are stopped by their process ids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def ensure_installed() -> None:
    """Install slurm-wlm and munge from the Debian packages when a daemon is missing."""
    if all(shutil.which(d) or Path(f"/usr/sbin/{d}").exists() for d in DAEMONS):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if proc.returncode != 0 and cmd[1] == "install":
            raise RuntimeError(f"could not install {PACKAGES}: {proc.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, node: str, cpus: int, memory_mb: int, munge_socket: Path) -> str:
    return "\n".join(
        [
            "ClusterName=sfhtest",
            f"SlurmctldHost={node}(127.0.0.1)",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log",
            f"SlurmdLogFile={root}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=300",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def start_daemon(cmd: list[str], stderr_log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` with its stderr in ``stderr_log``; the daemon keeps its own descriptor of
    the file, this process closes its one at once."""
    with open(stderr_log, "w") as handle:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=handle)


def stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Terminate ``proc`` if it still runs; kill it after ``grace_s`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def slurm_cluster(root: Path) -> Iterator[dict[str, str]]:
    """Start a one-node cluster under ``root``; yields the environment its clients need."""
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged needs root (run the tests as root, as CI does)")
    ensure_installed()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # munged refuses keys and sockets in world-writable folders
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge.socket"
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, node, cpus, memory_mb, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        pytest.fail(f"{SYSTEM_CONF} exists: this machine has its own SLURM; run this test on a machine without one")
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.symlink_to(conf)

    processes: list[subprocess.Popen] = []
    try:
        processes.append(
            start_daemon(
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={munge_socket}",
                    f"--pid-file={root}/munged.pid",
                    f"--log-file={root}/munged.log",
                    f"--seed-file={root}/munged.seed",
                ],
                root / "munged.err",
            )
        )
        wait_for(munge_socket.exists, 30, "munged's socket")
        processes.append(start_daemon(["slurmctld", "-D", "-i", "-f", str(conf)], root / "slurmctld.err", env))
        processes.append(start_daemon(["slurmd", "-D", "-f", str(conf), "-N", node], root / "slurmd.err", env))

        def node_idle() -> bool:
            for proc in processes:
                if proc.poll() is not None:
                    logs = "\n".join(
                        (root / f).read_text()[-2000:]
                        for f in ("munged.err", "slurmctld.err", "slurmd.err", "slurmctld.log", "slurmd.log")
                        if (root / f).exists()
                    )
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{logs}")
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() == "idle"

        wait_for(node_idle, 90, "the node to become idle")
        yield {"SLURM_CONF": str(conf), "partition": "debug", "node": node, "root": str(root)}
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
        for proc in reversed(processes):
            stop(proc, 30)
        SYSTEM_CONF.unlink(missing_ok=True)
