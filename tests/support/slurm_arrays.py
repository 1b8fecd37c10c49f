"""Many one-line jobs of one rule through profiles/slurm, as single jobs or as job arrays.

Used by tests/test_slurm.py (a few tasks) and bench/slurm_arrays.py (hundreds): the rule is
named ``infer_tile`` after the pipeline's widest rule, so the profile's settings for it apply.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .slurm_cluster import stop

SNAKEFILE = """\
rule all:
    input:
        expand("out/{{i}}.txt", i=range({n_tasks})),


rule infer_tile:
    output:
        "out/{{i}}.txt",
    shell:
        "echo {{wildcards.i}} > {{output}}"
"""

REPO = Path(__file__).resolve().parents[2]


def run_tiny_jobs(
    cluster: dict[str, str], work: Path, n_tasks: int, jobs: int, arrays: bool, timeout_s: float
) -> dict[str, object]:
    """Run ``n_tasks`` jobs of one rule through profiles/slurm with ``--jobs jobs``.

    ``arrays``: submit them as SLURM job arrays (``--slurm-array-jobs infer_tile``). Stops the run
    after ``timeout_s`` seconds. Returns ``finished`` (tasks whose output exists), ``submissions``
    (sbatch calls the controller received during the run, from its log), ``wall_s``,
    ``returncode`` (None when stopped at the timeout) and ``log`` (Snakemake's output).
    """
    controller_log = Path(cluster["root"]) / "slurmctld.log"
    submissions_before = controller_log.read_text().count("_slurm_rpc_submit_batch_job")
    work.mkdir(parents=True, exist_ok=True)
    snakefile = work / "Snakefile"
    snakefile.write_text(SNAKEFILE.format(n_tasks=n_tasks))
    env = {
        **os.environ,
        "SLURM_CONF": cluster["SLURM_CONF"],
        "SFH_SLURM_PARTITION": cluster["partition"],
        "SFH_SLURM_ACCOUNT": "sfh",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(work),
        "--profile", str(REPO / "profiles" / "slurm"), "--jobs", str(jobs),
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "3", "--latency-wait", "15",
    ]  # fmt: skip
    if arrays:
        cmd += ["--slurm-array-jobs", "infer_tile"]
    start = time.monotonic()
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop(proc, 60)
            returncode = None
    wall = time.monotonic() - start
    subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
    text = (work / "snakemake.log").read_text()
    return {
        "finished": len(list((work / "out").glob("*.txt"))) if (work / "out").exists() else 0,
        "submissions": controller_log.read_text().count("_slurm_rpc_submit_batch_job") - submissions_before,
        "wall_s": wall,
        "returncode": returncode,
        "log": text,
    }
