"""Ship a trained model with the project: its file, its figures and a model card, in the catalog.

``ship_model`` copies a model that the workflow trained and evaluated into ``models/<name>/``
(``model.pt``, ``metrics.json``, the test-split figures, and the JSON of any mock-galaxy
comparisons and real-data validations made with it), writes the model card ``README.md`` from
those files only, and enters the model with its sha256 in ``models/catalog.yaml`` so that
``model.pretrained: <name>`` uses it. Every figure in the card is read from a file shipped
beside it, so the card cannot quote a number that its files do not hold.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..core.products import SUMMARY_KEYS, sha256_of

#: GitHub-style repositories refuse files above 100 MB; a model shipped in git stays far below.
MAX_MODEL_MB = 20.0

#: Test spectra with the model's predictions of them, beside a shipped model (see write_check_spectra).
CHECK_SPECTRA = "check_spectra.npz"

#: Figures of the evaluate stage copied beside the model when present.
FIGURES = ("pred_vs_true.png", "sfh_bins.png", "age_metallicity.png", "learning_curve.png")

CATALOG_HEADER = """\
# Models committed with the project, by name: config key model.pretrained takes a name of this
# table. Each has a model card (README.md) beside its file; the sha256 is checked before a run
# and by every job that loads the file. Entries are written by `sfh-pipeline ship-model`.
"""

SUMMARY_LABELS = {
    "lw_age": "LW log age",
    "mw_age": "MW log age",
    "lw_logz": "LW log Z/Z⊙",
    "mw_logz": "MW log Z/Z⊙",
}


def ship_model(
    model_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    models_dir: str | os.PathLike,
    name: str,
    *,
    mock_comparisons: Sequence[str | os.PathLike] = (),
    validations: Sequence[str | os.PathLike] = (),
    commands: Sequence[str] = (),
    notes: str = "",
    trainset: str | os.PathLike | None = None,
    members: Sequence[str | os.PathLike] = (),
    member_metrics: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Copy a trained model and its evidence into ``models_dir/name/`` and enter it in the catalog.

    An ensemble file (``sfh-pipeline combine-ensemble``) is shipped with its members: each
    member's own model file goes to ``members/<member name>/`` with a card of its own, and the
    ensemble's card lists each member's test-split figures beside the ensemble's and the
    calibration of their combination.

    Parameters
    ----------
    model_path, metrics_path
        ``model.pt`` of the train stage and ``metrics.json`` of the evaluate stage (test split).
        Figures of the evaluate stage beside ``metrics_path`` are copied too.
    models_dir
        The project's ``models/`` folder (holds ``catalog.yaml``).
    name
        Catalog name, also the folder name.
    mock_comparisons
        ``<galaxy>_vs_truth.json`` files of the maps stage (mock galaxies against their truth).
    validations
        ``agreement.json`` files of the validate stage (real galaxies against full spectral fits),
        and ``results/validation/summary.json`` (all real sets together) when there is one.
    commands
        The commands that made the files, quoted in the card.
    notes
        Free text for the card (what helped, what is known to be weak).
    trainset
        The model's training set: a few of its test spectra, their truths and the model's
        predictions go into ``check_spectra.npz`` for the tests of the shipped model.
    members
        For an ensemble file: its members' model files, in its order (default: the files it
        records having been combined from); each must have the sha256 the ensemble records.
    member_metrics
        For an ensemble file: ``metrics.json`` of each member's own evaluation, in its order,
        shipped beside the member and quoted in the cards (default: the members' figures in the
        ensemble's ``metrics.json``, ``ensemble.members``).

    Returns
    -------
    dict
        The catalog entry: ``path`` (relative to ``models_dir``), ``sha256``, ``card``; for an
        ensemble also ``members``, one ``{path, sha256, card}`` per member.

    Raises
    ------
    ValueError
        If the model file is larger than :data:`MAX_MODEL_MB` or not a model file that reads
        safely (:func:`sfh_pipeline.model.read_model_payload`), the metrics are not of this model,
        or a member file is missing or not the one the ensemble was combined from.
    """
    from .model import read_model_payload

    model_path, metrics_path = Path(model_path), Path(metrics_path)
    size_mb = model_path.stat().st_size / 1e6
    if size_mb > MAX_MODEL_MB:
        raise ValueError(f"{model_path} is {size_mb:.1f} MB; a shipped model must be at most {MAX_MODEL_MB} MB")
    payload = read_model_payload(model_path)
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("model") != payload.get("name"):
        raise ValueError(f"{metrics_path} evaluates model {metrics.get('model')!r}, not {payload.get('name')!r}")

    shipped_members = _member_evidence(payload, metrics, members, member_metrics)

    dest = Path(models_dir) / name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, dest / "model.pt")
    shutil.copyfile(metrics_path, dest / "metrics.json")
    figures = [f for f in FIGURES if (metrics_path.parent / f).is_file()]
    for figure in figures:
        shutil.copyfile(metrics_path.parent / figure, dest / figure)
    mocks = _copy_json(mock_comparisons, dest / "mocks", lambda p: p.name.removesuffix("_vs_truth.json"))
    reals = _copy_json(validations, dest / "real_data", _validation_label)

    digest = sha256_of(dest / "model.pt")
    if trainset is not None:
        write_check_spectra(dest / "model.pt", trainset, dest / CHECK_SPECTRA)
    card = model_card(name, payload, metrics, mocks, reals, figures, digest, size_mb, commands, notes, shipped_members)
    (dest / "README.md").write_text(card)
    entry: dict[str, Any] = {"path": f"{name}/model.pt", "sha256": digest, "card": f"{name}/README.md"}
    if shipped_members:
        entry["members"] = [_ship_member(member, name, dest) for member in shipped_members]
    _enter_in_catalog(Path(models_dir) / "catalog.yaml", name, entry)
    return entry


