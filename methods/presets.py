"""Published settings as named presets, and the label every result carries.

A method declares its published settings in its own file (``Method.presets``): per dataset, the config
values the spec pins, the run-level values it pins that are not config keys (e.g. the training
fraction), and the parts of the published setting this code cannot build yet. ``describe_setting``
compares what a run actually trains (``Method.effective_config``: ``auto`` choices resolved, the input
size) with the method's ``reference`` preset and says "reference setting" only when nothing differs;
anything else is a "reduced setting" listing each differing part with our value and the reference's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from data.pools import DATASETS

if TYPE_CHECKING:
    from methods.base import DataInfo, Method, MethodConfig

REFERENCE = "reference"  # the preset name of every method's own published setting
REFERENCE_LABEL = "reference setting"
REDUCED_LABEL = "reduced setting"
NOT_BUILT = "not built"


@dataclass(frozen=True)
class Preset:
    """One published setting of a method on one dataset."""

    source: str  # where the spec states it (e.g. "difair.md §10")
    config: Mapping[str, Any]  # config keys at the spec's values; the rest keep the config's defaults
    # Run-level values the spec pins that are not method config keys (``final_train_fraction``); a run
    # that cannot report them differs there.
    run: Mapping[str, Any] = field(default_factory=dict)
    # Parts of the published setting the code cannot express yet: part -> what the spec wants. They are
    # always differences, so a run using this preset is never labelled the reference setting.
    not_built: Mapping[str, str] = field(default_factory=dict)


class PresetError(ValueError):
    """No such preset for this method and dataset; the message names the ones that exist."""


def preset_names(method_cls: type[Method], dataset: str) -> list[str]:
    return sorted(method_cls.presets(dataset))


def get_preset(method_cls: type[Method], name: str, dataset: str) -> Preset:
    presets = method_cls.presets(dataset)
    if name in presets:
        return presets[name]
    if presets:
        raise PresetError(f"{method_cls.name} has no preset {name!r} on {dataset}; presets there: "
                          f"{', '.join(sorted(presets))}")
    where = [d for d in DATASETS if method_cls.presets(d)]
    raise PresetError(f"{method_cls.name} has no published setting on {dataset}"
                      + (f"; its presets are on {', '.join(where)}" if where else ""))


def preset_config(method_cls: type[Method], name: str, dataset: str) -> dict[str, Any]:
    """The full config of a preset: the method's defaults with the spec's values on top (validated)."""
    preset = get_preset(method_cls, name, dataset)
    return method_cls.Config.from_dict(dict(preset.config)).to_dict()


def _same(ours: Any, reference: Any) -> bool:
    if isinstance(ours, float | int) and isinstance(reference, float | int) and not isinstance(ours, bool):
        return math.isclose(float(ours), float(reference), rel_tol=1e-9, abs_tol=0.0)
    if isinstance(ours, list | tuple) and isinstance(reference, list | tuple):
        return len(ours) == len(reference) and all(_same(a, b) for a, b in zip(ours, reference, strict=True))
    return ours == reference


def compare_setting(effective: Mapping[str, Any], preset: Preset | None, dataset: str = "") -> dict[str, Any]:
    """``{"label", "preset", "source", "differences": {part: {"ours", "reference"}}}`` of a run whose
    effective config (and run-level values) is ``effective`` against ``preset`` (None: the method has no
    published setting on this dataset, so nothing run on it is the reference)."""
    if preset is None:
        differences = {"dataset": {"ours": dataset, "reference": "a dataset with a published setting"}}
        return {"label": REDUCED_LABEL, "preset": None, "source": None, "differences": differences}
    differences: dict[str, dict[str, Any]] = {}
    for key, reference in {**preset.config, **preset.run}.items():
        ours = effective.get(key, NOT_BUILT)
        if not _same(ours, reference):
            differences[key] = {"ours": ours, "reference": reference}
    for part, wanted in preset.not_built.items():
        differences[part] = {"ours": effective.get(part, NOT_BUILT), "reference": f"{wanted} ({NOT_BUILT})"}
    return {"label": REDUCED_LABEL if differences else REFERENCE_LABEL, "preset": REFERENCE,
            "source": preset.source, "differences": differences}


def describe_setting(method_cls: type[Method], config: MethodConfig, info: DataInfo,
                     run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The setting label of ``config`` trained on ``info`` (its dataset and input size) against the
    method's presets there: the one it matches, else the closest (ties: ``reference``); ``run`` adds
    run-level values (e.g. ``final_train_fraction``)."""
    presets = method_cls.presets(info.dataset)
    effective = {**method_cls.effective_config(config, info), **(run or {})}
    if not presets:
        return compare_setting(effective, None, info.dataset)
    found = {name: {**compare_setting(effective, p, info.dataset), "preset": name} for name, p in presets.items()}
    return min(found.values(), key=lambda s: (len(s["differences"]), s["preset"] != REFERENCE))


def setting_line(setting: Mapping[str, Any]) -> str:
    """One line for reports: the label, and each differing part as ours vs the reference's."""
    if not setting:
        return ""
    parts = [f"{k} {_show(d['ours'])} vs {_show(d['reference'])}" for k, d in setting.get("differences", {}).items()]
    where = f" (preset {setting['preset']}, {setting['source']})" if setting.get("preset") else ""
    if not parts:
        return setting["label"] + where
    return (f"{setting['label']}, NOT comparable with the published numbers{where}; ours vs reference: "
            + "; ".join(parts))


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
