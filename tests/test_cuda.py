"""torch_port on CUDA against npattn (a float64 reference with the same weights): the chapter's
classes in float64 and float32, every variant in float32 through the efficient and math SDPA
backends, and flash / efficient in bfloat16 and float16 within normwise tolerances.
Skips without CUDA. tools/gpu_check.py runs this file and prints RESULTS as a table.
NPATTN_TEST_DEVICE=cpu dry-runs the plumbing on a CPU (the efficient backend and FlexAttention's
backward do not exist there, so those cases fail).
Shapes: x (B, T, d_in) -> (B, T, d_out), B=2, T=100 < context_length=128, d=64, 4 heads."""

import os
import warnings

import numpy as np
import pytest
from tolerances import BF16_NORMWISE, F32, F64, FP16_NORMWISE, LOW_PRECISION_BASELINE

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import torch_port as tp  # noqa: E402

DEVICE = os.environ.get("NPATTN_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
)

RESULTS = []  # one row per measured quantity, read by tools/gpu_check.py
B, T, D, H, CL = 2, 100, 64, 4, 128
V1_NOTE = """SelfAttention_v1's torch.rand weights are all positive, so its scores grow like d;
at d=64 the softmax saturates and float32 loses ~2e-5 to conditioning alone. It runs at d=8."""
ELEMENTWISE = {torch.float64: F64, torch.float32: F32}
NORMWISE = {torch.bfloat16: BF16_NORMWISE, torch.float16: FP16_NORMWISE}
FP32_VARIANTS = [
    (tp.MultiHeadAttentionCombinedQKV, {}, None),
    (tp.MHAEinsum, {}, None),
    (tp.MHAPyTorchClass, {"need_weights": True}, None),
    (tp.MHAPyTorchFlexAttention, {}, None),
] + [
    (cls, kwargs, backend)
    for cls, kwargs in (
        (tp.MHAPyTorchScaledDotProduct, {}),
        (tp.MHAPyTorchSDPAWithoutFlash, {}),
        (tp.MHAPyTorchClass, {"need_weights": False}),
    )
    for backend in ("efficient", "math")
]
LOW_PRECISION = [  # the chapter's plain code (torch_port.MultiHeadAttention) is the baseline
    (tp.MHAPyTorchScaledDotProduct, "flash"),
    (tp.MHAPyTorchScaledDotProduct, "efficient"),
    (tp.MHAPyTorchSDPAWithoutFlash, "efficient"),
    (tp.MHAPyTorchScaledDotProduct, "math"),
]