def _member_evidence(
    payload: dict[str, Any],
    metrics: dict[str, Any],
    members: Sequence[str | os.PathLike],
    member_metrics: Sequence[str | os.PathLike],
) -> list[dict[str, Any]]:
    """For an ensemble file, what ships of each member: ``name``, ``file`` (checked against the
    sha256 the ensemble records), ``sha256``, ``payload``, ``metrics`` (its own evaluation, or its
    figures from the ensemble's evaluation, or None) and ``metrics_file``. Empty for a model file."""
    from .model import ENSEMBLE_FORMAT

    if payload.get("format") != ENSEMBLE_FORMAT:
        if members or member_metrics:
            raise ValueError("members and member_metrics are for an ensemble file; this is a model file")
        return []
    recorded = payload["members"]
    files = [Path(p) for p in members] if members else [Path(m.get("file", "")) for m in recorded]
    if len(files) != len(recorded) or (member_metrics and len(member_metrics) != len(recorded)):
        raise ValueError(f"the ensemble has {len(recorded)} members: give a file (and metrics) for each, in its order")
    from_ensemble = (metrics.get("ensemble") or {}).get("members") or [None] * len(recorded)
    shipped = []
    for i, (member, path) in enumerate(zip(recorded, files)):
        member_name = member["payload"].get("name", f"member{i + 1}")
        if not path.is_file():
            raise ValueError(
                f"member {member_name} of the ensemble: its model file {path} does not exist; give members"
            )
        digest = sha256_of(path)
        if digest != member["sha256"]:
            raise ValueError(
                f"{path} has sha256 {digest}, but member {member_name} of the ensemble was combined from a file "
                f"with sha256 {member['sha256']}: not the same training"
            )
        own = json.loads(Path(member_metrics[i]).read_text()) if member_metrics else None
        if own is not None and own.get("model") != member_name:
            raise ValueError(f"{member_metrics[i]} evaluates model {own.get('model')!r}, not {member_name!r}")
        figures = own or (
            {**from_ensemble[i], "n_test": metrics.get("n_test")} if from_ensemble[i] is not None else None
        )
        shipped.append(
            {
                "name": member_name,
                "file": path,
                "sha256": digest,
                "payload": member["payload"],
                "metrics": figures,
                "metrics_file": Path(member_metrics[i]) if member_metrics else None,
            }
        )
    return shipped


