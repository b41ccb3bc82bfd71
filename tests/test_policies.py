"""Mixed-precision policies (spec MP): every policy adapter is its plain sibling's adapter with what the
policy keeps in float32 declared, and the behaviours its declarations rest on, measured."""

from __future__ import annotations

import numpy as np
import pytest

from normconf import adapters
from normconf.adapters.base import POLICIES

POLICY_ADAPTERS = [n for n in adapters.names() if adapters.get(n).policy is not None]


@pytest.mark.clause("MP.P1")
@pytest.mark.parametrize("name", POLICY_ADAPTERS)
def test_a_policy_adapter_declares_its_policy_beside_its_plain_sibling(name):
    adapter = adapters.get(name)
    plain, _, policy = name.partition("@")
    assert policy == adapter.policy.name and adapter.policy.name in POLICIES
    assert adapter.policy.source.startswith("https://") and adapter.policy.mechanism
    sibling = adapters.get(plain)
    for norm, declaration in adapter.declarations.items():
        assert norm in sibling.declarations, f"{name} runs {norm}, which {plain} does not"
        assert declaration.parameters == "float32"
        assert declaration.dtypes and set(declaration.dtypes) <= {"float16", "bfloat16"}
        assert set(declaration.output.values()) <= {"float16", "bfloat16", "float32"}


@pytest.mark.clause("MP.D1")
@pytest.mark.parametrize("module", ["BatchNorm1d", "InstanceNorm1d", "LayerNorm", "GroupNorm", "RMSNorm"])
def test_torch_cpu_autocast_leaves_the_norms_alone(module):
    """The same bits, dtype and parameter-gradient dtype with and without torch.autocast on the CPU."""
    torch = pytest.importorskip("torch")
    args = {"LayerNorm": (5,), "RMSNorm": (5,), "GroupNorm": (3, 6)}.get(module, (6,))
    kwargs = {"affine": True, "track_running_stats": True} if module == "InstanceNorm1d" else {}
    x = torch.tensor(np.random.default_rng(0).normal(size=(4, 6, 5))).to(torch.bfloat16)
    answers = []
    for enabled in (False, True):
        torch.manual_seed(0)
        layer = getattr(torch.nn, module)(*args, **kwargs).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            y = layer(x)
        y.float().sum().backward()
        answers.append((y.dtype, y.detach().float().numpy(), {p.grad.dtype for p in layer.parameters()}))
    (dtype, y, grads), (dtype_auto, y_auto, grads_auto) = answers
    assert dtype == dtype_auto == torch.bfloat16 and grads == grads_auto == {torch.float32}
    np.testing.assert_array_equal(y, y_auto)
