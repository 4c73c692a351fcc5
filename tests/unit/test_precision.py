"""Mixed precision and torch.compile (methods/execution.py, issue 20), on the CPU.

- ``precision`` resolves per device (``auto``: fp32 on a CPU, bf16 on CUDA); fp32 enters no autocast
  context and casts nothing, so a CPU run is today's run (the full before/after comparison of every
  method's reports and final_metrics.json is in the issue's report; this keeps its essence);
- bad values are refused in one line (the config key; fp16 on a CPU);
- bf16 autocast training of every method gives finite losses, and for each open-set (supervised) method
  a 3-epoch training-loss curve within ``BF16_LOSS_TOLERANCE`` of fp32's;
- losses and scores are fp32 at bf16 (only the networks' forward passes run in bf16);
- fp16's gradient scaler path (run on the CPU by lifting the CUDA-only refusal) trains, checkpoints and
  resumes;
- ``compile: true`` is wired to torch.compile, and a second trial of the same architecture in the same
  worker reuses Dynamo's compiled graphs (checked with Dynamo's ``eager`` backend: a real Inductor
  compile takes minutes on this CPU and is left to the GPU benchmark, bench/gpu_throughput.py).
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from test_method_contract import checkpoint, contract_bundle, contract_config, digits

from methods import execution as execution_module
from methods import get_method, method_names
from methods.execution import Execution, resolve_precision
from trainables.tasks import task_of, task_splits, trial_runs

CPU = torch.device("cpu")
# Largest relative difference of a bf16 epoch's mean training loss from fp32's over 3 epochs of the
# contract's configs on digits, measured 2026-12-03 on this CPU: adversarial 1.2e-2 (a two-player game:
# its trajectories part fastest), difair 6.2e-3, crosr 2.8e-3, openmax/softmax 1.9e-3, clustnet 8.4e-4,
# cd 6.5e-4. The tolerance is 2.5 times the worst: 3 %. A drift beyond it is no rounding difference.
BF16_LOSS_TOLERANCE = 3e-2
EPOCHS = 3
OPEN_SET = [m for m in method_names() if task_of(m).reports("auroc")]


def trial_config(method: str, **extra: object) -> tuple[dict, object]:
    num_known = len(task_splits(digits(), method, [0])[0].known)
    hparams = {**contract_config(method, num_known), "epochs": EPOCHS, **extra}
    bundle = contract_bundle(method, hparams["batch_size"])
    return {**hparams, "method": method, "dataset": "digits", "splits": [0], "seeds": [0]}, bundle


def test_auto_is_fp32_on_a_cpu_and_bf16_on_cuda():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("fp16", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", CPU) == "bf16"


def test_fp32_enters_no_autocast_and_casts_nothing():
    """The default on a CPU: ``run`` is ``module(x)`` itself, with autocast off inside the forward."""
    seen = []
    module = torch.nn.Linear(3, 2).double()  # a float64 output would be cast to fp32 by a bf16 run
    module.register_forward_hook(lambda _m, _i, _o: seen.append(torch.is_autocast_enabled("cpu")))
    ex = Execution("auto", CPU)
    assert ex.precision == "fp32" and ex.scaler is None and ex.dtype is None
    assert isinstance(ex.autocast(), contextlib.nullcontext)
    x = torch.randn(4, 3, dtype=torch.float64)
    out = ex.run(module, x)
    assert out.dtype == torch.float64 and seen == [False]
    torch.testing.assert_close(out, module(x), rtol=0, atol=0)


def test_bf16_runs_the_forward_under_autocast_and_returns_fp32():
    seen = []
    module = torch.nn.Linear(3, 2)
    module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    out = Execution("bf16", CPU).run(module, torch.randn(4, 3))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32


@pytest.mark.parametrize("value", ["fp8", "half", "FP32"])
def test_a_bad_precision_is_refused_in_one_line(value):
    with pytest.raises(ValueError) as err:
        get_method("difair").Config.from_dict({"precision": value})
    assert str(err.value) == (f"config key 'precision': precision must be one of auto, fp32, bf16, fp16; got "
                              f"{value!r}; e.g. precision: auto")


def test_fp16_on_a_cpu_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^precision fp16 needs a CUDA device .*use precision bf16 or fp32$"):
        Execution("fp16", CPU)


def test_compile_must_be_a_boolean():
    with pytest.raises(ValueError, match="config key 'compile' must be true or false"):
        get_method("softmax").Config.from_dict({"compile": "yes"})


def test_execution_keys_are_in_every_config_and_last():
    for name in method_names():
        keys = list(get_method(name).Config().to_dict())
        assert keys[-2:] == ["precision", "compile"], name


@pytest.fixture(scope="module")
def curves() -> dict[str, dict[str, list[float]]]:
    """Per method, the training loss of each epoch at fp32 and at bf16 (3 epochs, the contract's data)."""
    torch.manual_seed(0)
    found: dict[str, dict[str, list[float]]] = {}
    for method in method_names():
        found[method] = {}
        for precision in ("fp32", "bf16"):
            config, bundle = trial_config(method, precision=precision)
            runner = trial_runs(config, bundle, CPU)
            found[method][precision] = [runner.train_epoch(e)["train_loss"] for e in range(EPOCHS)]
    return found


@pytest.mark.parametrize("method", method_names())
def test_bf16_training_gives_finite_losses(curves, method):
    assert all(math.isfinite(v) for v in curves[method]["bf16"]), curves[method]


@pytest.mark.parametrize("method", OPEN_SET)
def test_bf16_loss_curve_is_within_tolerance_of_fp32(curves, method):
    fp32, bf16 = curves[method]["fp32"], curves[method]["bf16"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(fp32, bf16, strict=True))
    assert worst <= BF16_LOSS_TOLERANCE, (method, fp32, bf16)
    assert fp32 != bf16  # bf16 really ran: the curves differ in their last bits


@pytest.mark.parametrize("method", [m for m in OPEN_SET if hasattr(get_method(m), "loss")])
def test_losses_and_scores_are_fp32_at_bf16(method):
    config, bundle = trial_config(method, precision="bf16", epochs=1)
    run = trial_runs(config, bundle, CPU).runs[0]
    model = run.method
    x, y = next(run.train_batches(8))
    assert model.loss(x, y).dtype == torch.float32
    model.model.eval()
    with torch.no_grad():
        outputs = model.outputs(next(run.eval_batches("val_known")))
    floating = {k: v.dtype for k, v in outputs.items() if v.is_floating_point()}
    assert floating and set(floating.values()) == {torch.float32}, floating


def test_adversarial_and_clustering_outputs_are_fp32_at_bf16():
    for method in ("adversarial", "cd", "clustnet"):
        config, bundle = trial_config(method, precision="bf16", epochs=1)
        run = trial_runs(config, bundle, CPU).runs[0]
        outputs = run.evaluate("val_known")
        kinds = {k: v.dtype.name for k, v in outputs.items() if v.dtype.kind == "f"}
        assert kinds and set(kinds.values()) <= {"float32", "float64"}, (method, kinds)


def test_final_metrics_record_the_resolved_precision_and_compile():
    config, bundle = trial_config("softmax", epochs=1)
    runner = trial_runs(config, bundle, CPU)
    final = runner.final_document("t0", "finished")
    assert final["config"]["precision"] == "auto" and final["config"]["compile"] is False
    assert final["derived"]["precision"] == "fp32" and final["derived"]["compile"] is False
    bf16 = trial_runs({**config, "precision": "bf16"}, bundle, CPU).final_document("t0", "finished")
    assert bf16["derived"]["precision"] == "bf16"


def test_fp16_scaler_trains_checkpoints_and_resumes(monkeypatch):
    """The GradScaler path, run on the CPU (PyTorch's CPU autocast and GradScaler support fp16) by lifting
    the refusal a real run gets there: finite losses, the scale in the checkpoint, a bit-identical resume."""
    real = resolve_precision
    monkeypatch.setattr(execution_module, "resolve_precision",
                        lambda p, d: "fp16" if p == "fp16" else real(p, d))
    config, bundle = trial_config("softmax", precision="fp16", epochs=2)
    runner = trial_runs(config, bundle, CPU)
    assert runner.runs[0].method.execution.scaler is not None
    first = runner.train_epoch(0)
    saved = checkpoint(runner.state_dict(0))  # a copy, as a trial's checkpoint file
    assert "scaler" in saved["runs"][runner.runs[0].key]["execution"]
    second = runner.train_epoch(1)
    assert math.isfinite(first["train_loss"]) and math.isfinite(second["train_loss"])
    fresh = trial_runs(config, bundle, CPU)
    fresh.load_state_dict(saved)
    assert fresh.train_epoch(1)["train_loss"] == second["train_loss"]


def test_compile_true_runs_the_networks_through_torch_compile(monkeypatch):
    compiled: list[type] = []

    def fake_compile(module: torch.nn.Module, **_kwargs: object) -> torch.nn.Module:
        compiled.append(type(module))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    config, bundle = trial_config("softmax", compile=True, epochs=1)
    runner = trial_runs(config, bundle, CPU)
    runner.train_epoch(0)
    assert compiled == [type(runner.runs[0].method.model)]  # wrapped once, reused every batch
    assert runner.final_document("t0", "finished")["derived"]["compile"] is True


def test_a_second_trial_of_the_same_architecture_reuses_the_compiled_graphs(monkeypatch):
    """What caches the compiled model across the trials of a reused worker: Dynamo's cache is keyed by the
    forward's code and guarded on structure, not on the instance, so a fresh model of the same
    architecture (the next trial's) compiles no new graph. ``eager`` backend: Dynamo's tracing and
    guards without Inductor's code generation."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    from methods.backbones import build_backbone

    graphs = []
    for _trial in range(2):
        ex = Execution("fp32", CPU, compile=True)
        model = build_backbone("small", 1, 8, 0.2)
        for _ in range(2):
            ex.run(model, torch.randn(16, 1, 8, 8))
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and graphs[1] == graphs[0], graphs
    torch._dynamo.reset()


def test_fp16_in_a_config_file_without_gpus_is_refused_before_anything_starts(capsys, tmp_path, monkeypatch):
    from cli_refusal import run_main

    started: list = []
    monkeypatch.setattr("search.main.execute", lambda request: started.append(request) or 0)
    path = tmp_path / "best.yaml"
    path.write_text("method: softmax\ndataset: digits\nconfig: {precision: fp16, batch_size: 32}\n")
    line = run_main(capsys, tmp_path / "results", "--config", str(path))
    assert line == (f"error: --config {path}: precision fp16 needs a GPU (loss scaling, tensor cores) and "
                    "--gpus-per-trial is 0; set precision: bf16 or fp32, or give --gpus-per-trial")
    assert not started