def _ship_member(member: dict[str, Any], ensemble: str, dest: Path) -> dict[str, str]:
    """Copy one member's file (and own metrics) to ``dest/members/<name>/`` with its card; its
    catalog entry (paths relative to the models folder)."""
    folder = dest / "members" / member["name"]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(member["file"], folder / "model.pt")
    if member["metrics_file"] is not None:
        shutil.copyfile(member["metrics_file"], folder / "metrics.json")
    note = (
        f"A member of the ensemble `{ensemble}` (its card, `../../README.md`, has the ensemble's figures); "
        "the ensemble file holds this file's contents, and the sha256 below is the one it records."
    )
    card = model_card(
        member["name"],
        member["payload"],
        member["metrics"] or {},
        {},
        {},
        [],
        member["sha256"],
        (folder / "model.pt").stat().st_size / 1e6,
        notes=note,
        catalog_name=ensemble,
    )
    (folder / "README.md").write_text(card)
    where = f"{ensemble}/members/{member['name']}"
    return {"path": f"{where}/model.pt", "sha256": member["sha256"], "card": f"{where}/README.md"}


def write_check_spectra(
    model_path: str | os.PathLike, trainset_store: str | os.PathLike, output: str | os.PathLike, n: int = 12
) -> Path:
    """Save ``n`` test-split spectra of the training set (S/N >= 20 per pixel, spread over the split),
    their true summaries and SFH, and the model's predictions of them, as an npz file.

    Inputs are stored as the network reads them (``flux``, ``error``, ``mask``, ``phot``,
    ``phot_error``: normalised, on the training grid); ``true_<key>`` and ``pred_<key>`` for
    the summaries (log yr, dex), ``sfh`` (mass fractions per age bin) and their ``_err``.
    """
    import numpy as np
    import zarr

    from .predict import load_predictor

    group = zarr.open_group(trainset_store, mode="r")
    candidates = np.flatnonzero((np.asarray(group["split"][:]) == 2) & (np.asarray(group["snr"][:]) >= 20))
    if candidates.size < n:
        raise ValueError(f"{trainset_store}: only {candidates.size} test spectra with S/N >= 20, {n} wanted")
    rows = candidates[np.linspace(0, candidates.size - 1, n).astype(int)]
    take = lambda key: np.asarray(group[key].get_orthogonal_selection((rows,)))  # noqa: E731
    inputs = {key: take(key) for key in ("flux", "error", "mask", "phot", "phot_error")}
    inputs = {k: v.astype(np.uint8 if k == "mask" else np.float32) for k, v in inputs.items()}
    # the stored answers are the float32 ones, whatever this CPU would pick for inference
    pred = load_predictor(model_path, device="cpu", precision="float32").predict_normalised(*inputs.values())
    keys = SUMMARY_KEYS
    arrays = {
        **inputs,
        "rows": rows,
        **{f"true_{k}": take(k) for k in (*keys, "sfh")},
        **{f"pred_{k}": np.asarray(pred[k]) for k in (*keys, "sfh")},
        **{f"pred_{k}_err": np.asarray(pred[f"{k}_err"]) for k in keys},
    }
    output = Path(output)
    np.savez_compressed(output, **arrays)
    return output


def _copy_json(paths: Sequence[str | os.PathLike], folder: Path, label) -> dict[str, dict[str, Any]]:
    """Copy JSON files into ``folder`` as ``<label>.json``; their contents by label."""
    out = {}
    for path in map(Path, paths):
        folder.mkdir(exist_ok=True)
        shutil.copyfile(path, folder / f"{label(path)}.json")
        out[label(path)] = json.loads(path.read_text())
    return out


def _validation_label(path: Path) -> str:
    """``<set>`` for ``results/validation/<set>/agreement.json``; ``summary`` for the summary
    of all sets (``validate_summary``)."""
    return "summary" if path.name == "summary.json" else path.parent.name


