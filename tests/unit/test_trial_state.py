"""A trial checkpoint holds everything a run draws from: weights and optimisers, the data generator, the
CPU RNG and — on a GPU — the CUDA RNG that dropout uses there, so a restarted trial replays exactly."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from data import load_pool, make_split
from trainables.device_data import DataBundle
from trainables.open_set import OpenSetRunner

CONFIG = {"method": "softmax", "dataset": "digits", "splits": [0], "seeds": [0, 1], "epochs": 2, "batch_size": 64,
          "lr": 0.05, "warmup_epochs": 0}


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    pool = load_pool("digits", "unused")
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


def _through_disk(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # how trainables/trial.py reads a checkpoint


def test_cuda_rng_state_of_every_run_round_trips_through_the_checkpoint(digits):
    # No CUDA here: each run's CUDA RNG state is a stand-in byte tensor (what torch.cuda.get_rng_state
    # returns), distinct per run, and must come back into the same run of a freshly built trial.
    saved_runs = OpenSetRunner(CONFIG, digits, torch.device("cpu"))
    stand_ins = {run.key: torch.arange(16, dtype=torch.uint8) + i for i, run in enumerate(saved_runs.runs)}
    for run in saved_runs.runs:
        run.cuda_rng_state = stand_ins[run.key].clone()
    state = _through_disk(saved_runs.state_dict(0))
    resumed = OpenSetRunner(CONFIG, digits, torch.device("cpu"))
    assert all(run.cuda_rng_state is None for run in resumed.runs)  # a CPU run has none of its own
    assert resumed.load_state_dict(state) == 0
    for run in resumed.runs:
        assert torch.equal(run.cuda_rng_state, stand_ins[run.key]), run.key


def test_cpu_checkpoint_without_cuda_state_still_loads(digits):
    runs = OpenSetRunner(CONFIG, digits, torch.device("cpu"))
    state = _through_disk(runs.state_dict(0))
    resumed = OpenSetRunner(CONFIG, digits, torch.device("cpu"))
    resumed.load_state_dict(state)
    assert all(run.cuda_rng_state is None for run in resumed.runs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_resume_replays_dropout_exactly(digits):
    device = torch.device("cuda")
    straight = OpenSetRunner(CONFIG, digits, device)
    for run in straight.runs:
        run.train_epoch(straight.batch_size, 0)
    state = _through_disk(copy.deepcopy(straight.state_dict(0)))
    for run in straight.runs:
        run.train_epoch(straight.batch_size, 1)
    resumed = OpenSetRunner(CONFIG, digits, device)  # built after the straight run moved the CUDA RNG on
    resumed.load_state_dict(state)
    for run in resumed.runs:
        run.train_epoch(resumed.batch_size, 1)
    for a, b in zip(straight.runs, resumed.runs, strict=True):
        wa, wb = a.method.model.state_dict(), b.method.model.state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), a.key
