"""NUM.N10: low precision may depend on the CPU. Every result records the CPU and the ISA caps in
force; NORMCONF_MAX_ISA sets each library's cap and a value no library knows is refused before
anything runs; a CPU-dependent known divergence is claimed only where its dependency holds, and the
divergence meta-tests pass with the ISA capped to AVX2 as they do natively (the half-precision cells
of the quick profile run capped too, in tests/test_quick_profile.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normconf import adapters
from normconf.conformance import divergences
from normconf.conformance import results as recorded
from normconf.reports import html, results
from normconf.vocabulary import cpu as _cpu

ROOT = Path(__file__).resolve().parent.parent
SAPPHIRE_RAPIDS = (
    "Intel(R) Xeon(R) Platinum 8480+",
    {
        "fma",
        "f16c",
        "avx2",
        "avx512f",
        "avx512_fp16",
        "avx512_bf16",
        "avx512_vnni",
        "amx_tile",
        "amx_bf16",
        "sse4_2",
    },
)
ZEN4 = ("AMD EPYC 9654", {"fma", "f16c", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
ZEN3 = ("AMD EPYC 7763", {"fma", "f16c", "avx2", "sse4_2"})
CAPPED = {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.fixture
def cpu(monkeypatch):
    """Play a CPU: (model, /proc/cpuinfo flags)."""

    def play(model_and_flags):
        model, flags = model_and_flags
        monkeypatch.setattr(_cpu, "_cpuinfo", lambda: (model, frozenset(flags)))
        monkeypatch.setattr(_cpu.platform, "machine", lambda: "x86_64")

    return play


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _cpu.VARIABLES}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


@pytest.mark.clause("NUM.N10")
def test_max_isa_sets_every_library_cap_and_keeps_other_xla_flags():
    env = {
        "NORMCONF_MAX_ISA": "avx2",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_cpu_max_isa=AMX",
        "ATEN_CPU_CAPABILITY": "avx512",
        "DNNL_MAX_CPU_ISA": "AVX512_CORE",
    }
    assert _cpu.apply_max_isa(env) == "avx2"
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4", "--xla_cpu_max_isa=AVX2"]
    assert (env["ONEDNN_MAX_CPU_ISA"], env["ATEN_CPU_CAPABILITY"], "DNNL_MAX_CPU_ISA" in env) == (
        "AVX2",
        "avx2",
        False,
    )
    assert _cpu.caps(env) == {"xla": "AVX2", "onednn": "AVX2", "aten": "AVX2"}
    env["NORMCONF_MAX_ISA"] = "native"  # the one switch clears caps set by hand
    _cpu.apply_max_isa(env)
    assert _cpu.caps(env) == {} and env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


@pytest.mark.clause("NUM.N10")
def test_caps_set_by_hand_are_read_in_any_spelling():
    assert _cpu.caps({"DNNL_MAX_CPU_ISA": "avx512_core_fp16", "XLA_FLAGS": "--xla_cpu_max_isa=avx512"}) == {
        "onednn": "AVX10_1_512",
        "xla": "AVX512",
    }
    assert _cpu.caps({"ONEDNN_MAX_CPU_ISA": "default", "ATEN_CPU_CAPABILITY": "default"}) == {
        "aten": "DEFAULT"
    }


@pytest.mark.clause("NUM.N10")
@pytest.mark.parametrize(
    "variable, value",
    [
        ("NORMCONF_MAX_ISA", "avx9"),
        ("XLA_FLAGS", "--xla_cpu_max_isa=AVX9"),
        ("ONEDNN_MAX_CPU_ISA", "AVX3"),
        ("ATEN_CPU_CAPABILITY", "sse9"),
    ],
)
def test_an_unknown_cap_is_refused_in_one_line_before_anything_runs(variable, value):
    command = subprocess.run(
        [sys.executable, "-m", "normconf.cli", "adapters"],
        capture_output=True,
        text=True,
        env=_clean_env(**{variable: value}),
        timeout=120,
        cwd=ROOT,
    )
    assert command.returncode == 2 and command.stdout == ""
    [line] = command.stderr.strip().splitlines()
    assert variable in line and ("native, avx2, avx512" in line or "AVX2" in line), line
    # pytest refuses it too: tests/test_devices.py::test_a_bad_choice_is_refused_before_anything_runs


@pytest.mark.clause("NUM.N10")
def test_features_in_force_lose_what_a_cap_takes_away(cpu):
    cpu(SAPPHIRE_RAPIDS)
    assert {"avx512_fp16", "amx", "amx_bf16"} <= _cpu.in_force("xla", {})
    assert _cpu.in_force("xla", {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}) == {"fma", "f16c", "avx2"}
    assert "avx512_fp16" in _cpu.in_force(
        "xla", {"XLA_FLAGS": "--xla_cpu_max_isa=AVX512"}
    )  # XLA keeps it there
    assert "avx512_bf16" not in _cpu.in_force("xla", {"XLA_FLAGS": "--xla_cpu_max_isa=AVX512_VNNI"})
    assert "avx512_fp16" not in _cpu.in_force("onednn", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"})
    assert _cpu.in_force("aten", {"ATEN_CPU_CAPABILITY": "default"}) == {"sse4_2"} & _cpu.features()


@pytest.mark.clause("NUM.N10")
def test_a_cap_at_avx2_takes_away_only_what_the_cpu_has_above_it(cpu):
    """The capped gates are skipped where the cap takes nothing away: there they would compute exactly
    what the native runs judged."""
    cpu(SAPPHIRE_RAPIDS)
    assert {"avx512f", "avx512_fp16", "amx"} <= _cpu.cap_takes_away("avx2")
    assert "avx512f" not in _cpu.cap_takes_away("avx512") and "amx" in _cpu.cap_takes_away("avx512")
    cpu(ZEN4)
    assert _cpu.cap_takes_away("avx2") == {"avx512f", "avx512_bf16", "avx512_vnni"}
    cpu(ZEN3)
    assert _cpu.cap_takes_away("avx2") == frozenset() == _cpu.cap_takes_away("native")
    cpu(("Intel(R) Core(TM) i9-12900K", {"fma", "f16c", "avx2", "avx_vnni"}))
    assert _cpu.cap_takes_away("avx2") == {"avx_vnni"}  # oneDNN's AVX2_VNNI level


@pytest.mark.clause("NUM.N10", "LN.D10")
def test_a_cpu_dependent_divergence_is_claimed_only_where_it_holds(cpu, monkeypatch):
    [entry] = [
        e for e in divergences.KNOWN if e.cpu is not None and e.adapters == "haiku" and e.norm == "batch_norm"
    ]
    case, dtype = entry.example()
    for host, env, claimed in (
        (SAPPHIRE_RAPIDS, {}, False),
        (SAPPHIRE_RAPIDS, CAPPED, True),
        (ZEN4, {}, True),
    ):
        cpu(host)
        for variable in _cpu.VARIABLES:
            monkeypatch.delenv(variable, raising=False)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        assert entry.holds_here() is claimed, (host[0], env)
        assert entry.matches("haiku", "batch_norm", case, dtype) is claimed, (host[0], env)


@pytest.mark.clause("NUM.N10")
def test_every_environment_record_names_the_cpu_and_merged_hosts_get_their_own_rows(
    cpu, monkeypatch, tmp_path
):
    class Plain(adapters.Adapter):
        name = "plain"

        def environment(self):
            return {"adapter": self.name, "framework": "numpy", "version": np.__version__, "device": "cpu"}

    paths = []
    for host, env in ((ZEN4, {}), (ZEN4, CAPPED), (SAPPHIRE_RAPIDS, {})):
        cpu(host)
        for variable, value in {**dict.fromkeys(CAPPED, ""), **env}.items():
            monkeypatch.setenv(variable, value)
        paths.append(tmp_path / f"run{len(paths)}.jsonl")
        recorder = recorded.Recorder(paths[-1], profile="quick", seed=0)
        recorder.environment(Plain())
        recorder.unavailable("absent", "not installed here")
        recorder._result(
            {
                "test": "t",
                "adapter": "plain",
                "norm": "layer_norm",
                "dtype": "float16",
                "property": "forward",
                "verdict": "pass",
                "examples": 1,
                "unsupported": {},
            }
        )
        recorder.finish(0)
    runs = results.load(paths)  # the schema accepts the cpu object
    for run, (host, env) in zip(runs, ((ZEN4, {}), (ZEN4, CAPPED), (SAPPHIRE_RAPIDS, {})), strict=True):
        for adapter in ("plain", "absent"):
            recorded_cpu = run.environments[adapter]["cpu"]
            assert recorded_cpu["model"] == host[0] and set(recorded_cpu["features"]) <= set(
                _cpu.FEATURES.values()
            )
            assert recorded_cpu["caps"] == ({"xla": "AVX2", "onednn": "AVX2", "aten": "AVX2"} if env else {})
    assert "avx512_fp16" in runs[2].environments["plain"]["cpu"]["features"]
    labels = set(results.implementations(runs).values())
    assert len(labels) == 3 and any("capped" in label and "AMD EPYC 9654" in label for label in labels), (
        labels
    )
    page = html.build(runs)
    assert "Intel(R) Xeon(R) Platinum 8480+; avx512f, avx512_fp16, avx512_bf16, amx" in page
    assert "capped aten=AVX2, onednn=AVX2, xla=AVX2" in page


@pytest.mark.clause("NUM.N10")
def test_torch_reports_the_capped_kernels():
    """ATEN_CPU_CAPABILITY takes effect: torch itself says it dispatches to its AVX2 kernels."""
    if "avx2" not in _cpu.features() or not adapters.get("torch.nn").available()[0]:
        pytest.skip("needs an AVX2 CPU and torch")
    code = (
        "import json\nfrom normconf.vocabulary import cpu as _cpu\n_cpu.apply_max_isa()\n"
        "from normconf import adapters\n"
        "print(json.dumps(adapters.get('torch.nn').environment(), default=str))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_clean_env(NORMCONF_MAX_ISA="avx2"),
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["aten_cpu_capability"] == "AVX2"


@pytest.mark.clause("NUM.N10")
@pytest.mark.skipif(bool(os.environ.get("NORMCONF_SKIP_SUITE")), reason="NORMCONF_SKIP_SUITE is set")
def test_divergence_meta_tests_pass_with_the_isa_capped_to_avx2():
    if "avx2" not in _cpu.features():
        pytest.skip("this CPU has no AVX2 to cap at")
    if not _cpu.cap_takes_away("avx2"):  # conformance/meta ran natively in this session: the same run
        pytest.skip(f"nothing above AVX2 here ({', '.join(sorted(_cpu.features()))}): capped = native")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "conformance/meta/test_divergences.py",
        ],
        capture_output=True,
        text=True,
        env=_clean_env(NORMCONF_MAX_ISA="avx2"),
        timeout=1800,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout.strip().splitlines()[-1]


_UNCAPPED_RUN = """
import json, sys
import numpy as np
from normconf.vocabulary import cpu as _cpu
_cpu.apply_max_isa()
from normconf import adapters
adapter = adapters.get(sys.argv[1])
out = {}
for norm, declaration in sorted(adapter.declarations.items()):
    for dtype in ("float16", "bfloat16"):
        if dtype not in declaration.dtypes:
            continue
        x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)) * 7.0
        try:
            out[f"{norm} {dtype}"] = adapter.run(norm, x, {}, dtype=dtype).y.tolist()
        except Exception as exc:  # a call that needs parameters: its refusal, the same in both runs
            out[f"{norm} {dtype}"] = type(exc).__name__
