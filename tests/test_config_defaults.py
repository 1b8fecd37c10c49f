"""One source of truth for the configuration's defaults.

The defaults live in the code (``trainset.DEFAULTS``, ``training.TrainConfig``,
``model.LossWeights``, ``validate.DEFAULT_SETTINGS``) and, for the few top-level keys that have
one, in the schema (``default:``). config/config.yaml, the embedded default, sets what it
changes on purpose. Where it still repeats a default (sections whose raw content reaches the
jobs as parameters, so that dropping a key would rerun them), the two must agree.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from sfh_pipeline import trainset as ts

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())

#: What the embedded default's training set changes on purpose: the realism terms are off in
#: the code (a plain forward model) and on in the demo (docs/real_data.md).
TRAINSET_CHOICES = {"realism"}
#: Settings of config.yaml that differ from the code's defaults on purpose (the demo model
#: trains in minutes on a laptop; the A478 reference fits every third age, 4 bootstraps).
DELIBERATE = {
    "model.training": {"batch_size", "max_epochs", "patience"},
    "model.loss": set(),
    "validate": {"age_stride", "n_bootstrap"},
}


def test_config_yaml_does_not_repeat_a_trainset_default():
    repeated = []
    for key, value in CONFIG["trainset"].items():
        if key == "name":
            continue
        assert key in TRAINSET_CHOICES, (
            f"config.yaml sets trainset.{key}: a deliberate choice? add it to TRAINSET_CHOICES"
        )
        if isinstance(value, dict):
            repeated += [f"{key}.{sub}" for sub, v in value.items() if v == ts.DEFAULTS[key][sub]]
        elif value == ts.DEFAULTS[key]:
            repeated.append(key)
    assert not repeated, f"config/config.yaml repeats the defaults of trainset.DEFAULTS: {repeated}"


def test_the_schema_documents_every_trainset_setting():
    section = SCHEMA["properties"]["trainset"]["properties"]
    assert set(section) == set(ts.DEFAULTS) | {"name"}
    for key, value in ts.DEFAULTS.items():
        if isinstance(value, dict):
            assert set(section[key]["properties"]) == set(value), key


def test_the_embedded_training_set_is_the_one_it_was():
    """The demo's resolved trainset settings, whose digest names its chunks: a change here
    regenerates every demo training set (and retrains its models). Update the digest only
    for a deliberate change of the embedded default."""
    resolved = ts.resolve_config({k: v for k, v in CONFIG["trainset"].items() if k != "name"})
    assert resolved["n_spectra"] == 32000
    assert ts.config_digest(resolved) == "f2ebd387bfbba0c363cf33d773623030f77612f634b44a88e9a06b610b3e0e89"


def test_a_setting_added_later_names_a_new_set_only_when_it_is_changed():
    """Sets made before ``old_plus_young_mass_fraction`` or ``realism.young_hbeta_ew_aa`` existed
    keep their digest: a setting enters it only away from its default (the value above is the
    digest from before)."""
    base = {k: v for k, v in CONFIG["trainset"].items() if k != "name"}
    digest = ts.config_digest(ts.resolve_config(base))
    assert ts.config_digest(ts.resolve_config({**base, "old_plus_young_mass_fraction": [1.0e-4, 0.5]})) == digest
    assert ts.config_digest(ts.resolve_config({**base, "old_plus_young_mass_fraction": [1.0e-2, 0.5]})) != digest
    with pytest.raises(ValueError, match=r"trainset\.old_plus_young_mass_fraction .*got \[0\.5, 0\.01\]"):
        ts.resolve_config({**base, "old_plus_young_mass_fraction": [0.5, 0.01]})
    # a setting inside a section: the nebular continuum of realism
    realism = {**base.get("realism", {})}
    nebular = {**base, "realism": {**realism, "young_hbeta_ew_aa": [50.0, 300.0]}}
    assert ts.config_digest(ts.resolve_config({**base, "realism": {**realism, "young_hbeta_ew_aa": [0, 0]}})) == digest
    assert ts.config_digest(ts.resolve_config(nebular)) != digest
    assert "young_hbeta_ew_aa" not in ts.generator_config(ts.resolve_config(base))["realism"]


def test_config_yaml_agrees_with_the_code_defaults_it_repeats():
    from sfh_pipeline.model import LossWeights
    from sfh_pipeline.training import TrainConfig
    from sfh_pipeline.validate import DEFAULT_SETTINGS

    defaults = {
        "model.training": {f.name: f.default for f in dataclasses.fields(TrainConfig)},
        "model.loss": {f.name: f.default for f in dataclasses.fields(LossWeights)},
        "validate": DEFAULT_SETTINGS,
    }
    sections = {
        "model.training": CONFIG["model"]["training"],
        "model.loss": CONFIG["model"]["loss"],
        "validate": {k: v for k, v in CONFIG["validate"].items() if k != "second_ssp"},
    }
    disagree = []
    for name, section in sections.items():
        for key, value in section.items():
            assert key in defaults[name], f"{name}.{key} has no default in the code"
            same = value == defaults[name][key]
            if same == (key in DELIBERATE[name]):
                disagree.append(
                    f"{name}.{key}: {value!r} (code default {defaults[name][key]!r})"
                    + (" is listed as deliberate but equals it" if same else "")
                )
    assert not disagree, "config/config.yaml and the code's defaults:\n" + "\n".join(disagree)


def test_schema_defaults_agree_with_config_yaml():
    for key, spec in SCHEMA["properties"].items():
        if "default" in spec and key in CONFIG:
            assert CONFIG[key] == spec["default"], key
