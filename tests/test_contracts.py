"""docs/contracts.md against the code and the shipped files: the page cannot drift from them."""

from __future__ import annotations

import json
import re

import numpy as np

from sfh_pipeline import load_predictor
from sfh_pipeline.products import LATER_HDUS, PRODUCTS, SUMMARIES

from .support.workflow import REPO

PAGE = (REPO / "docs" / "contracts.md").read_text()


def section(title: str) -> str:
    return PAGE.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_maps_table_is_the_code_s_hdu_list():
    """The page's HDUs are those of products.PRODUCTS, in order, with their planes and units;
    it names the ones that came later and those the truth holds 0 in as the table does."""
    text = section("Maps of a galaxy")
    rows = re.findall(r"^\| `(\w+)` \| (1|4|n_bins) \| (—|`[^`]*`) \|", text, re.M)
    assert [name for name, _, _ in rows] == [quantity.name for quantity in PRODUCTS]
    n_planes = {"": "1", "age_bins": "n_bins", "summaries": str(len(SUMMARIES))}
    for (name, planes, unit), quantity in zip(rows, PRODUCTS):
        assert unit.strip("`") == (quantity.unit or "—"), name
        assert planes == n_planes[quantity.planes], name
    later = re.search(r"`ZSUN_REF`\. (.*?) read with NaN planes", text, re.S).group(1)
    assert keys_named(later) == set(LATER_HDUS)
    zero = keys_named(re.search(r"with 0 in\s+every (.*?) plane", text, re.S).group(1))
    expected = {q.name for q in PRODUCTS if q.truth == "zero"}
    assert {name for name in expected if name.endswith("_ERR")} | (zero - {"_ERR"}) == expected


def keys_named(text: str) -> set[str]:
    return set(re.findall(r"`(\w+)`", text))


def test_metrics_and_agreement_keys_are_in_the_shipped_files():
    metrics = json.loads((REPO / "models" / "reference" / "metrics.json").read_text())
    present = set(metrics) | set(metrics["lw_age"]) | set(metrics["by_snr"][0]) | set(metrics["sfh_bins"][0])
    present |= set(metrics["posteriors"]) | set(metrics["posteriors"]["sfh"][0])
    assert keys_named(section("Model evaluation")) - {"metrics", "json"} <= present, (
        keys_named(section("Model evaluation")) - present
    )
    agreement = json.loads((REPO / "models" / "reference" / "real_data" / "A478.json").read_text())
    present = set(agreement) | set(agreement["lw_age"]) | set(agreement["young"]) | set(agreement["young"]["lw_age"])
    present |= set(agreement["envelope"]) | set(agreement["envelope"]["lw_age"]) | {"validate", "envelope"}
    named = keys_named(section("Agreement with full spectral fitting on real spectra")) - {"agreement", "json"}
    columns = {name for name in named if name.isupper() or name.endswith("_")}  # of bins.fits, below
    assert named - columns <= present, named - columns - present
    assert columns == {"BINS", "NET_", "REF_", "REF2_"}, columns

    spectra = json.loads((REPO / "models" / "reference" / "real_data" / "spectra.json").read_text())
    row = next(iter(spectra["spectra"].values()))
    present = set(spectra) | set(spectra["lw_age"]) | set(row) | set(row["forward_check"])
    of_sets, of_summary = section("Agreement with full spectral fitting on single real spectra").split(
        "`results/validation/summary.json`"
    )
    named = keys_named(of_sets)
    named -= {"agreement", "json", "spectra", "fits", "SPECTRA", "bins", "real_spectra", "residuals_", "manga"}
    assert named <= present, named - present

    summary = json.loads((REPO / "models" / "reference" / "real_data" / "summary.json").read_text())
    present = set(summary) | set(summary["envelope"]["lw_age"]) | set(summary["rows"][0])
    assert keys_named(of_summary) <= present, keys_named(of_summary) - present


def test_predictor_returns_every_key_the_page_names():
    check = np.load(REPO / "models" / "reference" / "check_spectra.npz")
    predictor = load_predictor(REPO / "models" / "reference" / "model.pt", device="cpu")
    # a shipped check spectrum, already in the rest frame on the training grid
    result = predictor.predict(
        predictor.wavelength_aa, check["flux"][0], check["error"][0], z=0.0, mask=check["mask"][0], velocity_range_kms=0
    )
    named = keys_named(section("Python").split("```", 2)[2]) - {"_err", "_epistemic", "result", "Predictor", "predict"}
    named -= {"path", "reference"}  # the argument and a catalog name, not keys of the result
    assert named <= set(result), named - set(result)
    # the public call and the network's own path agree on it (no bands given: spectrum only)
    alone = predictor.predict_normalised(check["flux"][:1], check["error"][:1], check["mask"][:1])
    np.testing.assert_allclose(result["lw_age"], alone["lw_age"][0], atol=0.02)


def test_the_readme_python_example_runs(monkeypatch):
    """The README's Python block, run as written from the repository, on a shipped check
    spectrum put at the example's redshift (its F555W flux from the check file)."""
    block = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    check = np.load(REPO / "models" / "reference" / "check_spectra.npz")
    predictor = load_predictor(REPO / "models" / "reference" / "model.pt", device="cpu")
    band = predictor.filters.index("wfc3-uvis_f555w")
    z = 0.00243
    assert f"z={z}" in block
    namespace = {
        "wave": predictor.wavelength_aa * (1 + z),
        "flux": np.where(check["mask"][0] & 4, np.nan, check["flux"][0]),
        "error": check["error"][0],
        "f": float(check["phot"][0, band]),
        "df": float(check["phot_error"][0, band]),
    }
    monkeypatch.chdir(REPO)
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert abs(result["velocity_kms"] - 299792.458 * np.log1p(z)) < 50
    assert abs(result["lw_age"] - check["true_lw_age"][0]) < 3 * result["lw_age_err"] + 0.05
