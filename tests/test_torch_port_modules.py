"""torch_port.modules against tests/chapter_ch03.py, the verbatim transcription of the book:
same seeds give the same weights, and float64 outputs and gradients agree to 1e-12.
Shapes: x (B, T, d_in), or (T, d_in) for the v1/v2 classes."""

import pytest
from hypothesis import given
from strategies import attention_configs, constructor_args

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import chapter_ch03 as ch  # noqa: E402

import torch_port as tp  # noqa: E402

CHAPTER_F64 = dict(rtol=1e-12, atol=1e-12)  # the port vs the book's code
BOOK_PRINTS = dict(rtol=0.0, atol=5e-5)  # the book prints 4 decimals

NAMES = [
    "SelfAttention_v1",
    "SelfAttention_v2",
    "CausalAttention",
    "MultiHeadAttentionWrapper",
    "MultiHeadAttention",
]


def pair(name, args, seed):
    """The book's module and the port, each built right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    book = getattr(ch, name)(*args)
    torch.manual_seed(seed)
    port = getattr(tp, name)(*args)
    return book, port


def run(module, x, g, seed):
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same dropout draws on both sides
    y = module(x)
    y.backward(g)
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", NAMES)
@given(cfg=attention_configs())
def test_same_seed_same_state_dict_keys_shapes_order_and_values(name, cfg):
    book, port = pair(name, constructor_args(name, cfg), cfg["seed"])
    book_sd, port_sd = book.state_dict(), port.state_dict()
    assert list(port_sd) == list(book_sd)
    for key in book_sd:
        assert port_sd[key].dtype == book_sd[key].dtype, key
        torch.testing.assert_close(port_sd[key], book_sd[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
@given(cfg=attention_configs())
def test_matches_the_book_in_float64_forward_and_backward(name, cfg):
    dropout = 0.0 if cfg["seed"] % 2 else 0.4  # half the examples train with dropout
    book, port = pair(name, constructor_args(name, cfg, dropout), cfg["seed"])
    book, port = book.double(), port.double()
    gen = torch.Generator().manual_seed(cfg["seed"])
    # the book's v1/v2 use keys.T, which transposes the last two dims only for 2-D x
    shape = (cfg["T"], cfg["d_in"]) if name.startswith("SelfAttention") else None
    x = torch.randn(shape or (cfg["B"], cfg["T"], cfg["d_in"]), generator=gen, dtype=torch.float64)
    d_total = cfg["d_out"]
    g = torch.randn(x.shape[:-1] + (d_total,), generator=gen, dtype=torch.float64)
    y, dx, grads = run(book, x, g, cfg["seed"])
    py, pdx, pgrads = run(port, x, g, cfg["seed"])
    torch.testing.assert_close(py, y, **CHAPTER_F64)
    torch.testing.assert_close(pdx, dx, **CHAPTER_F64)
    assert pgrads.keys() == grads.keys()
    for key in grads:
        torch.testing.assert_close(pgrads[key], grads[key], **CHAPTER_F64, msg=key)


@pytest.mark.parametrize("name", NAMES[:2])
def test_v1_v2_also_take_a_batch(name):
    cfg = dict(d_in=3, d_out=4, context_length=5, num_heads=1, qkv_bias=True)
    book, port = pair(name, constructor_args(name, cfg), 7)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(port(x), torch.stack([book(x[0]), book(x[1])]))


def test_the_books_printed_outputs():
    """The outputs printed in the book's chapter 3 (seed 123, and 789 for v2)."""
    x = torch.tensor(ch.INPUTS)
    batch = torch.stack((x, x))
    torch.manual_seed(123)
    v1 = [[0.2996, 0.8053], [0.3061, 0.8210], [0.3058, 0.8203]]
    torch.testing.assert_close(tp.SelfAttention_v1(3, 2)(x)[:3], torch.tensor(v1), **BOOK_PRINTS)
    torch.manual_seed(789)
    v2 = [[-0.0739, 0.0713], [-0.0748, 0.0703], [-0.0749, 0.0702]]
    torch.testing.assert_close(tp.SelfAttention_v2(3, 2)(x)[:3], torch.tensor(v2), **BOOK_PRINTS)
    torch.manual_seed(123)
    wrapper = tp.MultiHeadAttentionWrapper(3, 2, 6, 0.0, num_heads=2)
    row0 = torch.tensor([-0.4519, 0.2216, 0.4772, 0.1063])
    torch.testing.assert_close(wrapper(batch)[1, 0], row0, **BOOK_PRINTS)
    torch.manual_seed(123)
    mha = tp.MultiHeadAttention(3, 2, 6, 0.0, num_heads=2)
    mha_rows = torch.tensor([[0.3190, 0.4858], [0.2943, 0.3897], [0.2575, 0.4028]])
    torch.testing.assert_close(mha(batch)[0, [0, 1, 5]], mha_rows, **BOOK_PRINTS)


def test_gpt2_small_parameter_count():
    """Exercise 3.3: 2,360,064 parameters (the mask buffer is not a parameter)."""
    mha = tp.MultiHeadAttention(768, 768, 1024, 0.0, 12)
    assert sum(p.numel() for p in mha.parameters()) == 2_360_064


def test_attn_weights_kept_and_buffers_follow_dtype():
    mha = tp.MultiHeadAttention(3, 4, 5, 0.0, 2).double()
    assert mha.mask.dtype == torch.float64
    mha(torch.randn(2, 4, 3, dtype=torch.float64))
    assert mha.attn_weights.shape == (2, 2, 4, 4) and not mha.attn_weights.requires_grad
    torch.testing.assert_close(mha.attn_weights.sum(-1), torch.ones(2, 2, 4, dtype=torch.float64))
    wrapper = tp.MultiHeadAttentionWrapper(3, 2, 5, 0.0, 3)
    wrapper(torch.randn(1, 5, 3))
    assert wrapper.attn_weights.shape == (1, 3, 5, 5)


def test_bad_input_names_the_shape():
    with pytest.raises(ValueError, match=r"T <= context_length=5"):
        tp.CausalAttention(3, 2, 5, 0.0)(torch.randn(1, 6, 3))
    with pytest.raises(ValueError, match=r"\(B, T <= context_length=5, d_in\)"):
        tp.MultiHeadAttention(3, 2, 5, 0.0, 1)(torch.randn(6, 3))
    with pytest.raises(ValueError, match="divisible"):
        tp.MultiHeadAttention(3, 5, 5, 0.0, 2)


def test_attn_weights_can_be_left_out():
    mha = tp.MultiHeadAttention(3, 4, 5, 0.0, 2)
    mha.keep_attn_weights = False
    mha(torch.randn(1, 4, 3))
    assert mha.attn_weights is None and tp.MultiHeadAttention.keep_attn_weights
