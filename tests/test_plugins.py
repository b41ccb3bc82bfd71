"""The plug-in protocol: declaring a function, loading it from a file, a module or an entry point,
and bad plug-ins refused with a message that says what is wrong."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from normconf import adapters
from normconf import reference as R
from normconf.adapters import plugin
from normconf.adapters.base import Unsupported
from normconf.vocabulary.tolerances import reference_budget, relative_error

LAYER_NORM = """
import numpy as np
from normconf.adapters.plugin import implementation

@implementation("layer_norm", dtypes=("float64",))
def layer_norm(x, *, eps, scale=None):
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y if scale is None else y * scale
"""


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "my_norms.py"
    path.write_text(textwrap.dedent(LAYER_NORM))
    return path


def test_a_parameter_the_function_lacks_is_fixed_at_its_canonical_value(source):
    adapter = plugin.load(str(source))
    declaration = adapter.declarations["layer_norm"]
    assert declaration.fixed() == {"axes": (-1,)}  # no `axes` parameter: the last axis only
    assert declaration.defaults()["eps"] == 1e-5 and not declaration.gradients and not declaration.stateful
    x = np.random.default_rng(0).normal(size=(2, 5))
    y = adapter.run("layer_norm", x, {"axes": (1,), "eps": 1e-3}, dtype="float64").y  # axis 1 of rank 2 is -1
    assert relative_error(y, R.layer_norm(x, axes=(-1,), eps=1e-3)) <= reference_budget(5)
    with pytest.raises(Unsupported, match="takes no axes"):
        adapter.run("layer_norm", x, {"axes": (0,), "eps": 1e-3}, dtype="float64")
    with pytest.raises(Unsupported, match="takes no offset"):
        adapter.run("layer_norm", x, {"axes": (-1,), "eps": 1e-3, "offset": np.ones(5)}, dtype="float64")


def test_undeclared_divisor_conventions_are_refused_and_declared_ones_handed_on(source):
    adapter = plugin.load(str(source))
    with pytest.raises(Unsupported, match="eps_placement"):
        adapter.run("layer_norm", np.ones((2, 3)), {"eps_placement": "outside_sqrt"}, dtype="float64")
    outside = plugin.implementation("layer_norm", conventions={"eps_placement": "outside_sqrt"})(
        lambda x, *, eps: x
    )
    assert (
        plugin.as_adapter(outside, "t").declarations["layer_norm"].fixed()["eps_placement"] == "outside_sqrt"
    )


def test_loading_by_file_object_and_module(source, monkeypatch):
    assert set(plugin.load(f"{source}:layer_norm").declarations) == {"layer_norm"}
    monkeypatch.syspath_prepend(str(source.parent))
    assert plugin.load("my_norms:layer_norm").name == "my_norms:layer_norm"
    assert adapters.get(f"{source}").declarations["layer_norm"].api == "layer_norm"


@pytest.mark.parametrize(
    "text, spec_tail, message",
    [
        ("x = 1\n", "", "defines no @implementation"),
        ("x = 1\n", ":x", "is a int, not an @implementation"),
        (LAYER_NORM, ":nothing", "has no 'nothing'"),
        ("raise RuntimeError('boom')\n", "", "importing it raised RuntimeError: boom"),
        (
            LAYER_NORM
            + LAYER_NORM.replace("def layer_norm", "def other_norm").split(
                "from normconf.adapters.plugin import implementation"
            )[1],
            "",
            "two implementations of layer_norm",
        ),
        (
            "from normconf.adapters.plugin import implementation\n"
            "@implementation('rms_norm')\ndef rms(x, *, scale=None):\n    return x\n",
            "",
            "takes no eps and the spec has no default",
        ),
    ],
)
def test_bad_plugins_are_refused_with_the_reason(tmp_path, text, spec_tail, message):
    path = tmp_path / f"bad_{abs(hash(text + spec_tail))}.py"
    path.write_text(text)
    with pytest.raises(plugin.PluginError, match=message):
        plugin.load(f"{path}{spec_tail}")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"norm": "layernorm"}, "not one of"),
        ({"dtypes": ("float8",)}, "dtypes"),
        ({"conventions": {"epsilon": 1e-3}}, "not a canonical parameter"),
        ({"arrays": "cupy"}, "arrays"),
        ({"policy": "amp"}, "policy"),
        ({"policy": "mixed", "dtypes": ("float32",)}, "half-precision activations"),
        ({"output": {"bfloat16": "float32"}}, "mixed policy"),
    ],
)
def test_bad_declarations_name_the_argument(kwargs, message):
    options = {"norm": "layer_norm", **kwargs}
    norm = options.pop("norm")
    with pytest.raises(ValueError, match=message):
        plugin.implementation(norm, **options)(lambda x, *, eps: x)


def test_a_full_adapter_without_a_runner_is_refused():
    class Incomplete(adapters.Adapter):
        name = "incomplete"
        declarations = {
            "layer_norm": adapters.NormDeclaration(
                norm="layer_norm", api="f", dtypes=("float32",), conventions=()
            )
        }

    with pytest.raises(plugin.PluginError, match="no _run_layer_norm"):
        plugin.as_adapter(Incomplete, "incomplete")


def test_an_installed_entry_point_is_an_adapter(tmp_path, monkeypatch, source):
    (tmp_path / "my_norms_dist-1.0.dist-info").mkdir()
    (tmp_path / "my_norms_dist-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-norms-dist\nVersion: 1.0\n"
    )
    (tmp_path / "my_norms_dist-1.0.dist-info" / "entry_points.txt").write_text(
        "[normconf.adapters]\nmy-layer-norm = my_norms:layer_norm\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "my-layer-norm" in adapters.names()
    assert set(plugin.load_entry_point("my-layer-norm").declarations) == {"layer_norm"}


def test_torch_arrays_give_gradients_from_autograd():
    pytest.importorskip("torch")
    impl = plugin.implementation("rms_norm", arrays="torch", dtypes=("float64",))(
        lambda x, *, eps, scale=None: (
            x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * (1 if scale is None else scale)
        )
    )
    adapter = plugin.as_adapter(impl, "torch-rms")
    rng = np.random.default_rng(1)
    x, g, scale = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=4)
    out = adapter.run("rms_norm", x, {"eps": 1e-6, "scale": scale}, dtype="float64", cotangent=g)
    want = R.rms_norm_vjp(g, x, eps=1e-6, scale=scale)
    assert relative_error(out.grads.x, want.x) <= reference_budget(4)
    assert relative_error(out.grads.scale, want.scale) <= reference_budget(12)
    assert sys.modules.get("torch") is not None


# --- what a plug-in does not take (issue: real libraries through normconf check) -------------------


def test_a_misspelt_keyword_is_refused_at_load_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"requires 'epsilon', not a parameter of layer_norm.*axes, eps"):
        plugin.implementation("layer_norm")(lambda x, *, epsilon: x)
    plugin.implementation("layer_norm")(lambda x, *, eps, fused=False: x)  # never passed: it may stay
    plugin.implementation("layer_norm")(lambda x, **kwargs: x)  # **kwargs takes whatever it is passed


def test_declared_refusals_are_unsupported_with_one_reason_and_the_rest_runs():
    @plugin.implementation("batch_norm", dtypes=("float64",), refuses={"momentum": [None]})
    def batch_norm(x, *, eps, momentum, training, state=None):
        return (x - x.mean(0)) / np.sqrt(x.var(0) + eps), state

    adapter = plugin.as_adapter(batch_norm, "float_momentum")
    x = np.random.default_rng(0).normal(size=(4, 3))
    state = R.RunningStats.initial(3)
    with pytest.raises(
        Unsupported, match=r"refuses momentum=None \(declared: refuses=\{'momentum': \[None\]\}\)"
    ):
        adapter.run("batch_norm", x, {"momentum": None, "training": True, "state": state}, dtype="float64")
    adapter.run("batch_norm", x, {"momentum": 0.1, "training": True, "state": state}, dtype="float64")
    with pytest.raises(ValueError, match="refuses: 'epsilon' is not a parameter"):
        plugin.implementation("batch_norm", refuses={"epsilon": [0.0]})(batch_norm.fn)


def test_axes_are_compared_modulo_the_rank_and_unsupported_reasons_print_no_array():
    @plugin.implementation("channel_normalize", dtypes=("float64",), conventions={"channel_axis": -3})
    def normalize(x, *, mean, std):
        shape = [1] * x.ndim
        shape[-3] = -1
        return (x - mean.reshape(shape)) / std.reshape(shape)

    adapter = plugin.as_adapter(normalize, "tv")
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    params = {"mean": np.zeros(3), "std": np.ones(3), "channel_axis": 1}  # 1 is -3 of a rank-4 input
    assert np.array_equal(adapter.run("channel_normalize", x, params, dtype="float64").y, x)

    @plugin.implementation("layer_norm", dtypes=("float64",))
    def no_offset(x, *, axes, eps, scale=None):
        return x

    with pytest.raises(Unsupported) as refused:
        plugin.as_adapter(no_offset, "o").run(
            "layer_norm", x, {"axes": (-1,), "eps": 1e-5, "offset": np.ones(5)}, dtype="float64"
        )
    assert str(refused.value) == (
        "test_axes_are_compared_modulo_the_rank_and_unsupported_reasons_print_no_array.<locals>.no_offset "
        "takes no offset: examples that draw offset are not run (the others are judged)"
    )


WRAPS_TORCH = """
import torch.nn.functional as F
from normconf.adapters.plugin import implementation

