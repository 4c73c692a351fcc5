"""A trial no node can hold is refused before any trial starts, counting the node types an autoscaling
cluster may still add to the live Ray session's nodes (the checks without Ray: tests/unit/test_placement.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from search.cli import UsageError
from search.experiment import check_placement, node_capacities


def request(cpus: float, gpus: float) -> SimpleNamespace:
    return SimpleNamespace(cpus_per_trial=cpus, gpus_per_trial=gpus)


@pytest.mark.ray
def test_autoscaler_node_types_count_as_places(ray_session, tmp_path):
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text(yaml.safe_dump({"available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 0, "max_workers": 8},
        "unfilled": {"max_workers": 0},
    }}))
    nodes = node_capacities(config)
    assert {"CPU": 4, "GPU": 1} in nodes  # the worker type none of which is running yet
    assert sum("GPU" in n for n in nodes) == 1  # the live session has no GPU; 'unfilled' may add no node
    check_placement(request(1, 0.5), nodes)
    with pytest.raises(UsageError):
        check_placement(request(1, 0.5), node_capacities(tmp_path / "absent.yaml"))
