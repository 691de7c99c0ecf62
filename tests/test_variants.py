"""The bonus notebook's variants (torch_port.variants) against the chapter's MultiHeadAttention:
from_mha gives the same function, forward and backward. Shapes: x (B, T, d_in) -> (B, T, d_out).
"""

import warnings

import pytest
from hypothesis import given
from strategies import attention_configs

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import torch_port as tp  # noqa: E402
from torch_port.variants import BACKENDS  # noqa: E402

VARIANT_F32 = dict(rtol=0.0, atol=2e-5)  # every variant within 2e-5 of the chapter's class
BACKPROP_VARIANTS = [
    (tp.MultiHeadAttentionCombinedQKV, {}),
    (tp.MHAEinsum, {}),
    (tp.MHAPyTorchScaledDotProduct, {}),
    (tp.MHAPyTorchScaledDotProduct, {"backend": "math"}),
    (tp.MHAPyTorchSDPAWithoutFlash, {}),
    (tp.MHAPyTorchClass, {"need_weights": True}),
    (tp.MHAPyTorchClass, {"need_weights": False}),
]
SQUARE = {tp.MHAPyTorchClass}  # nn.MultiheadAttention needs d_in == d_out


def make_mha(cfg, dtype=torch.float32):
    torch.manual_seed(cfg["seed"])
    args = {k: cfg[k] for k in ("d_in", "d_out", "context_length", "num_heads", "qkv_bias")}
    return tp.MultiHeadAttention(dropout=0.0, **args).to(dtype)


def run(module, x, g):
    """Output, dx and parameter grads for upstream gradient g."""
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(g)
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    return y.detach(), x.grad, grads


def check_variant(cls, kwargs, cfg):
    mha = make_mha(cfg)
    variant = cls.from_mha(mha, **kwargs)
    gen = torch.Generator().manual_seed(cfg["seed"])
    x = torch.randn(cfg["B"], cfg["T"], cfg["d_in"], generator=gen)
    g = torch.randn(cfg["B"], cfg["T"], cfg["d_out"], generator=gen)  # random upstream
    y, dx, grads = run(mha, x, g)
    vy, vdx, vgrads = run(variant, x, g)
    torch.testing.assert_close(vy, y, **VARIANT_F32, msg=lambda m: f"output: {m}")
    torch.testing.assert_close(vdx, dx, **VARIANT_F32, msg=lambda m: f"dx: {m}")
    mapped = variant.to_mha_layout(vgrads)
    assert mapped.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(
            mapped[name], grad, **VARIANT_F32, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize(
    "cls, kwargs", BACKPROP_VARIANTS, ids=[f"{c.__name__}{k}" for c, k in BACKPROP_VARIANTS]
)
@given(cfg=attention_configs())
def test_from_mha_is_the_same_function_forward_and_backward(cls, kwargs, cfg):
    if cls in SQUARE:
        cfg = dict(cfg, d_in=cfg["d_out"])
    check_variant(cls, kwargs, cfg)


FLEX_CONFIGS = [  # fixed: each new T costs FlexAttention ~0.5 s of eager set-up on CPU
    dict(d_in=3, d_out=4, num_heads=2, context_length=6, T=5, B=2, qkv_bias=True, seed=1),
    dict(d_in=4, d_out=3, num_heads=1, context_length=4, T=4, B=1, qkv_bias=False, seed=2),
]


@pytest.mark.parametrize("cfg", FLEX_CONFIGS)
def test_flex_attention_forward_on_cpu(cfg):
    mha = make_mha(cfg).eval()
    try:
        flex = tp.MHAPyTorchFlexAttention.from_mha(mha)
    except RuntimeError as e:  # an old torch without FlexAttention
        pytest.skip(str(e))
    x = torch.randn(cfg["B"], cfg["T"], cfg["d_in"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        torch.testing.assert_close(flex(x), mha(x), **VARIANT_F32)


def test_flex_attention_says_what_it_needs():
    flex = tp.MHAPyTorchFlexAttention(4, 4, 2, 5)
    x = torch.randn(1, 3, 4)
    with pytest.raises(NotImplementedError, match="no backward on CPU.*torch.no_grad"):
        flex(x)
    flex_drop = tp.MHAPyTorchFlexAttention(4, 4, 2, 5, dropout=0.1)
    with torch.no_grad(), pytest.raises(NotImplementedError, match="no dropout"):
        flex_drop(x)


@pytest.mark.parametrize("cls, kwargs", BACKPROP_VARIANTS[:3] + BACKPROP_VARIANTS[4:])
def test_from_mha_keeps_dtype_device_mode_and_float64(cls, kwargs):
    cfg = dict(d_in=4, d_out=4, num_heads=2, context_length=5, qkv_bias=True, seed=3)
    mha = make_mha(cfg, torch.float64).eval()
    variant = cls.from_mha(mha, **kwargs)
    assert not variant.training
    assert all(p.dtype == torch.float64 for p in variant.parameters())
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(variant(x), mha(x), rtol=1e-12, atol=1e-13)


def test_buffers_follow_to_and_masks_keep_their_kind():
    sdpa = tp.MHAPyTorchSDPAWithoutFlash(4, 4, 2, 5).to(torch.float64)
    assert sdpa.mask.dtype == torch.bool and bool(sdpa.mask[1, 0]) and not bool(sdpa.mask[0, 1])
    combined = tp.MultiHeadAttentionCombinedQKV(4, 4, 2, 5).to(torch.float64)
    assert combined.mask.dtype == torch.float64 and "mask" in combined.state_dict()


def test_backend_is_chosen_and_checked():
    mha = make_mha(dict(d_in=4, d_out=4, num_heads=2, context_length=5, qkv_bias=False, seed=0))
    x = torch.randn(2, 5, 4)
    for name in ("math", ["math"], BACKENDS["math"]):
        variant = tp.MHAPyTorchScaledDotProduct.from_mha(mha, backend=name)
        torch.testing.assert_close(variant(x), mha(x), **VARIANT_F32)
    with pytest.raises(ValueError, match="backend must be one of"):
        tp.MHAPyTorchScaledDotProduct(4, 4, 2, 5, backend="fast")
    if not torch.cuda.is_available():  # the CPU has no flash-with-efficient-only kernel
        only_efficient = tp.MHAPyTorchScaledDotProduct.from_mha(mha, backend="efficient")
        with pytest.raises(RuntimeError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            only_efficient(x)


def test_bad_shapes_and_arguments():
    with pytest.raises(ValueError, match="d_in == d_out"):
        tp.MHAPyTorchClass(3, 4, 2, 5)
    with pytest.raises(ValueError, match="divisible"):
        tp.MHAEinsum(3, 5, 2, 5)
    with pytest.raises(ValueError, match=r"T <= context_length=5"):
        tp.MHAEinsum(3, 4, 2, 5)(torch.randn(1, 6, 3))


def test_sdpa_dropout_only_in_training():
    variant = tp.MHAPyTorchScaledDotProduct(4, 4, 2, 5, dropout=0.5)
    x = torch.randn(2, 5, 4)
    variant.eval()
    torch.testing.assert_close(variant(x), variant(x), rtol=0, atol=0)
    variant.train()
    torch.manual_seed(0)
    assert not torch.allclose(variant(x), variant.eval()(x))


def test_flex_attention_says_which_torch_it_needs(monkeypatch):
    import torch_port.variants as variants

    monkeypatch.setattr(variants, "flex_attention", None)  # as on torch < 2.5
    with pytest.raises(RuntimeError, match=r"needs torch >= 2.5 .*installed torch is"):
        tp.MHAPyTorchFlexAttention(4, 4, 2, 5)