def _enter_in_catalog(catalog_path: Path, name: str, entry: dict[str, str]) -> None:
    catalog = (yaml.safe_load(catalog_path.read_text()) if catalog_path.exists() else None) or {}
    catalog[name] = entry
    catalog_path.write_text(CATALOG_HEADER + yaml.safe_dump(catalog, sort_keys=True))


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def model_card(
    name: str,
    payload: dict[str, Any],
    metrics: dict[str, Any],
    mocks: dict[str, dict[str, Any]],
    reals: dict[str, dict[str, Any]],
    figures: Sequence[str],
    sha256: str,
    size_mb: float,
    commands: Sequence[str] = (),
    notes: str = "",
    members: Sequence[dict[str, Any]] = (),
    catalog_name: str | None = None,
) -> str:
    """The model card (Markdown) of a shipped model, from its payload and evaluation files.

    For an ensemble file, ``members`` (as :func:`ship_model` ships them: ``name``, ``sha256``,
    ``payload``, ``metrics``) adds the members' figures and the combination's calibration, and
    the training section is the first member's recipe. ``catalog_name``: for a member's card,
    the catalog entry it belongs to (its own file is loaded by path)."""
    from .model import ENSEMBLE_FORMAT

    ensemble = payload.get("format") == ENSEMBLE_FORMAT
    networks = [m["payload"] for m in payload["members"]] if ensemble else [payload]
    n_params = sum(v.numel() for network in networks for v in network["state_dict"].values())
    kind = f"an ensemble of {len(networks)} networks, " if ensemble else ""
    use = (
        f"- use it: `--config 'model={{pretrained: {name}}}'`, or in Python "
        f'`sfh_pipeline.load_predictor("{name}")` (by its catalog name, sha256 checked) or '
        f'`sfh_pipeline.load_predictor("models/{name}/model.pt", sha256="{sha256}")`'
        if catalog_name is None
        else f'- use it alone: `sfh_pipeline.load_predictor("models/{catalog_name}/members/{name}/model.pt", '
        f'sha256="{sha256}")`'
    )
    lines = [
        f"# Model `{name}`",
        "",
        f"- file: `model.pt`, {size_mb:.1f} MB, {kind}{n_params:,} numbers in its weights",
        f"- sha256: `{sha256}` (checked on every load through the catalog)",
        use,
        f"- shipped {_dt.date.today().isoformat()} from host `{platform.node()}` "
        f"({platform.machine()}, {os.cpu_count()} CPUs)",
    ]
    if ensemble:
        lines += _ensemble_section(payload, metrics, members)
    lines += _training_section(networks[0], recipe_of=len(networks) if ensemble else None)
    if metrics:
        lines += _test_split_section(metrics)
    if mocks:
        lines += _mock_section(mocks)
    if reals:
        lines += _real_data_section(reals)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    if commands:
        lines += ["", "## How these files were made", "", "```sh", *commands, "```"]
    return "\n".join(lines) + "\n"


def _ensemble_section(payload: dict[str, Any], metrics: dict[str, Any], members: Sequence[dict[str, Any]]) -> list[str]:
    """The members with their figures beside the ensemble's, and the calibration of the combination."""
    calibration = payload.get("calibration") or {}
    lines = [
        "",
        "## Members and the ensemble",
        "",
        f"{len(payload['members'])} trainings of one recipe on one training set, differing in their seed; one "
        "answer from theirs (sfh_pipeline.ensemble): mean SFH, summaries averaged or recomputed from the averaged "
        "histories, errors = scale × (members' calibrated errors in quadrature with their spread). Test split: "
        "scatter (1.4826 × MAD, dex) / coverage of the 68 % interval.",
        "",
        *_table_head(["model", "sha256", *SUMMARY_LABELS.values()]),
    ]
    rows = [(m["name"], m["sha256"], m.get("metrics")) for m in members] + [("**ensemble**", None, metrics)]
    for label, digest, figures in rows:
        figures = figures or {}
        cells = [
            f"{_f(figures.get(k, {}).get('scatter_dex'))} / {_f(figures.get(k, {}).get('coverage_68'), 2)}"
            for k in SUMMARY_LABELS
        ]
        lines.append(f"| {label} | {'`' + digest[:12] + '`' if digest else '—'} | " + " | ".join(cells) + " |")
    summaries = calibration.get("summaries") or {}
    if summaries:
        lines += [
            "",
            f"Calibration of the combination on the validation split ({calibration.get('n_validation')} spectra): "
            "per summary the source kept (the narrower calibrated 68 % interval), its error scale, the median "
            "calibrated error of both sources (dex) and the members' median spread (dex).",
            "",
            *_table_head(["quantity", "source", "scale", "σ averaged summaries", "σ averaged histories", "spread"]),
        ]
        for key, label in SUMMARY_LABELS.items():
            entry = summaries.get(key, {})
            candidates = entry.get("candidates", {})
            sigma = {s: _f(candidates.get(s, {}).get("median_sigma_dex")) for s in candidates}
            spread = candidates.get(entry.get("source"), {}).get("median_epistemic_dex")
            lines.append(
                f"| {label} | {str(entry.get('source', 'n/a')).replace('_', ' ')} | {_f(entry.get('error_scale'))} | "
                f"{sigma.get('averaged_summaries', 'n/a')} | {sigma.get('averaged_histories', 'n/a')} | {_f(spread)} |"
            )
        accuracy = (calibration.get("light_per_mass") or {}).get("accuracy") or {}
        if accuracy:
            lines += [
                "",
                "Light weights of the histories from a table of light per unit mass per age bin fitted on the "
                f"validation truths: on them it gives LW log age to {_f(accuracy['lw_age']['scatter_dex'])} dex and "
                f"LW log Z to {_f(accuracy['lw_logz']['scatter_dex'])} dex (scatter). Share of validation spectra "
                f"with an OOD score above 1 (the members' mean): {_f(calibration.get('ood_above_1'))}.",
            ]
    return lines


