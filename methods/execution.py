"""How a method's networks run on their device: the numeric precision of their forward passes (autocast,
and a gradient scaler for fp16) and, optionally, ``torch.compile``. Plain PyTorch, no Ray.

Every method runs its networks through ``Execution.run`` (``Method.run_network``) and steps its
optimisers through ``Execution.backward`` / ``step`` / ``update`` (or ``backward_step``). At fp32 these
are exactly ``module(*inputs)``, ``loss.backward()`` and ``optimizer.step()``: no autocast context is
entered and nothing is cast, so an fp32 run is bit-identical to one written without them. At bf16 or
fp16 only the forward passes run under autocast; their floating outputs come back as fp32, so every
loss, score, metric, Weibull fit and k-means a method computes from them is computed in fp32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._pytree import tree_map

# ``auto``: bf16 on a CUDA device (tensor cores, fp32's exponent range: no loss scaling), fp32 on a CPU,
# where autocast saves little and the project's CPU results stay exactly as they were.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run of config value ``precision`` trains at on ``device``. fp16 needs CUDA: its
    narrow exponent needs loss scaling and its speed comes from tensor cores, so on a CPU it is refused
    (bf16 is the CPU's reduced precision) rather than silently replaced."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (loss scaling, tensor cores); this run is on "
                         f"{device.type}: use precision bf16 or fp32")
    return precision


def _to_fp32(value: Any) -> Any:
    """A reduced-precision tensor as fp32 (float64 and integer outputs stay as they are)."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


# What caches a compiled network across the trials of a reused Ray worker (reuse_actors) is Dynamo's
# cache: it is keyed by the code of the module's forward and guarded on its structure (parameter shapes
# and dtypes, module constants such as dropout rates), not on the instance, so the next trial's fresh
# model of the same architecture runs the graphs already compiled (tests/unit/test_precision.py). Each
# variant (architecture, constants, train/eval mode, batch shapes) is one cache entry; PyTorch's default
# limit of 8 per forward would send a long search's later trials back to eager, hence:
_RECOMPILE_LIMIT = 64


class Execution:
    """The precision (resolved), the optional compile and the gradient scaler of one method's networks."""

    def __init__(self, precision: str, device: torch.device, compile: bool = False) -> None:
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.compile = compile
        self.dtype = DTYPES.get(self.precision)
        # Loss scaling for fp16 only: bf16 has fp32's exponent range, so its gradients do not underflow.
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        # This trial's compiled wrappers by module identity, so a network is wrapped once; they hold no
        # tensors of their own (the wrapper shares the module's parameters and state_dict keys stay as
        # they were).
        self._compiled: dict[int, torch.nn.Module] = {}
        self._eager = False

    def describe(self) -> dict[str, Any]:
        """What final_metrics.json records of how the networks ran."""
        return {"precision": self.precision, "compile": self.compile}

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of a forward pass; none at fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def run(self, module: torch.nn.Module, *inputs: Any, **kwargs: Any) -> Any:
        """``module(*inputs)`` at the run's precision (floating outputs returned as fp32), compiled when
        asked for."""
        if self.compile and not self._eager:
            module = self._compiled_module(module)
        if self.dtype is None:
            return module(*inputs, **kwargs)
        with self.autocast():
            out = module(*inputs, **kwargs)
        return tree_map(_to_fp32, out)

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Runs ``run`` uncompiled inside: for passes with Python hooks on the layers (BatchNorm
        statistics, methods/batchnorm.py), which a compiled graph would not call."""
        before, self._eager = self._eager, True
        try:
            yield
        finally:
            self._eager = before

    def _compiled_module(self, module: torch.nn.Module) -> torch.nn.Module:
        compiled = self._compiled.get(id(module))
        if compiled is None:
            dynamo = torch._dynamo.config
            limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
            setattr(dynamo, limit, max(getattr(dynamo, limit), _RECOMPILE_LIMIT))
            compiled = torch.compile(module)
            self._compiled[id(module)] = compiled
        return compiled

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before clipping gradients: they are scaled at fp16."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed

    def update(self) -> None:
        """After the optimisers of one backward pass stepped."""
        if self.scaler is not None:
            self.scaler.update()

    def backward_step(self, loss: torch.Tensor, *optimizers: torch.optim.Optimizer) -> None:
        """``loss.backward()`` then each optimiser's step, with loss scaling at fp16."""
        self.backward(loss)
        for optimizer in optimizers:
            self.step(optimizer)
        self.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
