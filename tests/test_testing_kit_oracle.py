"""assert_sdpa_matches, the kernel oracle: torch's own SDPA and a hand-written one pass, in
float64 and float32; the classic kernel bugs are caught in both, and NaN is named NaN.
Shapes: q (B, H, L, E), k and v (B, Hkv, S, E)."""

import functools
import unittest

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import torch.nn.functional as F  # noqa: E402
from user_modules import my_sdpa  # noqa: E402

from torch_port import testing as tt  # noqa: E402

FEW = dict(max_examples=12)
DTYPES = [torch.float64, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fn", [F.scaled_dot_product_attention, my_sdpa], ids=lambda f: f.__name__)
def test_correct_kernels_pass(fn, dtype):
    report = tt.assert_sdpa_matches(fn, dtype=dtype, **FEW)
    assert set(report.worst) == {"out", "dq", "dk", "dv"}


def test_the_options_come_from_the_signature():
    assert tt.oracle.accepted_options(my_sdpa) == tt.oracle.OPTIONS
    assert "dropout_mask" not in tt.oracle.accepted_options(F.scaled_dot_product_attention)

    def bare(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    assert tt.oracle.accepted_options(bare) == ()
    tt.assert_sdpa_matches(bare, **FEW)  # only what it accepts is drawn


def test_dropout_goes_through_the_explicit_keep_mask():
    ex = tt.SDPAExample(1, 2, 1, 3, 4, 2, "bool", None, 0.4, seed=3)
    assert tt.compare_sdpa(my_sdpa, ex) is None

    def drops_unscaled(q, k, v, dropout_p=0.0, dropout_mask=None, **kw):
        out = my_sdpa(q, k, v, **kw)
        return out if dropout_mask is None else my_sdpa(q, k, v, dropout_mask=dropout_mask, **kw)

    assert tt.compare_sdpa(drops_unscaled, ex) is not None  # forgets the 1 / (1 - p)


BUGS = {  # bug -> what the shrunk case must show
    "ignores scale": "scale=",
    "mask polarity": "mask=bool",
    "repeat, not repeat_interleave": "k and v (1, 2,",
    "NaN on fully masked rows": "NaN",
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bug", BUGS)
def test_kernel_bugs_are_caught(bug, dtype):
    fn = functools.partial(my_sdpa, bug=bug)
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_sdpa_matches(fn, dtype=dtype)
    message = str(info.value)
    assert BUGS[bug] in message.splitlines()[0]
    assert "e+308" not in message
    line = message.split("replay: ", 1)[1]
    scope = {"fn": fn}
    exec(
        line.replace(
            "torch_port.testing.compare_sdpa(", "found = torch_port.testing.compare_sdpa("
        ),
        scope,
    )
    assert scope["found"] == info.value.mismatch


def test_nan_is_reported_as_nan():
    fn = functools.partial(my_sdpa, bug="NaN on fully masked rows")
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_sdpa_matches(fn)
    found = info.value.mismatch
    assert found.error != found.error  # NaN
    assert "normwise error NaN" in str(info.value) and "got NaN" in str(info.value)


def test_cuda_is_used_when_asked_or_skipped_cleanly():
    if not torch.cuda.is_available():
        with pytest.raises(unittest.SkipTest, match="cuda"):  # pytest shows it as a skip
            tt.assert_sdpa_matches(my_sdpa, device="cuda")
        pytest.skip("no CUDA device")
    seen = []

    def on_device(q, k, v, **kw):
        seen.append(q.device.type)
        return my_sdpa(q, k, v, **kw)

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tt.assert_sdpa_matches(on_device, device="cuda", dtype=dtype, **FEW)
        tt.assert_sdpa_matches(F.scaled_dot_product_attention, device="cuda", dtype=dtype, **FEW)
    assert set(seen) == {"cuda"}
    with pytest.raises(tt.ReferenceMismatchError):
        tt.assert_sdpa_matches(functools.partial(my_sdpa, bug="mask polarity"), device="cuda")


def test_a_module_is_not_a_kernel():
    with pytest.raises(tt.KitSetupError, match="assert_matches_reference"):
        tt.assert_sdpa_matches(torch.nn.Linear(2, 2))
