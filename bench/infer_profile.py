"""Where the time of one infer job goes, by category, from a cProfile of the job, as JSON.

Usage:
    python bench/infer_profile.py --command "sfh-pipeline infer ... --out {out}/tile.fits" \
        [--source .] [--timer cpu] [--threads 1] [--plain-runs 1] [--note TEXT] [--save NAME]

The command is a job's shell command as for ``bench/job_cost.py`` (its output put into a
folder ``{out}``; ``bench/results/infer_tile_cost.json`` holds one). It runs from ``--source``
(``PYTHONPATH``) twice or more in a scratch folder, with the thread counts of numerical
libraries (``OMP_NUM_THREADS`` ...) set to ``--threads`` as Snakemake sets them to a job's
``threads`` (1 for ``infer_tile``): run by hand with torch's default of one thread per core, the
network's threads wait for each other on a busy machine and cost up to 16 times its CPU.

* ``plain``: ``--plain-runs`` times as the workflow runs it (``job_cost.run_once``): the job's
  wall and CPU seconds and peak RSS, without a profiler;
* ``profiled``: once under cProfile, in a child process of this script that first imports the
  modules the job imports, timed without the profiler (so that their cost is one category, not
  spread over the functions whose lazy imports load them, nor inflated by the profiler's cost
  per call), then calls ``sfh_pipeline.cli.main`` with the job's arguments under it.
  With ``--timer cpu`` (default) the profile counts the process's CPU seconds (every thread's:
  the network's threads too), so the machine's load hardly changes the shares; ``wall`` counts
  seconds of the clock (waits on the disk included).

Categories (``categories``, seconds and ``shares`` of the profiled process's total, CPU or
wall after ``--timer``): each is the cumulative time of the functions named in
``attributed_to``, each call counted from its caller named there (``caller -> callee``: the
edges of ``pstats``), so that no second counts twice; ``interpreter_start`` is the process's
time before the profiler started (Python and this script's standard-library imports), and
``other`` the rest (the CLI's parsing, the profiler's own cost, the interpreter's exit, the
glue in ``infer_tile``). ``imports_left_in_job_s`` is import time still found inside the job
after the warm-up (a module the warm-up missed; counted in the category of the function that
imported it). ``top_own_s``: the functions of largest own time. ``load`` is the machine's
1-minute load average before and after (``os.getloadavg``): a training running beside the job
lengthens its wall time, not its CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from provenance import report  # bench/provenance.py: this script's folder is on sys.path

#: Modules an infer job imports, most of them lazily inside the functions that use them.
JOB_MODULES = (
    "sfh_pipeline.cli",
    "sfh_pipeline.infer",
    "sfh_pipeline.predict",
    "sfh_pipeline.model",
    "sfh_pipeline.forward_check",
    "sfh_pipeline.forward",
    "sfh_pipeline.kinematics",
    "sfh_pipeline.ssp",
    "sfh_pipeline.fetch",
    "torch",
    "zarr",
)

#: What Snakemake sets to a job's ``threads`` (snakemake/shell.py).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

#: category -> the calls it is made of, as (caller, callee), each "file suffix:function name". A file
#: matches with or without its layer folder (:func:`_same_call`), so that a ``--source`` tree from
#: before the folders (sfh_pipeline/infer.py, not sfh_pipeline/galaxy/infer.py) profiles alike.
INFER = "sfh_pipeline/galaxy/infer.py:infer_tile"
CATEGORIES: dict[str, tuple[tuple[str, str], ...]] = {
    "model_load": (
        ("sfh_pipeline/galaxy/cli.py:_infer", "sfh_pipeline/galaxy/cli.py:_verified_model"),
        (INFER, "sfh_pipeline/ml/predict.py:load_predictor"),
        (INFER, "sfh_pipeline/galaxy/infer.py:require_training_library"),
    ),
    "read_cube_and_hst": (
        (INFER, "sfh_pipeline/galaxy/phangs.py:open"),
        (INFER, "sfh_pipeline/core/products.py:read_bins"),
        (INFER, "sfh_pipeline/galaxy/extract.py:read_bin_box"),
        (INFER, "sfh_pipeline/core/products.py:read_hst_on_muse"),
    ),
    "extract_bin_spectra": (
        (INFER, "sfh_pipeline/galaxy/extract.py:bin_geometry"),
        (INFER, "sfh_pipeline/galaxy/extract.py:owned_by"),
        (INFER, "sfh_pipeline/galaxy/extract.py:wavelength_planes"),
        (INFER, "sfh_pipeline/galaxy/extract.py:sum_bins"),
        (INFER, "sfh_pipeline/galaxy/extract.py:read_box"),
        (INFER, "sfh_pipeline/core/dust.py:correct_galactic_extinction"),
    ),
    "covariance": (
        (INFER, "sfh_pipeline/core/spectral.py:sky_mask"),
        (INFER, "sfh_pipeline/galaxy/covariance.py:covariance_alpha"),
        (INFER, "sfh_pipeline/galaxy/covariance.py:error_factor"),
    ),
    "velocity": (
        (INFER, "sfh_pipeline/galaxy/infer.py:velocity_template"),
        (INFER, "sfh_pipeline/ml/predict.py:refine_velocity"),
    ),
    "rebin_for_network": ((INFER, "sfh_pipeline/ml/predict.py:prepare"),),
    "network": ((INFER, "sfh_pipeline/ml/predict.py:predict_prepared"),),
    "forward_check": (
        (INFER, "sfh_pipeline/galaxy/forward_check.py:__init__"),
        (INFER, "sfh_pipeline/galaxy/forward_check.py:fit"),
    ),
    "write_output": (
        (INFER, "sfh_pipeline/galaxy/infer.py:network_columns"),
        (INFER, "sfh_pipeline/core/products.py:write_tile_table"),
    ),
}
IMPORT_FUNCTION = ("<frozen importlib._bootstrap>", "_find_and_load")
_LAYER_FOLDER = re.compile(r"sfh_pipeline/(?:core|ssp|synth|ml|galaxy)/")


def _same_call(name: str, wanted: str) -> bool:
    """Whether ``name`` (``file:function`` of :func:`_name`) is the call ``wanted`` of CATEGORIES,
    a layer folder in either file left out."""
    file, _, function = name.rpartition(":")
    wanted_file, _, wanted_function = wanted.rpartition(":")
    flat = _LAYER_FOLDER.sub("sfh_pipeline/", file)
    return function == wanted_function and flat.endswith(_LAYER_FOLDER.sub("sfh_pipeline/", wanted_file))


def _import_job_modules() -> None:
    import importlib

    for name in JOB_MODULES:
        importlib.import_module(name)


def child(profile_path: str, timer: str, argv: list[str]) -> int:
    """The profiled job (run by :func:`profiled_run` as this script with ``--child``): the job's
    imports timed without the profiler (its cost per call would inflate them several times),
    then ``sfh_pipeline.cli.main`` under it."""
    import cProfile

    sys.path.remove(str(Path(__file__).resolve().parent))  # the job sees the source tree only
    times = {"start_cpu_s": time.process_time(), "start_clock": time.time()}
    started = time.perf_counter()
    _import_job_modules()
    times["imports_cpu_s"] = time.process_time() - times["start_cpu_s"]
    times["imports_wall_s"] = time.perf_counter() - started
    from sfh_pipeline.cli import main

    profiler = cProfile.Profile(time.process_time) if timer == "cpu" else cProfile.Profile()
    try:
        return profiler.runcall(main, argv)
    finally:
        profiler.dump_stats(profile_path)
        Path(profile_path + ".json").write_text(json.dumps(times))


def _name(key: tuple[str, int, str], source: Path) -> str:
    """``file:function`` of a pstats key, the file relative to the source tree (or its name)."""
    file, _, function = key
    path = Path(file)
    try:
        file = str(path.resolve().relative_to(source))
    except (ValueError, OSError):
        file = path.name if path.is_absolute() else file
    return f"{file}:{function}"


def profiled_run(command: str, source: Path, out: Path, timer: str) -> dict:
    """Run the job once under cProfile from ``source``; its totals and the profile's figures."""
    import pstats

    profile_path = out / "job.prof"
    here = Path(__file__).resolve()
    line = command.replace("{out}", str(out / "job")).replace(
        "sfh-pipeline ", f"{sys.executable} {here} --child {profile_path} {timer} ", 1
    )
    (out / "job").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(source)}
    import subprocess

    started_clock, started = time.time(), time.perf_counter()
    process = subprocess.Popen(line, shell=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"profiled job failed: {process.stderr.read().decode()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    before = json.loads(Path(str(profile_path) + ".json").read_text())
    stats = pstats.Stats(str(profile_path)).stats  # key -> (calls, primitive, own, cumulative, callers)
    names = {key: _name(key, source) for key in stats}

    def matches(key, wanted: str) -> bool:
        return _same_call(names[key], wanted)

    categories = {
        "interpreter_start": before["start_cpu_s"] if timer == "cpu" else before["start_clock"] - started_clock,
        "imports": before["imports_cpu_s"] if timer == "cpu" else before["imports_wall_s"],
    }
    attributed = {"imports": [f"{name} (timed without the profiler)" for name in JOB_MODULES]}
    for category, calls in CATEGORIES.items():
        seconds, found = 0.0, []
        for caller, callee in calls:
            for key, (_, _, _, _, callers) in stats.items():
                if not matches(key, callee):
                    continue
                for caller_key, edge in callers.items():
                    if matches(caller_key, caller):
                        seconds += edge[3]
                        found.append(f"{names[caller_key]} -> {names[key]}: {edge[3]:.3f} s")
        categories[category] = seconds
        attributed[category] = found
    total = cpu if timer == "cpu" else wall
    categories["other"] = total - sum(categories.values())
    imports_total = sum(v[3] for k, v in stats.items() if (k[0], k[2]) == IMPORT_FUNCTION)
    own = sorted(((v[2], names[k]) for k, v in stats.items()), reverse=True)[:15]
    return {
        "timer": timer,
        "wall_s": wall,
        "cpu_s": cpu,
        "max_rss_mb": usage.ru_maxrss / 1024,
        "profiled_s": sum(v[2] for v in stats.values()),
        "categories_s": {k: round(v, 3) for k, v in categories.items()},
        "shares": {k: round(v / total, 4) for k, v in categories.items()},
        "imports_left_in_job_s": round(imports_total, 3),
        "attributed_to": attributed,
        "top_own_s": {name: round(seconds, 3) for seconds, name in own},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", required=True, help="the job's command, {out} standing for an output folder")
    parser.add_argument("--source", default=".", help="the source tree to run the job from")
    parser.add_argument("--timer", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="the job's threads, as the rule gives them")
    parser.add_argument("--plain-runs", type=int, default=1, help="runs without the profiler, for the job's cost")
    parser.add_argument("--note", default="")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    from job_cost import run_once  # here, not above: the profiled child must not import numpy before profiling

    source = Path(args.source).resolve()
    os.environ.update({name: str(args.threads) for name in THREAD_VARIABLES})
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        plain = []
        for i in range(args.plain_runs):
            (Path(scratch) / f"plain{i}").mkdir()
            plain.append(run_once(args.command, source, Path(scratch) / f"plain{i}"))
        profiled = profiled_run(args.command, source, Path(scratch) / "profiled", args.timer)
    report(
        {
            "note": args.note,
            "command": args.command,
            "threads": args.threads,
            "plain": plain,
            "profiled": profiled,
            "load": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        },
        args.save,
    )


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2], sys.argv[3], sys.argv[4:]))
    main()
