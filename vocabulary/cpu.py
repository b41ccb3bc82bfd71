"""The CPU the frameworks compute on, the instruction-set features that change their low-precision
numerics, and the ISA caps in force (spec/numerics.md NUM.N10).

A framework picks its kernels by the CPU it finds: XLA computes float16 natively where the CPU has
AVX512-FP16, oneDNN (TensorFlow, Paddle) and ATen (PyTorch) dispatch to AVX2 / AVX-512 / AMX code
that sums in other orders and widths. Each library has its own switch to play an older CPU, and
`NORMCONF_MAX_ISA` sets all three at once, before any framework is imported:

    NORMCONF_MAX_ISA=avx2   ->  XLA_FLAGS=--xla_cpu_max_isa=AVX2  ONEDNN_MAX_CPU_ISA=AVX2
                                ATEN_CPU_CAPABILITY=avx2

Every result's environment records `describe()`: the CPU model, its numerics-relevant features and
the caps in force, so results from two hosts (or one host playing two) are told apart, and a known
divergence that depends on the CPU is claimed only where its dependency holds (`CpuDependency`).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from functools import lru_cache

MAX_ISA_ENV = "NORMCONF_MAX_ISA"

# /proc/cpuinfo flag -> the feature name normconf records. x86: wider vectors and native half-precision
# arithmetic; ARM (the "Features" line): NEON, SVE, half-precision arithmetic.
FEATURES = {
    "fma": "fma",
    "f16c": "f16c",
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512_fp16": "avx512_fp16",
    "avx512_bf16": "avx512_bf16",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx_tile": "amx",
    "amx_bf16": "amx_bf16",
    "amx_fp16": "amx_fp16",
    "asimd": "neon",
    "sve": "sve",
    "sve2": "sve2",
    "asimdhp": "fp16",
    "bf16": "bf16",
}

# Each library's own cap switch and the levels it accepts, oldest first: a cap at one level takes away the
# features listed for the levels above it. Read from the libraries' sources (spec/numerics.md NUM.N10):
#   XLA --xla_cpu_max_isa: ShouldEnableX86CpuFeature drops avx512* (avx512fp16 included) at AVX2 and below,
#     avx512vnni above AVX512, avx512bf16 above AVX512_VNNI, amx* above AVX512_BF16; an unknown value is
#     only logged there, so it is refused here.
#   oneDNN ONEDNN_MAX_CPU_ISA (also read as DNNL_MAX_CPU_ISA; an unknown value is silently ignored there).
#   ATen ATEN_CPU_CAPABILITY: which DispatchStub kernels run (an unknown value is only warned about there).
LEVELS = {
    "xla": (
        ("SSE4_2", ()),
        ("AVX", ()),
        ("AVX2", ("avx2", "fma", "f16c")),
        ("AVX512", ("avx512f", "avx512_fp16")),
        ("AVX512_VNNI", ("avx512_vnni",)),
        ("AVX512_BF16", ("avx512_bf16",)),
        ("AMX", ("amx", "amx_bf16")),
        ("AMX_FP16", ("amx_fp16",)),
        ("AMX_FP8", ()),
    ),
    "onednn": (
        ("SSE41", ()),
        ("AVX", ()),
        ("AVX2", ("avx2", "fma", "f16c")),
        ("AVX2_VNNI", ("avx_vnni",)),
        ("AVX2_VNNI_2", ()),
        ("AVX512_CORE", ("avx512f",)),
        ("AVX512_CORE_VNNI", ("avx512_vnni",)),
        ("AVX512_CORE_BF16", ("avx512_bf16",)),
        ("AVX10_1_512", ("avx512_fp16",)),
        ("AVX10_1_512_AMX", ("amx", "amx_bf16")),
        ("AVX10_1_512_AMX_FP16", ("amx_fp16",)),
    ),
    "aten": (
        ("DEFAULT", ()),
        ("AVX2", ("avx2", "fma", "f16c")),
        ("AVX512", ("avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx", "amx_bf16", "amx_fp16")),
    ),
}
ARM_LEVELS = {"xla": (("NEON", ("neon", "fp16", "bf16")), ("SVE", ("sve",)), ("SVE2", ("sve2",)))}
ALIASES = {
    "onednn": {
        "AVX512_CORE_FP16": "AVX10_1_512",
        "AVX512_CORE_AMX": "AVX10_1_512_AMX",
        "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16",
        "DEFAULT": "",
    }
}
SWITCHES = {"xla": "XLA_FLAGS", "onednn": "ONEDNN_MAX_CPU_ISA", "aten": "ATEN_CPU_CAPABILITY"}
OLD_NAMES = {"onednn": "DNNL_MAX_CPU_ISA"}  # read by oneDNN where the new name is unset
VARIABLES = (MAX_ISA_ENV, *SWITCHES.values(), *OLD_NAMES.values())  # what a child process must inherit
SOURCES = {
    "xla": "https://github.com/openxla/xla/blob/2b1643c60790bcc02471af47144eec4a4ce470a9/xla/backends/cpu/codegen/"
    "cpu_features.cc#L78-L180",
    "onednn": "https://github.com/oneapi-src/oneDNN/blob/v3.7.1/doc/performance_considerations/dispatcher_control.md",
    "aten": "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/DispatchStub.cpp",
}

# NORMCONF_MAX_ISA -> the level it sets in each library ("native": none; each library sees the whole CPU)
CAPS = {
    "native": {},
    "avx2": {"xla": "AVX2", "onednn": "AVX2", "aten": "AVX2"},
    "avx512": {"xla": "AVX512", "onednn": "AVX512_CORE", "aten": "AVX512"},
}
_XLA_FLAG = re.compile(r"--xla_cpu_max_isa=(\S*)")


class IsaCapError(ValueError):
    """An ISA cap that no library accepts: refused before anything runs."""


def _levels(library: str) -> tuple:
    """The library's levels for this machine's architecture."""
    arm = platform.machine().lower() in ("aarch64", "arm64")
    return ARM_LEVELS.get(library, LEVELS[library]) if arm else LEVELS[library]


def _level_names(library: str) -> list[str]:
    return [name for name, _ in (*LEVELS[library], *ARM_LEVELS.get(library, ()))]


def apply_max_isa(environ=os.environ) -> str:
    """Set each library's switch from NORMCONF_MAX_ISA (before a framework is imported; children
    inherit it) and check every cap in force; returns the NORMCONF_MAX_ISA value ("" when unset)."""
    wanted = environ.get(MAX_ISA_ENV, "").strip().lower()
    if wanted and wanted not in CAPS:
        raise IsaCapError(f"{MAX_ISA_ENV}={wanted!r}: must be one of {', '.join(CAPS)}")
    caps(environ)  # a malformed cap set by hand is refused even where NORMCONF_MAX_ISA replaces it
    if wanted:  # the one switch replaces whatever caps were set by hand ("native": none at all)
        others = _XLA_FLAG.sub("", environ.get("XLA_FLAGS", "")).split()
        environ["XLA_FLAGS"] = " ".join(others)
        for variable in (*SWITCHES.values(), *OLD_NAMES.values()):
            if variable != "XLA_FLAGS":
                environ.pop(variable, None)
    for library, level in CAPS.get(wanted, {}).items():
        if library == "xla":
            environ["XLA_FLAGS"] = " ".join([*environ["XLA_FLAGS"].split(), f"--xla_cpu_max_isa={level}"])
        else:
            environ[SWITCHES[library]] = level.lower() if library == "aten" else level
    return wanted


def caps(environ=os.environ) -> dict[str, str]:
    """{library: level} for every library whose cap is set (levels in the library's spelling, upper case)."""
    found = {}
    for library, variable in SWITCHES.items():
        text = environ.get(variable, "") or environ.get(OLD_NAMES.get(library, ""), "")
        value = (m.group(1) if (m := _XLA_FLAG.search(text)) else "") if library == "xla" else text
        if value.strip():
            level = value.strip().upper()
            level = ALIASES.get(library, {}).get(level, level)
            if not level:  # oneDNN's DEFAULT: no cap
                continue
            if level not in _level_names(library):
                raise IsaCapError(
                    f"{variable}: {value.strip()!r} is not a level {library} knows; "
                    f"one of {', '.join(_level_names(library))}"
                )
            found[library] = level
    return found


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, every flag) from /proc/cpuinfo; elsewhere the platform's processor string and no flags."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model", "hardware") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, frozenset(flags)


