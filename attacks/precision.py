"""Which arithmetic IG's opt-in reduced-precision replay runs in (attack option `precision`).

bfloat16 halves the replay's memory traffic, but only a CPU that computes in it natively gains:
ATen dispatching AVX-512 kernels on a core with the avx512_bf16 or AMX instructions measured about 2x
float32 (docs/performance.md), while on an AVX2-only CPU every bfloat16 operation is converted in
software and the same replay ran 10-30x slower than float32. So `auto` (the documented choice for
the opt-in) takes bfloat16 only where the CPU has it natively, and an explicit `bf16` on a CPU
without it is kept (the user asked for it) with one warning.

`choose_precision` is the decision, a pure function of what the machine reports; `resolve_precision`
reads the machine and says the note or warning once per process."""
from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "auto")
# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# ATen's dispatch levels that use those instructions (torch.backends.cpu.get_cpu_capability())
BF16_CAPABILITIES = ("AVX512", "AMX")

log = logging.getLogger("fedleak")
_said: set[tuple] = set()


def cpu_bf16_native(capability: str, flags: frozenset[str] | None, probe_ratio: float | None = None) -> bool:
    """Whether this CPU runs bfloat16 natively. `capability`: ATen's dispatch level (a capped
    ATEN_CPU_CAPABILITY=avx2 reports AVX2, and then the AVX-512 kernels are not used, whatever the
    core has); `flags`: the CPU's feature flags, None where unknown (not Linux); `probe_ratio`:
    bfloat16 matmul time / float32 matmul time, consulted only where the flags are unknown."""
    if not any(capability.upper().startswith(c) for c in BF16_CAPABILITIES):
        return False
    if flags is not None:
        return bool(BF16_FLAGS & flags)
    return probe_ratio is not None and probe_ratio <= 1.0


def choose_precision(requested: str, device_type: str, native_bf16: bool) -> tuple[str, str | None]:
    """(precision to run, a one-line note or warning to say, or None). `native_bf16`: the device
    computes in bfloat16 natively (a CPU per `cpu_bf16_native`, a GPU per torch.cuda.is_bf16_supported)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return "fp32", None
    if native_bf16:
        return "bf16", None
    what = "this CPU has no native bfloat16 (AVX-512 bf16 or AMX)" if device_type == "cpu" else \
        f"this {device_type} device has no native bfloat16"
    if requested == "auto":
        return "fp32", f"precision auto: {what}, so the replay runs in float32"
    return "bf16", (f"precision bf16: {what}; bfloat16 is emulated and measured 10-30x slower than float32 "
                    f"there (use precision = \"auto\" or \"fp32\")")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags, None where the system does not list them."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


def probe_ratio(size: int = 256, reps: int = 5) -> float:
    """bfloat16 / float32 time of a small matmul (the fastest of `reps`): under 1 where bf16 is native."""
    import time

    import torch
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size).to(dtype)
        a @ a  # warm-up: kernel selection
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - start)
        times[dtype] = best
    return times[torch.bfloat16] / times[torch.float32]


@lru_cache(maxsize=None)
def native_bf16(device_type: str) -> bool:
    import torch
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    return cpu_bf16_native(capability, flags, probe_ratio() if flags is None else None)


def resolve_precision(requested: str, device_type: str = "cpu") -> str:
    """The precision to run on this machine; its note (auto -> fp32) or warning (bf16 not native)
    is said once per process."""
    precision, message = choose_precision(requested, device_type,
                                          requested != "fp32" and native_bf16(device_type))
    if message and (requested, device_type) not in _said:
        _said.add((requested, device_type))
        if requested == "bf16":
            warnings.warn(message, stacklevel=2)
        else:
            log.info(message)
    return precision
