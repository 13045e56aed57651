"""torch.compile over a training step that calls the Mixer (every mode): few graph breaks, no
recompilation per λ, and the compiled mix is the eager one (issue 10, item 6; issue 22, item 6).

Dynamo's graph breaks and recompilations do not depend on the backend, so the tests trace with
``backend="eager"`` (fast); ``benchmarks/bench_compile.py`` times the inductor backend.
"""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from unimix import Mixer, soft_target_cross_entropy

METHODS = ["mixup", "cutmix", "hmix", "gmix"]


def _step_fn(mixer):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 12 * 10, 5))  # fmt: skip

    def step(x, y):
        mixed, targets = mixer(x, y)
        return soft_target_cross_entropy(model(mixed), targets), mixed, targets

    return step


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _breaks_at_most_twice_and_compiles_once(mixer: Mixer, draw) -> None:
    """The step under ``mixer`` has at most two graph breaks, compiles once, and ``draw`` of its
    targets changes from call to call (fresh λ, boxes and centres every call)."""
    x, y = torch.rand(8, 3, 12, 10), torch.arange(8) % 5  # row 0 and its partner differ
    explained = torch._dynamo.explain(_step_fn(mixer))(x, y)
    assert explained.graph_break_count <= 2
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(_step_fn(mixer), backend="eager")
    step(x, y)
    compiled_after_first = counters["frames"]["ok"]
    draws = set()
    for _ in range(49):
        _, _, targets = step(x, y)
        draws.add(draw(targets, y))
    assert len(draws) > 10, "the draws must change from call to call"
    assert counters["frames"]["ok"] - compiled_after_first <= 1


@pytest.mark.parametrize("method", METHODS)
def test_compiled_step_breaks_at_most_twice_and_compiles_once(method):
    mixer = Mixer(method, num_classes=5, generator=torch.Generator().manual_seed(0))
    _breaks_at_most_twice_and_compiles_once(
        mixer, lambda targets, y: round(float(targets[0, y[0]]), 6)
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
def test_compiled_mix_equals_the_eager_mix(method, dtype):
    x = torch.rand(6, 3, 12, 10)
    x = (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
    y = torch.randint(0, 5, (6,))
    eager = Mixer(method, num_classes=5, generator=torch.Generator().manual_seed(3))
    traced = Mixer(method, num_classes=5, generator=torch.Generator().manual_seed(3))
    compiled = torch.compile(lambda a, b: traced(a, b, return_info=True), backend="eager")
    for _ in range(3):
        out_e, t_e, plan = eager(x, y, return_info=True)
        out_c, t_c, _ = compiled(x, y)
        torch.testing.assert_close(
            out_c.float(), out_e.float(), atol=1.0 if dtype == torch.uint8 else 1e-2, rtol=0
        )
        torch.testing.assert_close(t_c, t_e, atol=1e-6, rtol=0)
        # labels weigh the mask actually applied, in the images' dtype
        m = plan.masks.to(x.dtype).float() if x.is_floating_point() else plan.masks
        onehot = torch.nn.functional.one_hot(y, 5).float()
        lam = m.mean()
        torch.testing.assert_close(
            t_c, lam * onehot + (1 - lam) * onehot.flip(0), atol=1e-6, rtol=0
        )


def test_nominal_label_weight_compiles_without_recompiling():
    x, y = torch.rand(8, 3, 12, 10), torch.randint(0, 5, (8,))
    mixer = Mixer(
        "gmix", num_classes=5, label_weight="nominal", generator=torch.Generator().manual_seed(0)
    )
    step = torch.compile(_step_fn(mixer), backend="eager")
    step(x, y)
    first = counters["frames"]["ok"]
    for _ in range(20):
        step(x, y)
    assert counters["frames"]["ok"] - first <= 1


# ---- pair and elem mode (issue 22, item 6): the README's Mixer compiles too ----------------------
README_METHODS = ["mixup", "cutmix", "hmix", "gmix"]


@pytest.mark.parametrize("mode", ["pair", "elem"])
def test_compiled_step_in_pair_and_elem_mode_breaks_at_most_twice_and_compiles_once(mode):
    mixer = Mixer(README_METHODS, mode=mode, num_classes=5,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    _breaks_at_most_twice_and_compiles_once(  # fresh λ, methods, boxes and centres per row
        mixer, lambda targets, y: tuple(round(float(v), 6) for v in targets[:, 0])
    )


@pytest.mark.parametrize("mode", ["pair", "elem"])
@pytest.mark.parametrize("prob", [1.0, 0.6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
def test_compiled_pair_and_elem_mix_equals_the_eager_mix(mode, prob, dtype):
    x = torch.rand(6, 3, 12, 10)
    x = (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
    y = torch.randint(0, 5, (6,))

    def make():
        return Mixer(README_METHODS, mode=mode, prob=prob, num_classes=5,
                     generator=torch.Generator().manual_seed(3))  # fmt: skip

    eager, traced = make(), make()
    compiled = torch.compile(lambda a, b: traced(a, b), backend="eager")
    for _ in range(4):
        out_e, t_e = eager(x, y)
        out_c, t_c = compiled(x, y)
        assert torch.equal(out_c, out_e)
        torch.testing.assert_close(t_c, t_e, atol=1e-6, rtol=0)