def cap_takes_away(max_isa: str) -> frozenset[str]:
    """The features NORMCONF_MAX_ISA=`max_isa` takes from some library on this CPU: none means a run
    capped so computes exactly what a native run does (every library already sees no more than it)."""
    capped = dict(os.environ)
    for variable in VARIABLES:
        capped.pop(variable, None)
    capped[MAX_ISA_ENV] = max_isa
    apply_max_isa(capped)
    return frozenset().union(*(features() - in_force(library, capped) for library in SWITCHES))


def features() -> frozenset[str]:
    """The CPU's numerics-relevant features (FEATURES' names), whatever the caps."""
    return frozenset(FEATURES[f] for f in _cpuinfo()[1] if f in FEATURES)


def in_force(library: str, environ=os.environ) -> frozenset[str]:
    """The features `library` may use here: the CPU's, less those above its cap."""
    level = caps(environ).get(library)
    if level is None:
        return features()
    levels = _levels(library)
    names = [name for name, _ in levels]
    if level not in names:  # a level of another architecture: it caps nothing here
        return features()
    return features() - {f for _, fs in levels[names.index(level) + 1 :] for f in fs}


def describe(environ=os.environ) -> dict:
    """What an environment record holds about the CPU."""
    return {
        "model": _cpuinfo()[0],
        "arch": platform.machine(),
        "features": sorted(features()),
        "caps": caps(environ),
    }


