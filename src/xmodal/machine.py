"""What machine this is: the CPU's model, the instruction sets that matter for inference, the cores,
and (for reports) memory, load and the runtime versions.

Benchmarks and reports name the CPU they ran on with this, because the same machine kind comes
with AVX2-only CPUs on some days and AVX-512/AMX ones on others, and int8/bf16 speeds differ by
several times between them. Read from /proc/cpuinfo by hand: the two lines needed are simple, and
py-cpuinfo, the library for it, starts a subprocess and takes about a second.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

# Flags in /proc/cpuinfo that decide which kernels ONNX Runtime, OpenVINO and Faiss pick.
INFERENCE_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
# The same on Arm (`Features`): NEON, its int8 dot product and matrix multiply, bf16, SVE.
ARM_INFERENCE_FLAGS = ("asimd", "asimddp", "i8mm", "bf16", "sve")
_MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...]  # those of INFERENCE_FLAGS (or ARM_INFERENCE_FLAGS) the CPU has
    cores: int  # usable by this process

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def kind(self) -> str:
        """'AMX', 'AVX-512 VNNI', 'AVX-512', 'AVX2 VNNI', 'AVX2' or 'other': the tier that sets int8/bf16 speed."""
        if self.has("amx_tile"):
            return "AMX"
        if self.has("avx512_vnni"):
            return "AVX-512 VNNI"
        if self.has("avx512f"):
            return "AVX-512"
        if self.has("avx_vnni"):
            return "AVX2 VNNI"
        return "AVX2" if self.has("avx2") else "other"

    def describe(self) -> str:
        return f"{self.model} ({self.kind}; {', '.join(self.flags) or 'no SIMD flags read'}; {self.cores} cores)"


def parse_cpuinfo(text: str) -> tuple[str | None, tuple[str, ...]]:
    """(first `model name`, the inference flags its first `flags`/`Features` line lists) of /proc/cpuinfo text."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, tuple(f for f in INFERENCE_FLAGS + ARM_INFERENCE_FLAGS if f in flags)


@cache
def cpu_info() -> CpuInfo:
    """The CPU of this machine, read from /proc/cpuinfo (Linux) or the platform module elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace") if cpuinfo.is_file() else "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return CpuInfo(model or platform.processor() or platform.machine(), flags, cores)


@dataclass(frozen=True)
class MachineInfo:
    """The CPU plus what else a measured speed depends on: memory, load, platform, library versions."""

    cpu: CpuInfo
    architecture: str
    logical_cores: int
    memory_bytes: int | None
    load_average: tuple[float, float, float] | None
    system: str
    python: str
    versions: dict[str, str]

    @property
    def lacking(self) -> tuple[str, ...] | None:
        """The inference flags of its architecture the CPU does not have (None: its flags were not read)."""
        if not self.cpu.flags:
            return None
        arm = self.architecture.lower() in ("aarch64", "arm64")
        return tuple(f for f in (ARM_INFERENCE_FLAGS if arm else INFERENCE_FLAGS) if not self.cpu.has(f))

    def summary(self) -> str:
        """One line naming the CPU, its instruction sets, what it lacks and the cores."""
        lacking = f"; lacks {', '.join(self.lacking)}" if self.lacking else ""
        return f"{self.cpu.describe()}{lacking}; {self.logical_cores} logical cores, {self.architecture}"

    def to_dict(self) -> dict:
        return {**asdict(self), "lacking": self.lacking, "cpu": {**asdict(self.cpu), "kind": self.cpu.kind}}


def describe_machine() -> MachineInfo:
    """This machine now (the load average is read at each call)."""
    return MachineInfo(
        cpu=cpu_info(),
        architecture=platform.machine() or "unknown",
        logical_cores=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        load_average=tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
        system=platform.platform(),
        python=platform.python_version(),
        versions=_versions(("numpy", "onnxruntime", "openvino", "faiss-cpu")),
    )


def _memory_bytes() -> int | None:
    if _MEMINFO.is_file():
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
