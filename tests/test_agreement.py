"""The agreement suite: every npattn class against torch_port, forward, dL/dx and every
parameter gradient (random upstream gradient), in float64 and float32; dropout with the same
keep-mask on both sides and its statistics; and invariants that must hold on both sides.
Shapes: x (B, T, d_in) -> (B, T, d_out); attention weights (B, [H,] T, T)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import attention_configs, constructor_args
from tolerances import F32, F64

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
from helpers import n, t, upstream  # noqa: E402
from torch import nn  # noqa: E402

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402

NAMES = tp.convert.CHAPTER_CLASSES
CAUSAL = NAMES[2:]  # CausalAttention, MultiHeadAttentionWrapper, MultiHeadAttention
DROPOUT_PS = st.sampled_from([0.1, 0.5, 0.9])


def build(name, cfg, dropout=0.0, dtype=np.float64):
    """An npattn module (seeded) and a torch_port module loaded with its exact arrays."""
    args = constructor_args(name, cfg, dropout)
    ref = getattr(npattn, name)(*args, rng=cfg["seed"]).astype(dtype)
    port = getattr(tp, name)(*args)
    port.load_state_dict({k: t(v) for k, v in ref.state_dict().items()}, assign=True)
    return ref, port


def inputs(cfg, dtype=np.float64):
    rng = np.random.default_rng(cfg["seed"])
    return rng.standard_normal((cfg["B"], cfg["T"], cfg["d_in"])).astype(dtype)


def torch_run(port, x, g):
    tx = t(x, True)
    y = port(tx)
    y.backward(t(g))
    return n(y), n(tx.grad), {k: n(p.grad) for k, p in port.named_parameters()}


def assert_agree(ref, port, x, seed, tol):
    y = ref(x)
    g = upstream(y.shape, seed, y.dtype)
    dx = ref.backward(g)
    ty, tdx, tgrads = torch_run(port, x, g)
    assert y.dtype == dx.dtype == x.dtype
    np.testing.assert_allclose(y, ty, err_msg="output", **tol)
    np.testing.assert_allclose(dx, tdx, err_msg="dx", **tol)
    assert ref.grads.keys() == tgrads.keys()
    for key, grad in ref.grads.items():
        assert grad.dtype == x.dtype, key
        np.testing.assert_allclose(grad, tgrads[key], err_msg=key, **tol)


@pytest.mark.parametrize("name", NAMES)
@given(cfg=attention_configs())
def test_every_class_agrees_in_float64(name, cfg):
    ref, port = build(name, cfg)
    assert_agree(ref.eval(), port.eval(), inputs(cfg), cfg["seed"], F64)


@pytest.mark.parametrize("name", NAMES)
@given(cfg=attention_configs())
def test_every_class_agrees_in_float32(name, cfg):
    ref, port = build(name, cfg, dtype=np.float32)
    assert_agree(ref.eval(), port.eval(), inputs(cfg, np.float32), cfg["seed"], F32)


class KeepMaskDropout(nn.Module):
    """A test double for nn.Dropout that applies a given boolean keep-mask: x * keep / (1-p)."""

    def __init__(self, keep: np.ndarray, p: float):
        super().__init__()
        self.keep, self.p = torch.from_numpy(np.array(keep)), p  # keep is read-only

    def forward(self, x):
        return x * self.keep / (1 - self.p)


def heads_of(module):
    """The (npattn, torch) pairs of modules that own a dropout: one per CausalAttention head."""
    return list(module.heads) if hasattr(module, "heads") else [module]


def inject_keep_masks(ref, port):
    """Give each torch dropout the keep-mask npattn's last forward drew (from its cache)."""
    for ref_head, port_head in zip(heads_of(ref), heads_of(port)):
        port_head.dropout = KeepMaskDropout(keep_mask(ref_head), port_head.dropout.p)


def keep_mask(ref_head) -> np.ndarray:
    """The keep-mask of an npattn CausalAttention / MultiHeadAttention's last forward."""
    return ref_head.dropout_mask  # (B, [H,] T, T), True = kept