def summary(cpu: dict | None) -> str:
    """One line for a report: model, the half-precision features, the caps
    ("AMD EPYC; avx512_bf16; capped xla=AVX2")."""
    if not cpu:
        return ""
    half = [
        f
        for f in ("avx512_fp16", "avx512_bf16", "amx", "amx_fp16", "sve", "fp16", "bf16")
        if f in cpu.get("features", ())
    ]
    widest = next((f for f in ("avx512f", "avx2", "sve", "neon") if f in cpu.get("features", ())), "")
    parts = [
        cpu.get("model", "?"),
        ", ".join(p for p in [widest, *half] if p) or "no vector features recorded",
    ]
    if cpu.get("caps"):
        parts.append("capped " + ", ".join(f"{k}={v}" for k, v in sorted(cpu["caps"].items())))
    return "; ".join(parts)


@dataclass(frozen=True)
class CpuDependency:
    """A divergence that occurs only where `library` has (`present=True`) or lacks (`present=False`) the
    CPU feature `feature` in force, and, with `on_cpu` set, only where the CPU itself has (or lacks) it
    whatever the caps (a framework that picks a kernel by the CPU while the library runs it capped).
    The known divergence is claimed, and checked, only where this holds; elsewhere the adapter must
    conform (NUM.N10)."""

    library: str  # "xla", "onednn", "aten"
    feature: str  # a FEATURES name: "avx512_fp16"
    present: bool
    on_cpu: bool | None = None

    def holds(self, environ=os.environ) -> bool:
        on_cpu = self.on_cpu is None or (self.feature in features()) == self.on_cpu
        return on_cpu and (self.feature in in_force(self.library, environ)) == self.present

    def describe(self) -> str:
        cpu = "" if self.on_cpu is None else f" on a CPU {'with' if self.on_cpu else 'without'} it"
        return f"{self.library} {'with' if self.present else 'without'} {self.feature} in force{cpu}"