print(json.dumps(out))
"""


def _uncapped_half_adapters() -> list[str]:
    """Installed built-in adapters no ISA cap reaches that take a half-precision input somewhere."""
    return [
        name
        for name in adapters.built_in()
        if not adapters.get(name).isa_capped
        and adapters.get(name).available()[0]
        and any({"float16", "bfloat16"} & set(d.dtypes) for d in adapters.get(name).declarations.values())
    ]


@pytest.mark.clause("NUM.N10")
@pytest.mark.parametrize("name", _uncapped_half_adapters())
def test_an_adapter_no_cap_reaches_computes_the_same_capped(name):
    """The AVX2 gate leaves out adapters no ISA cap reaches (Adapter.isa_capped empty): their
    half-precision answers under NORMCONF_MAX_ISA=avx2 are bit for bit the native ones."""
    if "avx2" not in _cpu.features():
        pytest.skip("this CPU has no AVX2 to cap at")

    def answers(**env):
        done = subprocess.run(
            [sys.executable, "-c", _UNCAPPED_RUN, name],
            capture_output=True,
            text=True,
            env=_clean_env(**env),
            timeout=300,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    native, capped = answers(), answers(NORMCONF_MAX_ISA="avx2")
    assert native and any(isinstance(v, list) for v in native.values())
    assert capped == native