@pytest.mark.parametrize("name", CAUSAL)
@given(cfg=attention_configs(), p=DROPOUT_PS)
def test_dropout_with_the_same_keep_mask_agrees_forward_and_backward(name, cfg, p):
    ref, port = build(name, cfg, dropout=p)
    x = inputs(cfg)
    y = ref(x)  # training mode: npattn draws keep-masks from its rng
    inject_keep_masks(ref, port)
    g = upstream(y.shape, cfg["seed"])
    dx = ref.backward(g)  # must reuse the forward's masks to match torch below
    ty, tdx, tgrads = torch_run(port, x, g)
    np.testing.assert_allclose(y, ty, err_msg="output", **F64)
    np.testing.assert_allclose(dx, tdx, err_msg="dx", **F64)
    for key, grad in ref.grads.items():
        np.testing.assert_allclose(grad, tgrads[key], err_msg=key, **F64)


# --- dropout statistics, on both sides -----------------------------------------------------

STAT_CFG = dict(d_in=3, d_out=4, num_heads=2, context_length=6, T=6, B=64, qkv_bias=True, seed=0)
Z_MAX = 5.0  # |estimate - expected| / standard error: 5 sigma, with fixed seeds


def kept_fraction_z(kept: np.ndarray, p: float) -> float:
    """z-score of the kept fraction against 1 - p (binomial standard error)."""
    return abs(kept.mean() - (1 - p)) / np.sqrt(p * (1 - p) / kept.size)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_fraction_and_scaling_on_both_sides(p):
    ref, port = build("MultiHeadAttention", STAT_CFG, dropout=p)
    x = inputs(STAT_CFG)
    ref(x)
    causal = np.tril(np.ones((6, 6), dtype=bool))  # only weights that exist can be kept
    keep = np.broadcast_to(keep_mask(ref), ref.attn_weights.shape)[..., causal]
    assert kept_fraction_z(keep, p) < Z_MAX
    seen = {}
    port.dropout.register_forward_hook(lambda m, i, o: seen.update(w=i[0], out=o))
    torch.manual_seed(0)
    port(t(x))
    w, out = n(seen["w"])[..., causal], n(seen["out"])[..., causal]
    kept = out != 0
    assert kept_fraction_z(kept, p) < Z_MAX
    np.testing.assert_allclose(out[kept], w[kept] / (1 - p), **F64)  # inverted dropout


