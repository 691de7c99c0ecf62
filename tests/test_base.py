"""Module mechanics: state dicts, dtypes, train/eval, dropout seeds, errors, no input mutation."""

import numpy as np
import pytest

import npattn

X = np.random.default_rng(0).standard_normal((2, 5, 4))


def mha(**kw):
    args = dict(d_in=4, d_out=6, context_length=8, dropout=0.0, num_heads=3, qkv_bias=True, rng=1)
    args.update(kw)
    return npattn.MultiHeadAttention(**args)


def test_same_seed_same_weights_and_dropout():
    a, b = mha(dropout=0.5), mha(dropout=0.5)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    np.testing.assert_array_equal(a(X), b(X))


def test_eval_turns_dropout_off_and_train_turns_it_back_on():
    m = mha(dropout=0.5)
    m.eval()
    assert not m.training and not m.W_query.training
    np.testing.assert_array_equal(m(X), m(X))
    m.train()
    assert m.training
    assert not np.array_equal(m(X), m(X))  # fresh masks on each call
    ref = mha(dropout=0.0)
    ref.load_state_dict(m.state_dict())
    m.eval()
    np.testing.assert_array_equal(m(X), ref(X))


def test_attn_weights_are_before_dropout_and_rows_sum_to_one():
    m = mha(dropout=0.5)
    m(X)
    assert m.attn_weights.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(m.attn_weights.sum(-1), 1.0, rtol=1e-6)
    assert np.all(np.triu(m.attn_weights, 1) == 0)  # causal


def test_load_state_dict_keeps_the_module_dtype_as_torch_does():
    m = mha()
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    sd["out_proj.bias"] = sd["out_proj.bias"].astype(np.float16)  # one odd entry changes nothing
    m.load_state_dict(sd)
    assert {a.dtype for a in m.state_dict().values()} == {np.dtype(np.float32)}
    m.astype(np.float64).load_state_dict({k: v.astype(np.float64) for k, v in sd.items()})
    assert m.dtype == np.float64
    y = m(X.astype(np.float32))
    assert y.dtype == np.float64
    assert m.backward(np.random.default_rng(2).standard_normal(y.shape)).dtype == np.float64
    assert all(g.dtype == np.float64 for g in m.grads.values())


def test_load_state_dict_takes_torch_tensors_and_copies():
    torch = pytest.importorskip("torch")
    m = mha()
    sd = {k: torch.tensor(v) for k, v in m.state_dict().items()}
    m2 = mha()
    m2.load_state_dict(sd)
    sd["W_query.weight"].zero_()  # the module holds a copy, not a view
    np.testing.assert_array_equal(m2.W_query.weight, m.W_query.weight)


def test_load_state_dict_is_strict():
    m = mha()
    sd = m.state_dict()
    with pytest.raises(KeyError, match=r"missing \['out_proj.bias'\]"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "out_proj.bias"})
    with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
        m.load_state_dict({**sd, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"state_dict\['W_key.weight'\] must have shape \(6, 4\)"):
        m.load_state_dict({**sd, "W_key.weight": np.zeros((4, 6))})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_input_is_modified(dtype):
    m = mha(dropout=0.3).astype(dtype)
    x = X.astype(dtype)  # the module's own dtype, so x is not copied on the way in
    x0 = x.copy()
    y = m(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    g0 = g.copy()
    m.backward(g)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(g, g0)
    sd = {k: v.copy() for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        assert not np.shares_memory(v, sd[k])


def test_backward_before_forward_and_wrong_dout():
    m = mha()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        m.backward(np.zeros((2, 5, 6)))
    m(X)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape \(2, 5, 6\)"):
        m.backward(np.zeros((2, 5, 5)))
    m.load_state_dict(m.state_dict())  # new weights invalidate the cache
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.zeros((2, 5, 6)))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(d_out=7), ValueError, r"d_out \(7\) must be divisible by num_heads \(3\)"),
        (dict(num_heads=0), ValueError, "num_heads must be >= 1"),
        (dict(context_length=0), ValueError, "context_length must be >= 1"),
        (dict(dropout=1.5), ValueError, r"dropout must be in \[0, 1\]"),
        (dict(dropout=-0.1), ValueError, r"dropout must be in \[0, 1\]"),
        (dict(dropout="0.1"), TypeError, r"dropout must be a float in \[0, 1\], got '0.1'"),
        (dict(dropout=True), TypeError, "dropout must be a float"),
        (dict(rng=True), TypeError, "rng must be a numpy.random.Generator"),
        (dict(rng=-1), ValueError, "rng must be a seed >= 0"),
        (dict(d_in=2.5), TypeError, "d_in must be an int"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        mha(**kwargs)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((2, 9, 4)), r"x has 9 tokens but context_length is 8"),
        (np.zeros((2, 5, 3)), r"x must have shape \(B, T, d_in=4\)"),
        (np.zeros((5, 4)), r"x must have shape \(B, T, d_in=4\) \(3-D\)"),
        (np.zeros((2, 0, 4)), r"at least one token"),
    ],
)
def test_forward_errors(x, match):
    with pytest.raises(ValueError, match=match):
        mha()(x)