def reference(dtype, name="MultiHeadAttention", seed=0):
    """A torch_port module on CUDA in dtype, and its npattn float64 twin with the same
    (rounded) weights, with x, g (rounded to dtype) and the reference's out, dx and grads."""
    torch.manual_seed(seed)
    d = 8 if name == "SelfAttention_v1" else D  # see V1_NOTE
    args = {
        "SelfAttention_v1": (d, d),
        "SelfAttention_v2": (D, D, True),
        "CausalAttention": (D, D, CL, 0.0, True),
        "MultiHeadAttentionWrapper": (D, D // H, CL, 0.0, H, True),
        "MultiHeadAttention": (D, D, CL, 0.0, H, True),
    }[name]
    module = getattr(tp, name)(*args).to(DEVICE, dtype).eval()
    ref = tp.to_npattn(module).astype(np.float64)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, d, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
    g = torch.randn(B, T, d, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
    y = ref(x.double().cpu().numpy())
    dx = ref.backward(g.double().cpu().numpy())
    return module, x, g, (y, dx, ref.grads)


def run(module, x, g, to_mha=None):
    """Output, dx and parameter grads (in the chapter's keys) of a CUDA module, as float64."""
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(g)
    grads = {k: p.grad for k, p in module.named_parameters() if p.grad is not None}
    grads = to_mha(grads) if to_mha else grads
    as64 = lambda a: a.detach().double().cpu().numpy()  # noqa: E731
    return as64(y), as64(x.grad), {k: as64(v) for k, v in grads.items()}


def record(case, dtype, backend, actual, expected, bounds=None) -> list[dict]:
    """compare() and append its rows to RESULTS."""
    rows = compare(case, dtype, backend, actual, expected, bounds)
    RESULTS.extend(rows)
    return rows


def compare(case, dtype, backend, actual, expected, bounds=None) -> list[dict]:
    """One row per quantity (out, dx, grads): errors, the tolerance and whether it holds.

    bounds: {quantity: normwise bound} for low precision (default NORMWISE[dtype])."""
    rows = []
    names = ("out", "dx", "grads")
    for quantity, a, e in zip(names, actual, expected):
        if quantity == "grads":
            assert a.keys() >= e.keys(), f"missing gradients {e.keys() - a.keys()}"
            a = np.concatenate([a[k].ravel() for k in e])  # all parameter gradients together
            e = np.concatenate([e[k].ravel() for k in e])
        err = np.abs(a - e)
        row = dict(case=case, dtype=str(dtype).replace("torch.", ""), backend=backend or "-")
        row.update(quantity=quantity, max_abs=float(err.max()))
        row["normwise"] = float(err.max() / np.abs(e).max())
        if dtype in NORMWISE:
            bound = bounds[quantity] if bounds else NORMWISE[dtype]
            row["tolerance"] = f"normwise {bound:.1e}"
            row["ok"] = bool(row["normwise"] <= bound)
        else:
            tol = ELEMENTWISE[dtype]
            scale = max(1.0, float(np.abs(e).max()))  # atol is meant for unit-scale values
            row["tolerance"] = f"rtol={tol['rtol']:.0e} atol={tol['atol']:.0e}*{scale:.3g}"
            row["ok"] = bool((err <= tol["atol"] * scale + tol["rtol"] * np.abs(e)).all())
        rows.append(row)
    return rows


def assert_rows_ok(rows):
    bad = [r for r in rows if not r["ok"]]
    assert not bad, "\n".join(map(str, bad))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", tp.convert.CHAPTER_CLASSES)
def test_chapter_classes_on_cuda(name, dtype):
    module, x, g, expected = reference(dtype, name)
    on_device = [t.device.type == DEVICE for t in module.state_dict().values()]
    assert all(on_device)  # buffers (the masks) moved with .to()
    assert_rows_ok(record(name, dtype, None, run(module, x, g), expected))


@pytest.mark.parametrize(
    "cls, kwargs, backend",
    FP32_VARIANTS,
    ids=[f"{c.__name__}{k or ''}-{b}" for c, k, b in FP32_VARIANTS],
)
def test_variants_in_float32(cls, kwargs, backend):
    mha, x, g, expected = reference(torch.float32)
    variant = cls.from_mha(mha, backend=backend, **kwargs)
    assert all(t.device.type == DEVICE for t in variant.state_dict().values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlexAttention without torch.compile warns
        actual = run(variant, x, g, variant.to_mha_layout)
    nw = kwargs.get("need_weights")
    case = cls.__name__ + ("" if nw is None else f"(need_weights={nw})")
    assert_rows_ok(record(case, torch.float32, backend, actual, expected))


LOW_IDS = [f"{c.__name__}-{b}" for c, b in LOW_PRECISION]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("cls, backend", LOW_PRECISION, ids=LOW_IDS)
def test_low_precision_backends(cls, backend, dtype):
    mha, x, g, expected = reference(dtype)
    plain = compare("MultiHeadAttention", dtype, None, run(mha, x, g), expected)
    baseline = {r["quantity"]: r["normwise"] for r in plain}  # in RESULTS via the test below
    bounds = {q: max(NORMWISE[dtype], 2 * e) for q, e in baseline.items()}
    module = cls.from_mha(mha, backend=backend)
    actual = run(module, x, g, module.to_mha_layout)
    assert_rows_ok(record(cls.__name__, dtype, backend, actual, expected, bounds))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_baseline(dtype):
    """The chapter's plain code in low precision, within LOW_PRECISION_BASELINE x the bound."""
    mha, x, g, expected = reference(dtype)
    bound = LOW_PRECISION_BASELINE * NORMWISE[dtype]
    rows = record(
        "MultiHeadAttention",
        dtype,
        "baseline",
        run(mha, x, g),
        expected,
        {q: bound for q in ("out", "dx", "grads")},
    )
    assert_rows_ok(rows)


def test_from_npattn_to_cuda_and_back():
    ref = tp.to_npattn(tp.MultiHeadAttention(D, D, CL, 0.0, H).double())
    port = tp.from_npattn(ref, device=DEVICE)
    assert all(t.device.type == DEVICE for t in port.state_dict().values())
    back = tp.to_npattn(port)
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)
