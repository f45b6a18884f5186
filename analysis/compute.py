"""Where and in what precision the math runs: `--device auto|cpu|cuda|cuda:N|mps`, `--dtype`.

One `Compute` is active per thread (the CLI's command, one app session's script run, one Ray
task). While it is active on an accelerator, torch's factory functions (`torch.tensor`,
`arange`, `zeros`, ...) and `torch.as_tensor` create on that device, so batches are built where
the model is and nothing moves back and forth per step; models are placed once when loaded or
created. On the CPU in float32 nothing is pushed at all, so the previous code path is the one
that runs (same numbers, same cache keys).

Precision changes results, so a non-float32 dtype enters every cache key (`key_part`); the
device does not: a float32 model trained on a GPU is a valid artefact of the same configuration
(only rounding order differs), and where it was built is recorded in its metadata.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

from .errors import SettingsError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = "auto, cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class Compute:
    device: str = "cpu"  # resolved: "cpu", "cuda:0", "mps"
    dtype: str = "float32"
    eval_batch: int | None = None  # prompts per forward pass when scoring and tracing (None: each one's default)

    def batch(self, default: int) -> int:
        """The scoring/tracing batch: the user's bound on memory, else the caller's default."""
        return self.eval_batch or default

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def is_default(self) -> bool:
        return self.device == "cpu" and self.dtype == "float32"

    def key_part(self) -> dict:
        """What enters cache keys: nothing for float32 (existing keys stay valid), else the dtype."""
        return {} if self.dtype == "float32" else {"dtype": self.dtype}

    def describe(self) -> str:
        return f"{self.device}, {self.dtype}"

    @contextlib.contextmanager
    def active(self) -> Iterator["Compute"]:
        """Make this the thread's compute; on an accelerator, torch creates new tensors there."""
        previous = getattr(_local, "compute", None)
        _local.compute = self
        device = contextlib.nullcontext() if self.device == "cpu" else torch.device(self.device)
        try:
            with device:
                yield self
        finally:
            _local.compute = previous


_local = threading.local()
CPU = Compute()


def current() -> Compute:
    """The thread's active compute (CPU, float32 when none was set)."""
    return getattr(_local, "compute", None) or CPU


def resolve(device: str = "auto", dtype: str = "float32", eval_batch: int | None = None) -> Compute:
    """Check a device and dtype request against this machine; a clear error when it cannot be met."""
    device, dtype = (device or "auto").strip().lower(), (dtype or "float32").strip().lower()
    if dtype not in DTYPES:
        raise SettingsError(f"unknown --dtype {dtype!r}; use {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SettingsError(f"--device {device}: CUDA is not available on this machine (torch "
                                f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); use --device cpu")
        index = device.partition(":")[2] or str(torch.cuda.current_device())
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise SettingsError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        device = f"cuda:{int(index)}"
    elif device == "mps":
        if not torch.backends.mps.is_available():
            raise SettingsError("--device mps: Apple's Metal backend is not available on this machine; use --device cpu")
    elif device != "cpu":
        raise SettingsError(f"unknown --device {device!r}; use {DEVICES}")
    if dtype == "bfloat16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise SettingsError(f"--dtype bfloat16: {device} does not support it; use float16 or float32")
    if dtype == "float16" and device == "cpu":
        raise SettingsError("--dtype float16 is not supported for training on the CPU; use bfloat16 or float32")
    if eval_batch is not None and eval_batch < 1:
        raise SettingsError(f"--eval-batch must be at least 1, got {eval_batch}")
    return Compute(device, dtype, eval_batch)


def available_devices() -> list[str]:
    """What this machine can run on, for a picker: the CPU, each CUDA device, Apple's MPS."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found + (["mps"] if torch.backends.mps.is_available() else [])


def place(module: torch.nn.Module, compute: Compute | None = None) -> torch.nn.Module:
    """Move and cast a model to the (active) compute once, when it is loaded or created."""
    compute = compute or current()
    if compute.is_default:
        return module
    return module.to(device=compute.device, dtype=compute.torch_dtype)


def accumulation_dtype(device: torch.device | str) -> torch.dtype:
    """The precision sums are accumulated in on a device: float64, but float32 on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def initialised_on_cpu(make):
    """`make()` run under the CPU's default device, so its random initialisation comes from the CPU generator.

    An active accelerator (Compute.active) makes torch's factories create on it, and its generator draws other
    numbers from the same seed; a model's or adapter's cache key omits the device (a float32 artefact is valid
    wherever it was trained), so the key must name one initial draw. Place the result afterwards. Dropout during
    training still draws on the device it runs on.
    """
    with torch.device("cpu"):
        return make()


def to_numpy(tensor: torch.Tensor):
    """A tensor's values on the host, in float64 when it is floating (bfloat16 has no numpy dtype). Moved to the
    host before the cast: MPS has no float64."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.double()
    return tensor.numpy()


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's and MPS's out-of-memory errors (MPS raises a RuntimeError that says so)."""
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def out_of_memory_message(exc: BaseException, stage: str = "") -> str:
    """What to lower when a batch does not fit: the settings that bound memory, by name."""
    where = f" during {stage}" if stage else ""
    return (f"out of memory on {current().device}{where}: a batch does not fit; lower --eval-batch (scoring and "
            f"tracing), --train-batch (training), --batch-size (unlearning) or --circuit-batch (attribution), "
            f"or use --dtype bfloat16")