def _table_head(columns) -> list[str]:
    """The header row and separator of a Markdown table."""
    columns = list(columns)
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def _training_section(payload: dict[str, Any], recipe_of: int | None = None) -> list[str]:
    """The training of one network; ``recipe_of``: the number of members whose recipe it shows."""
    history = payload.get("history") or []
    hours = sum(h.get("seconds", 0.0) for h in history) / 3600
    trainset = payload.get("trainset") or {}
    return [
        "",
        "## Training" if recipe_of is None else f"## Training (the first of {recipe_of} members; they differ in seed)",
        "",
        f"- training set: generator digest `{trainset.get('generator_digest', 'n/a')}`, "
        f"SSP library `{(trainset.get('ssp') or {}).get('name', 'n/a')}`, "
        f"{len(trainset.get('wavelength_aa', []))} wavelength pixels, filters "
        f"{', '.join(trainset.get('filters', []))}",
        f"- architecture: `{json.dumps(payload.get('model_config'))}`",
        f"- training settings: `{json.dumps(payload.get('train_config'))}`",
        f"- loss weights: `{json.dumps(payload.get('loss_weights'))}`",
        f"- {payload.get('epochs_run', len(history))} epochs, {hours:.2f} h of training wall time on "
        f"`{payload.get('device', 'n/a')}` (world size {payload.get('world_size', 1)}); best validation loss "
        f"{_f(payload.get('best_validation_loss'))}",
    ]


def _test_split_section(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Test split (synthetic spectra of the training forward model)",
        "",
        f"{metrics.get('n_test', 'n/a')} spectra. Bias and scatter in dex (scatter: 1.4826 × MAD); "
        "coverage: share of truths inside the calibrated 68 % interval.",
        "",
        *_table_head(["quantity", "bias", "scatter", "coverage 68 %"]),
    ]
    for key, label in SUMMARY_LABELS.items():
        m = metrics.get(key, {})
        lines.append(f"| {label} | {_f(m.get('bias_dex'))} | {_f(m.get('scatter_dex'))} | {_f(m.get('coverage_68'))} |")
    if metrics.get("by_snr"):
        lines += ["", "By S/N per pixel (scatter / bias in dex):", ""]
        lines += _table_head(["S/N", "n", *SUMMARY_LABELS.values()])
        for entry in metrics["by_snr"]:
            hi = "∞" if entry["snr_max"] is None else f"{entry['snr_max']:g}"
            cells = [f"{_f(entry[k]['scatter_dex'], 2)} / {_f(entry[k]['bias_dex'], 2)}" for k in SUMMARY_LABELS]
            lines.append(f"| {entry['snr_min']:g}–{hi} | {entry['n']} | " + " | ".join(cells) + " |")
    posteriors = metrics.get("posteriors")
    if posteriors:

        def span(target: str, level: int) -> str:
            values = [e[f"coverage_{level}"] for e in posteriors[target] if e["n"]]
            return f"{min(values):.2f}–{max(values):.2f}"

        lines += [
            "",
            "Posterior heads (per SFH bin and per metallicity bin, calibrated on the validation split): "
            f"coverage of the 68 % interval ranges {span('sfh', 68)} over SFH bins and {span('zh', 68)} over "
            f"metallicity bins; of the 95 % interval {span('sfh', 95)} and {span('zh', 95)}. "
            f"T50: scatter {_f(posteriors['t50'].get('scatter_dex'))} dex, 68 % coverage "
            f"{_f(posteriors['t50']['coverage_68'], 2)}; T90: scatter {_f(posteriors['t90'].get('scatter_dex'))} dex, "
            f"coverage {_f(posteriors['t90']['coverage_68'], 2)}.",
        ]
    return lines