def test_wrapper_and_v1_errors():
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        npattn.MultiHeadAttentionWrapper(3, 2, 6, 0.0, 0)
    with pytest.raises(ValueError, match=r"x must have shape \(T, d_in=3\) or \(B, T, d_in=3\)"):
        npattn.SelfAttention_v1(3, 2)(np.zeros(3))
    with pytest.raises(TypeError, match="x must hold floating-point numbers"):
        npattn.SelfAttention_v2(3, 2)(np.array([["a", "b", "c"]]))


def test_repr_and_named_parameters():
    m = mha()
    assert "num_heads=3" in repr(m)
    assert list(m.parameters()) == [k for k in m.state_dict() if k != "mask"]


def test_gradients_follow_the_module_dtype_whatever_dout_is():
    m = mha()  # float32
    y = m(X)
    dx = m.backward(np.random.default_rng(0).standard_normal(y.shape))  # float64 dout
    assert dx.dtype == np.float32
    assert {g.dtype for g in m.grads.values()} == {np.dtype(np.float32)}


def test_load_state_dict_casts_whole_numbers_and_takes_transposed_arrays():
    from npattn.gradcheck import check_module

    m = npattn.SelfAttention_v2(2, 2, rng=0)
    m.load_state_dict({k: [[1, 0], [0, 1]] for k in m.state_dict()})
    assert m.dtype == np.float32
    np.testing.assert_allclose(m(np.eye(2) * 0.5).sum(), 1.0, rtol=1e-6)
    v1 = npattn.SelfAttention_v1(3, 2)
    w = np.random.default_rng(0).standard_normal((2, 3))
    v1.load_state_dict({k: w.T for k in v1.state_dict()})  # non-contiguous views
    assert all(p.flags.c_contiguous for p in v1.parameters().values())
    assert check_module(v1, np.ones((4, 3))).passed
    with pytest.raises(TypeError, match=r"state_dict\['W_query'\] must hold real numbers"):
        v1.load_state_dict({k: np.full((3, 2), "a") for k in v1.state_dict()})


def test_wrapper_backward_checks_dout():
    m = npattn.MultiHeadAttentionWrapper(4, 2, 8, 0.0, 3)
    y = m(X)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape \(2, 5, 6\)"):
        m.backward(np.zeros((2, 5, 5)))
    assert m.backward(np.zeros(y.shape).tolist()).shape == X.shape  # lists are fine


@pytest.mark.parametrize("name", ["SelfAttention_v1", "SelfAttention_v2"])
def test_v1_v2_batch_equals_each_sequence_alone(name):
    m = getattr(npattn, name)(4, 3, rng=0)
    y = m(X)
    g = np.random.default_rng(3).standard_normal(y.shape)
    dx = m.backward(g)
    grads = m.grads
    total = {k: 0 for k in grads}
    for b in range(X.shape[0]):
        np.testing.assert_allclose(m(X[b]), y[b], rtol=1e-6)
        np.testing.assert_allclose(m.backward(g[b]), dx[b], rtol=1e-5, atol=1e-6)
        total = {k: total[k] + v for k, v in m.grads.items()}
    for k in grads:
        np.testing.assert_allclose(total[k], grads[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (
            lambda: npattn.MultiHeadAttention(3, 4, 6, 0.0, None),
            TypeError,
            "num_heads must be an int",
        ),
        (
            lambda: npattn.CausalAttention(3, 4, None, 0.0),
            TypeError,
            "context_length must be an int",
        ),
        (lambda: npattn.CausalAttention(3, 4, 6, None), TypeError, "dropout must be a float"),
        (lambda: mha().load_state_dict(5), TypeError, "state_dict must be a mapping"),
    ],
)
def test_none_and_non_mappings_are_named(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
