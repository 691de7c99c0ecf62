"""The chapter's stages hold together: each section's numbers agree with the next one's."""

import numpy as np
import pytest
from tolerances import F32

from npattn.chapter import walkthrough as W
from npattn.chapter.data import QUERY_INDEX, chapter_inputs
from npattn.chapter.weights import torch_available

WEIGHTS = [
    "npattn",
    pytest.param(
        "torch", marks=pytest.mark.skipif(not torch_available(), reason="torch is not installed")
    ),
]


def test_simple_attention_matches_numpy():
    s = W.simple_attention()
    x = chapter_inputs(np.float64)
    scores = x @ x[QUERY_INDEX]
    weights = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(s["attn_scores_2"], scores, **F32)
    np.testing.assert_allclose(s["attn_weights_2_tmp"], scores / scores.sum(), **F32)
    for name in ("attn_weights_2_naive", "attn_weights_2"):
        np.testing.assert_allclose(s[name], weights, **F32)
    np.testing.assert_allclose(s["context_vec_2"], weights @ x, **F32)
    all_scores = x @ x.T
    np.testing.assert_allclose(s["attn_scores"], all_scores, **F32)
    np.testing.assert_allclose(s["attn_scores_loops"], all_scores, **F32)
    all_weights = np.exp(all_scores) / np.exp(all_scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(s["attn_weights"], all_weights, **F32)
    np.testing.assert_allclose(s["all_context_vecs"], all_weights @ x, **F32)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_trainable_stage_agrees_with_the_classes(weights):
    t = W.trainable_weights(weights=weights)
    assert t["source"] == weights
    np.testing.assert_allclose(t["context_vec_2"], t["sa_v1_out"][QUERY_INDEX], **F32)
    np.testing.assert_allclose(t["attn_score_22"], t["attn_scores_2"][QUERY_INDEX], **F32)
    np.testing.assert_allclose(t["v1_from_v2_out"], t["sa_v2_out"], **F32)
    np.testing.assert_allclose(t["attn_weights_2"].sum(), 1.0, **F32)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_causal_masks_both_methods_and_dropout(weights):
    c = W.causal_masks(W.trainable_weights(weights=weights)["sa_v2"])
    upper = np.triu(np.ones((6, 6), dtype=bool), k=1)
    np.testing.assert_array_equal(c["mask"], ~upper)
    assert np.all(c["masked_simple"][upper] == 0)
    assert np.all(np.isneginf(c["masked"][upper]))
    np.testing.assert_allclose(c["masked_simple_norm"], c["attn_weights_causal"], **F32)
    np.testing.assert_allclose(c["attn_weights_causal"].sum(-1), 1.0, **F32)
    assert c["methods_max_diff"] < F32["atol"]
    d = W.dropout(c["attn_weights_causal"], weights)
    assert d["source"] == weights
    np.testing.assert_array_equal(d["example"], np.where(d["keep"], 2.0, 0.0))
    np.testing.assert_allclose(d["attn_weights"], 2 * c["attn_weights_causal"] * d["keep"], **F32)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_multihead_stages(weights):
    ca = W.causal_attention(weights=weights)
    m = W.multihead(weights=weights)
    assert ca["context_vecs"].shape == (2, 6, 2)
    assert m["wrapper_out"].shape == (2, 6, 4) and m["context_vecs"].shape == (2, 6, 2)
    assert m["attn_weights"].shape == (2, 2, 6, 6)
    # the wrapper's first head is built first after the same seed: it is CausalAttention
    np.testing.assert_allclose(m["wrapper_out"][..., :2], ca["context_vecs"], **F32)


def test_gpt2_parameter_count():
    d = 768
    expected = 3 * d * d + d * d + d  # W_query, W_key, W_value without bias; out_proj with
    assert W.gpt2_parameter_count() == expected == 2_360_064  # the book's exercise 3.3 answer


def test_walk_returns_every_section_once_for_demo_and_plots():
    w = W.walk("npattn")
    assert isinstance(w, W.Walkthrough)
    np.testing.assert_array_equal(w.inputs, chapter_inputs())
    np.testing.assert_array_equal(w.batch[0], chapter_inputs())
    # the sections are chained: causal masking reads SelfAttention_v2's weights, dropout the
    # causal weights
    np.testing.assert_allclose(w.causal["attn_weights"], w.trainable["sa_v2"].attn_weights, **F32)
    kept = w.dropout["keep"]
    np.testing.assert_allclose(
        w.dropout["attn_weights"][kept], 2 * w.causal["attn_weights_causal"][kept], **F32
    )
    assert w.gpt2_parameters == W.gpt2_parameter_count()