def _mock_section(mocks: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Mock galaxies (maps against their truth, per bin)",
        "",
        *_table_head(["galaxy", "bins", *(f"{label} ρ / bias" for label in SUMMARY_LABELS.values())]),
    ]
    for galaxy, result in sorted(mocks.items()):
        cells = [f"{_f(result[k]['spearman_rho'], 2)} / {_f(result[k]['bias_dex'], 2)}" for k in SUMMARY_LABELS]
        lines.append(f"| {galaxy} | {result.get('n_bins', 'n/a')} | " + " | ".join(cells) + " |")
    return lines


def _real_data_section(reals: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Real spectra (network minus full-spectrum pPXF fit of the same library, per bin or spectrum)",
        "",
        *_table_head(["galaxy", "bins", "reference", *SUMMARY_LABELS.values()]),
    ]
    together = reals.get("summary")
    for galaxy, result in sorted(reals.items()):
        if galaxy == "summary":
            continue
        for label, block in (("regularised", result), ("unregularised", result.get("unregularised", {}))):
            if block:
                cells = [
                    f"{_f(block[k]['median_delta_dex'], 2)} (±{_f(block[k]['scatter_dex'], 2)})" for k in SUMMARY_LABELS
                ]
                n = result.get("n_bins", result.get("n_spectra", "n/a"))
                lines.append(f"| {galaxy} | {n} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Median difference (scatter), dex; `spectra`: single real spectra (one per galaxy), not bins."]
    return lines + (_real_summary_section(together) if together else [])


def _real_summary_section(summary: dict[str, Any]) -> list[str]:
    """All real sets together (``validate_summary``): agreement with the regularised reference,
    ranks, the envelope of reference configurations, and the young spectra."""
    sets = ", ".join(f"{name} {n}" for name, n in summary["sets"].items())
    lines = [
        "",
        f"All {summary['n']} real bins and spectra together ({sets}), against the regularised fit; "
        "within envelope: share inside the span of the declared reference configurations widened by "
        "the network's 1σ:",
        "",
        *_table_head(["quantity", "median Δ", "scatter", "within 1σ", "Spearman ρ", "within envelope", "its width"]),
    ]
    for key, label in SUMMARY_LABELS.items():
        block, envelope = summary[key], summary.get("envelope", {}).get(key, {})
        lines.append(
            f"| {label} | {_f(block['median_delta_dex'], 3)} | {_f(block['scatter_dex'], 3)} | "
            f"{block['pull_within_1sigma']:.0%} | {_f(block.get('spearman_rho'), 2)} | "
            f"{_f(envelope.get('within_envelope'), 2)} | {_f(envelope.get('median_width_dex'), 2)} |"
        )
    young = summary.get("young", {})
    if young.get("n"):
        worst = max(
            (row for row in summary["rows"] if row["reference"]["lw_age"] < young["lw_age_threshold"]),
            key=lambda row: abs(row["network"]["lw_age"] - row["reference"]["lw_age"]),
        )
        lines += [
            "",
            f"Young (reference LW log age < {young['lw_age_threshold']}): {young['n']} of them, LW log age "
            f"median Δ {_f(young['lw_age']['median_delta_dex'], 2)} dex, largest |Δ| "
            f"{_f(young['lw_age']['max_abs_delta_dex'], 2)} dex ({worst['set']} {worst['name']}).",
        ]
    return lines
