"""The machine a measurement ran on: CPU model, the instruction sets inference speed depends on,
cores, memory, load and runtime versions — so a report's timings say where they hold.

Read from /proc/cpuinfo on Linux (x86 `flags`, Arm `Features`) by hand: the two lines needed are
simple, and py-cpuinfo, the library for it, starts a subprocess and takes about a second. Elsewhere
the CPU is named by `platform` and its instruction sets are reported as unknown.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

# The instruction sets CPU inference speed depends on, in the order a reader compares them.
X86_FEATURES = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
ARM_FEATURES = ("asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")
_CPUINFO = Path("/proc/cpuinfo")
_MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class MachineInfo:
    """What a benchmark result depends on besides the model."""

    cpu: str
    architecture: str
    instruction_sets: tuple[str, ...]  # of X86_FEATURES / ARM_FEATURES, those present
    lacking: tuple[str, ...] | None  # those absent; None when the CPU's features could not be read
    logical_cores: int
    physical_cores: int | None
    usable_cores: int  # this process's CPU affinity
    memory_bytes: int | None
    load_average: tuple[float, float, float] | None
    system: str
    python: str
    versions: dict[str, str]

    def summary(self) -> str:
        """One line naming the CPU, its instruction sets and cores, e.g. for a report header."""
        sets = ", ".join(self.instruction_sets) if self.lacking is not None else "instruction sets unknown"
        lacking = f"; lacks {', '.join(self.lacking)}" if self.lacking else ""
        physical = f", {self.physical_cores} physical" if self.physical_cores else ""
        return f"{self.cpu} ({self.architecture}; {sets}{lacking}); {self.usable_cores} usable of {self.logical_cores} logical cores{physical}"

    def to_dict(self) -> dict:
        return asdict(self)


def describe_machine() -> MachineInfo:
    """The machine this process runs on (cheap: a few small files read)."""
    text = _CPUINFO.read_text(errors="replace") if _CPUINFO.is_file() else ""
    cpu, sets, lacking, physical = parse_cpuinfo(text, platform.machine())
    return MachineInfo(
        cpu=cpu or platform.processor() or platform.machine() or "unknown CPU",
        architecture=platform.machine() or "unknown",
        instruction_sets=sets,
        lacking=lacking,
        logical_cores=os.cpu_count() or 1,
        physical_cores=physical,
        usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        load_average=tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
        system=platform.platform(),
        python=platform.python_version(),
        versions=_versions(("xmodal", "numpy", "onnxruntime", "openvino", "faiss-cpu")),
    )


def parse_cpuinfo(
    text: str, architecture: str
) -> tuple[str | None, tuple[str, ...], tuple[str, ...] | None, int | None]:
    """(CPU name, instruction sets present, those absent, physical cores) from /proc/cpuinfo text;
    absent is None when the text lists no features (then nothing is known to be missing)."""
    fields = _cpuinfo_fields(text)
    flags = set(fields.get("flags", fields.get("features", "")).split())
    wanted = ARM_FEATURES if architecture.lower() in ("aarch64", "arm64") else X86_FEATURES
    return (
        fields.get("model name") or fields.get("hardware"),
        tuple(f for f in wanted if f in flags),
        tuple(f for f in wanted if f not in flags) if flags else None,
        fields.get("physical cores"),
    )


def _cpuinfo_fields(text: str) -> dict:
    """The first processor's fields (lower-case keys) plus the count of distinct physical cores."""
    fields: dict = {}
    cores = set()
    physical = core = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        fields.setdefault(key, value)
        if key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores.add((physical, core))
    fields["physical cores"] = len(cores) or None
    return fields


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
