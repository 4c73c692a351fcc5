"""A trial no node can hold is refused before any trial starts, counting the node types an autoscaling
cluster may still add; a fractional GPU share caps the trial's CUDA memory to that share."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from search.cli import UsageError
from search.experiment import check_placement
from trainables.trial import pick_device


def request(cpus: float, gpus: float) -> SimpleNamespace:
    return SimpleNamespace(cpus_per_trial=cpus, gpus_per_trial=gpus)


CPU_HEAD = {"CPU": 0.0, "memory": 1e9}
GPU_NODE = {"CPU": 4.0, "GPU": 1.0}


@pytest.mark.parametrize(("cpus", "gpus"), [(1, 0.5), (4, 1), (0.5, 0.25)])
def test_a_trial_that_fits_a_gpu_node(cpus, gpus):
    check_placement(request(cpus, gpus), [CPU_HEAD, GPU_NODE])


@pytest.mark.parametrize(("cpus", "gpus", "largest"), [(1, 2, "4 CPUs, 1 GPUs"), (8, 0, "4 CPUs, 1 GPUs")])
def test_a_trial_no_node_holds_is_refused(cpus, gpus, largest):
    with pytest.raises(UsageError, match=f"largest node: {largest}"):
        check_placement(request(cpus, gpus), [CPU_HEAD, GPU_NODE])


def test_cpus_and_gpus_must_be_on_the_same_node():
    # 4 CPUs on one node and 1 GPU on another: no single node holds both.
    with pytest.raises(UsageError):
        check_placement(request(4, 1), [{"CPU": 4.0}, {"CPU": 1.0, "GPU": 1.0}])


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """pick_device sets the process's torch threads; later tests in this process expect theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class RecordingCuda:
    """Stands in for torch.cuda on this GPU-less machine: records the memory cap a trial sets."""

    def __init__(self, available: bool) -> None:
        self.available, self.caps = available, []

    def is_available(self) -> bool:
        return self.available

    def set_per_process_memory_fraction(self, fraction: float) -> None:
        self.caps.append(fraction)


@pytest.mark.parametrize(("share", "cap"), [(0.5, [0.5]), (0.25, [0.25]), (1.0, [1.0]), (2.0, [1.0])])
def test_gpu_share_caps_cuda_memory(share, cap):
    cuda = RecordingCuda(available=True)
    assert pick_device({"CPU": 1, "GPU": share}, cuda) == torch.device("cuda")
    assert cuda.caps == cap


def test_cpu_trial_sets_threads_and_never_touches_cuda():
    cuda = RecordingCuda(available=True)
    assert pick_device({"CPU": 2}, cuda) == torch.device("cpu")
    assert torch.get_num_threads() == 2 and cuda.caps == []
    # A logical GPU share on a machine without CUDA trains on the CPU, with the threads it holds.
    assert pick_device({"CPU": 1, "GPU": 0.5}, RecordingCuda(available=False)) == torch.device("cpu")
    assert torch.get_num_threads() == 1