@implementation("layer_norm", arrays="torch", dtypes=("float16", "float32"), wraps={wraps!r})
def layer_norm(x, *, eps, scale=None, offset=None):
    return F.layer_norm(x, x.shape[-1:], scale, offset, eps)
"""


@pytest.mark.clause("LN.D5")
def test_a_plugin_built_on_a_framework_function_is_judged_by_its_models(tmp_path):
    """A thin wrapper of F.layer_norm computes torch's arithmetic: with wraps="torch.functional" that
    adapter's modelled divergences are candidates for it (its models still judge), without it none."""
    pytest.importorskip("torch")
    from normconf.conformance import divergences

    entries = [
        e
        for e in divergences.KNOWN
        if e.norm == "layer_norm" and e.names("torch.functional") and e.clause != "NUM.D1"
    ]
    assert entries
    for wraps in ("torch.functional", None):
        path = tmp_path / f"wrapped_{wraps is not None}.py"
        path.write_text(WRAPS_TORCH.format(wraps=wraps))
        for entry in entries:
            case, dtype = entry.example()
            found = divergences.candidates(str(path), "layer_norm", case, dtype)
            assert (entry in found) == (wraps is not None), (entry.clause, wraps)
    with pytest.raises(
        ValueError, match="wraps: 'torch.nn.LayerNorm' is not a built-in adapter of layer_norm"
    ):
        plugin.implementation("layer_norm", wraps="torch.nn.LayerNorm")(lambda x, *, eps: x)


