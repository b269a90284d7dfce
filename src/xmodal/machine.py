"""What machine this is: the CPU's model, the instruction sets that matter for inference, the cores.

Benchmarks and reports name the CPU they ran on with this, because the same machine kind comes
with AVX2-only CPUs on some days and AVX-512/AMX ones on others, and int8/bf16 speeds differ by
several times between them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
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


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...]  # those of INFERENCE_FLAGS the CPU has
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


@cache
def cpu_info() -> CpuInfo:
    """The CPU of this machine, read from /proc/cpuinfo (Linux) or the platform module elsewhere."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return CpuInfo(model, tuple(f for f in INFERENCE_FLAGS if f in flags), cores)