def z_scores_of_the_mean(samples: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|mean - expected| / standard error, per element, over axis 0 of samples."""
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    return np.abs(samples.mean(axis=0) - expected) / np.maximum(stderr, 1e-300)


@pytest.mark.parametrize("name", CAUSAL)
def test_dropout_keeps_the_expected_output_on_both_sides(name):
    """E[output in training] = output in eval: inverted dropout is unbiased."""
    cfg = dict(STAT_CFG, B=2)
    ref, port = build(name, cfg, dropout=0.5)
    x = inputs(cfg)
    draws = 300
    expected = ref.eval()(x)
    ref.train()
    assert z_scores_of_the_mean(np.stack([ref(x) for _ in range(draws)]), expected).max() < Z_MAX
    torch.manual_seed(0)
    with torch.no_grad():
        samples = np.stack([n(port(t(x))) for _ in range(draws)])
    assert z_scores_of_the_mean(samples, expected).max() < Z_MAX


# --- invariants, on both sides --------------------------------------------------------------


def both_sides(ref, port, x):
    """Output and attention weights of the npattn and the torch module for x."""
    y, ty = ref(x), n(port(t(x)))
    return (y, ref.attn_weights), (ty, n(port.attn_weights))


@pytest.mark.parametrize("name", NAMES)
@given(cfg=attention_configs())
def test_attention_weights_are_distributions_and_causal(name, cfg):
    ref, port = build(name, cfg)
    for _, w in both_sides(ref.eval(), port.eval(), inputs(cfg)):
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, **F64)
        if name in CAUSAL:
            T = cfg["T"]
            assert (w[..., ~np.tril(np.ones((T, T), dtype=bool))] == 0).all()


@pytest.mark.parametrize("name", CAUSAL)
@given(cfg=attention_configs())
def test_output_at_t_ignores_inputs_after_t(name, cfg):
    ref, port = build(name, cfg)
    ref.eval(), port.eval()
    x = inputs(cfg)
    T, tpos = cfg["T"], cfg["seed"] % cfg["T"]
    x2 = x.copy()
    x2[:, tpos + 1 :] = np.random.default_rng(1).standard_normal(x2[:, tpos + 1 :].shape) * 10
    for (y, _), (y2, _) in zip(both_sides(ref, port, x), both_sides(ref, port, x2)):
        np.testing.assert_allclose(y2[:, : tpos + 1], y[:, : tpos + 1], **F64)
    g = upstream(y.shape, cfg["seed"])
    g[:, tpos + 1 :] = 0  # a loss on positions <= t only: no gradient reaches later inputs
    ref(x)
    _, tdx, _ = torch_run(port, x, g)
    for dx in (ref.backward(g), tdx):
        np.testing.assert_array_equal(dx[:, tpos + 1 :], 0.0)
        assert T == tpos + 1 or np.abs(dx[:, : tpos + 1]).max() > 0


@pytest.mark.parametrize("name", NAMES[:2])
@given(cfg=attention_configs(), data=st.data())
def test_permuting_tokens_permutes_the_output_without_a_mask(name, cfg, data):
    perm = np.array(data.draw(st.permutations(range(cfg["T"]))))
    ref, port = build(name, cfg)
    x = inputs(cfg)
    g = upstream((cfg["B"], cfg["T"], cfg["d_out"]), cfg["seed"])
    ref(x)
    dx = ref.backward(g)
    y, tdx, _ = torch_run(port, x, g)
    ref_p = ref(x[:, perm])
    dx_p = ref.backward(g[:, perm])
    y_p, tdx_p, _ = torch_run(port, x[:, perm], g[:, perm])
    np.testing.assert_allclose(ref_p, y[:, perm], **F64)
    np.testing.assert_allclose(y_p, y[:, perm], **F64)
    np.testing.assert_allclose(dx_p, dx[:, perm], **F64)
    np.testing.assert_allclose(tdx_p, tdx[:, perm], **F64)


@given(cfg=attention_configs())
def test_one_head_with_identity_out_proj_is_causal_attention(cfg):
    causal, port_causal = build("CausalAttention", cfg)
    d_out = cfg["d_out"]
    args = (cfg["d_in"], d_out, cfg["context_length"], 0.0, 1, cfg["qkv_bias"])
    mha = npattn.MultiHeadAttention(*args, rng=0).astype(np.float64)
    sd = dict(causal.state_dict())
    sd["out_proj.weight"], sd["out_proj.bias"] = np.eye(d_out), np.zeros(d_out)
    mha.load_state_dict({k: sd[k] for k in mha.state_dict()})
    port_mha = tp.MultiHeadAttention(*args).double()
    port_mha.load_state_dict({k: t(v) for k, v in mha.state_dict().items()})
    x = inputs(cfg)
    g = upstream((cfg["B"], cfg["T"], d_out), cfg["seed"])
    for one_head, single in ((mha, causal), (port_mha, port_causal)):
        if isinstance(one_head, npattn.Module):
            y1, y2 = one_head(x), single(x)
            dx1, dx2 = one_head.backward(g), single.backward(g)
            g1, g2 = one_head.grads, single.grads
        else:
            y1, dx1, g1 = torch_run(one_head, x, g)
            y2, dx2, g2 = torch_run(single, x, g)
        np.testing.assert_allclose(y1, y2, **F64)
        np.testing.assert_allclose(dx1, dx2, **F64)
        for key in g2:
            np.testing.assert_allclose(g1[key], g2[key], err_msg=key, **F64)