# --- a plug-in under a mixed-precision policy (spec MP) -------------------------------------------------


def _mixed_layer_norm(statistics: str, output: str = "bfloat16", received: list | None = None):
    """LayerNorm on bfloat16 x with float32 scale/offset, statistics taken in `statistics` (declared
    float32, as the policy's users expect), out in `output`."""
    import ml_dtypes

    def fn(x, *, axes, eps, scale=None, offset=None):
        if received is not None:
            received.append((x.dtype.name, None if scale is None else scale.dtype.name))
        acc = np.dtype(ml_dtypes.bfloat16) if statistics == "bfloat16" else np.dtype(statistics)
        xs = x.astype(acc)
        mean = xs.mean(axis=axes, keepdims=True, dtype=acc)
        var = ((xs - mean) * (xs - mean)).mean(axis=axes, keepdims=True, dtype=acc)
        y = ((xs - mean) / np.sqrt(var + acc.type(eps))).astype(np.float32)
        y = y * (1 if scale is None else scale) + (0 if offset is None else offset)
        return y.astype(ml_dtypes.bfloat16 if output == "bfloat16" else output)

    declared = {} if output == "bfloat16" else {"bfloat16": output}
    return plugin.implementation(
        "layer_norm",
        dtypes=("bfloat16",),
        policy="mixed",
        accumulation={"bfloat16": "float32"},
        output=declared,
    )(fn)


@pytest.mark.clause("MP.P1", "MP.N1", "MP.N2")
def test_a_mixed_policy_plugin_is_judged_as_the_frameworks_policy_adapters_are():
    """It gets float32 parameters beside bfloat16 x; its declared output dtype is the protocol; a
    textbook float32-statistics LayerNorm meets MP.N1's budget, and one that takes them in bfloat16
    while it declares float32 fails (10^3 values of mean 3 and spread 0.01: bfloat16 loses the spread)."""
    from normconf.conformance import checks

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 0.01, size=(2, 1000)).astype(np.float32).astype(np.float64)
    import ml_dtypes

    x = x.astype(ml_dtypes.bfloat16).astype(np.float64)
    params = {"axes": (-1,), "eps": 1e-5, "scale": rng.normal(size=1000), "offset": rng.normal(size=1000)}
    params = {**params, "scale": params["scale"].astype(np.float32).astype(np.float64)}
    want = R.layer_norm(x, **params)
    received: list = []
    verdicts = {}
    for statistics in ("float32", "bfloat16"):
        adapter = plugin.as_adapter(_mixed_layer_norm(statistics, received=received), f"mixed-{statistics}")
        assert (
            adapter.policy_name == "mixed" and adapter.parameter_dtype("layer_norm", "bfloat16") == "float32"
        )
        out = adapter.run("layer_norm", x, params, dtype="bfloat16")
        assert out.dtype == "bfloat16"
        budget = checks.budget(
            "layer_norm", x, params, want, **adapter.declarations["layer_norm"].budget_dtypes("bfloat16")
        )
        verdicts[statistics] = checks.check(
            "LN.S1", adapter.name, "layer_norm", "bfloat16", "y", out.y, want, budget, {}
        )
    assert received[0] == ("bfloat16", "float32")
    assert verdicts["float32"].passed and not verdicts["bfloat16"].passed, verdicts["bfloat16"].message()
    wide = plugin.as_adapter(_mixed_layer_norm("float32", output="float32"), "mixed-wide")
    assert wide.run("layer_norm", x, params, dtype="bfloat16").dtype == "float32"  # as declared (MP.N2)
    undeclared = plugin.implementation("layer_norm", dtypes=("bfloat16",), policy="mixed")(
        lambda x, *, axes, eps: x.astype(np.float32)
    )
    with pytest.raises(plugin.ProtocolError, match="returned float32 for a bfloat16 input"):
        plugin.as_adapter(undeclared, "undeclared").run(
            "layer_norm", x, {"axes": (-1,), "eps": 1e-5}, dtype="bfloat16"
        )
