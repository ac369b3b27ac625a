"""`--dtype auto`: the precision a device computes fastest in, decided once from its hardware and recorded.

bf16 where the device has bf16 units (CUDA compute capability ≥ 8.0; CPUs with ``avx512_bf16`` or ``amx_bf16``),
fp16 on older CUDA (and Apple MPS), fp32 otherwise. On a CPU without bf16 units bf16 is emulated and many times
slower than fp32, which is why the flags are read rather than assumed. Run configs record the resolved name, never
"auto", so a run (and ``batch --resume``'s config key) says what actually ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DTYPES = ("auto", "fp32", "fp16", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 dot-product units
CPUINFO = "/proc/cpuinfo"


def cpu_flags(path: str | Path = CPUINFO) -> set[str]:
    """The CPU feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def cuda_capability(device: str) -> tuple[str, tuple[int, int]]:
    """(name, (major, minor)) of a CUDA device such as ``cuda`` or ``cuda:1``."""
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index))


@dataclass(frozen=True)
class PrecisionCheck:
    device: str
    bf16_units: bool
    evidence: str  # the flag or capability the decision rests on
    auto: str  # what --dtype auto becomes here: fp32 | fp16 | bf16

    def line(self) -> str:
        return (f"device {self.device}: bf16 units {'yes' if self.bf16_units else 'no'} ({self.evidence}); "
                f"--dtype auto → {self.auto}")


def check(device: str = "cpu", cpuinfo: str | Path = CPUINFO) -> PrecisionCheck:
    """The hardware check behind ``--dtype auto`` for a concrete device name (cpu, cuda[:N], mps)."""
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        try:
            name, (major, minor) = cuda_capability(device)
        except (ImportError, RuntimeError, AssertionError, ValueError) as exc:  # no CUDA here: the run fails later
            return PrecisionCheck(device, False, f"no CUDA device visible: {exc}"[:200], "fp32")
        units = major >= 8  # Ampere and later have bf16 tensor cores; earlier ones emulate it
        return PrecisionCheck(device, units, f"{name}, compute capability {major}.{minor}",
                              "bf16" if units else "fp16")
    if kind == "mps":
        return PrecisionCheck(device, False, "Apple MPS computes fp16 natively", "fp16")
    if kind == "cpu":
        found = [f for f in CPU_BF16_FLAGS if f in cpu_flags(cpuinfo)]
        if found:
            return PrecisionCheck(device, True, ", ".join(found), "bf16")
        return PrecisionCheck(device, False, f"none of {', '.join(CPU_BF16_FLAGS)} in {cpuinfo}", "fp32")
    return PrecisionCheck(device, False, f"unknown device kind {kind!r}", "fp32")


def resolve(dtype: str, device: str, cpuinfo: str | Path = CPUINFO) -> str:
    """``auto`` → this device's ``check``; an explicit fp32/fp16/bf16 always wins. ValueError on anything else."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be {', '.join(DTYPES)}, got {dtype!r}")
    return check(device, cpuinfo).auto if dtype == "auto" else dtype
