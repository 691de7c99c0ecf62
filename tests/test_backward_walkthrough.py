"""npattn.chapter.backward_walkthrough: the numeric backward walk on the chapter's six tokens.

The walk's gradients agree with central differences and with npattn's sdpa_backward, its
forward with the chapter's CausalAttention, and every printed number is one it computed.
"""

import re

import numpy as np
import pytest
from tolerances import F64, FD

import npattn
from npattn import functional as F
from npattn.chapter import demo
from npattn.chapter.backward_walkthrough import (
    BackwardWalkthrough,
    GradStep,
    backward_walkthrough,
    format_step,
    format_walkthrough,
)
from npattn.chapter.data import chapter_batch

NUMBER = re.compile(r"-?\d+\.\d{4}(?!\d)")
PRINT_TOL = 0.5e-4 + 1e-12  # 4-decimal rounding


@pytest.fixture(scope="module", params=["npattn", "auto"])
def walk(request) -> BackwardWalkthrough:
    return backward_walkthrough(request.param)


def test_steps_are_the_backward_in_order(walk):
    assert [s.name for s in walk.steps] == ["dattn_weights", "dv", "dattn_scores", "dq", "dk"]
    T = len(walk.q)
    assert walk.attn_weights.shape == (T, T) and walk.dout.shape == walk.q.shape
    assert not np.all(walk.dout == 1.0)  # a random upstream gradient, never all ones


def test_every_gradient_equals_its_central_differences(walk):
    for step in walk.steps:
        assert step.analytic.shape == step.numeric.shape, step.name
        np.testing.assert_allclose(step.analytic, step.numeric, **FD, err_msg=step.name)


def test_masked_scores_get_zero_gradient(walk):
    dattn_scores = walk.steps[2].analytic
    assert np.all(dattn_scores[~walk.mask] == 0.0)
    np.testing.assert_allclose(dattn_scores.sum(axis=-1), 0.0, atol=1e-12)  # softmax rows


def test_the_walk_is_npattns_sdpa_and_the_chapters_causal_attention(walk):
    out, cache = F.sdpa_forward(walk.q, walk.k, walk.v, is_causal=True)
    np.testing.assert_allclose(walk.context_vec, out, **F64)
    dq, dk, dv = F.sdpa_backward(walk.dout, cache)
    by_name = {s.name: s.analytic for s in walk.steps}
    for name, g in (("dq", dq), ("dk", dk), ("dv", dv)):
        np.testing.assert_allclose(by_name[name], g, **F64, err_msg=name)
    np.testing.assert_allclose(walk.D[:, 0], np.sum(walk.steps[0].analytic * walk.attn_weights, -1))

    from npattn.chapter.weights import chapter_module

    head, _ = chapter_module(npattn.CausalAttention, 3, 2, 6, 0.0, weights=walk.source)
    context_vecs = head.astype(np.float64)(chapter_batch(np.float64))  # (B, T, d_out)
    np.testing.assert_allclose(context_vecs[0], walk.context_vec, **F64)


def test_finite_differences_catch_a_softmax_backward_without_D(walk):
    """The check has teeth: dropping the rowsum term D gives a gradient the numbers reject."""
    P, dP = walk.attn_weights, walk.steps[0].analytic
    wrong = P * dP  # the softmax backward without "- D"
    assert not np.allclose(wrong, walk.steps[2].numeric, **FD)


def printed_after(text: str, header: str) -> list[float]:
    """The numbers printed in the paragraph that starts with `header`."""
    block = next(p for p in text.split("\n\n") if p.startswith(header))
    return [float(x) for x in NUMBER.findall(block)]


def test_printed_numbers_are_the_computed_ones(walk):
    text = format_walkthrough(walk)
    for step in walk.steps:
        got = printed_after(text, f"{step.name} = {step.formula}")
        got = np.array(got).reshape(len(step.analytic), 2, -1)  # (row, backward | fd, values)
        np.testing.assert_allclose(got[:, 0], step.analytic, rtol=0, atol=PRINT_TOL)
        np.testing.assert_allclose(got[:, 1], step.numeric, rtol=0, atol=PRINT_TOL)
    np.testing.assert_allclose(printed_after(text, "D = "), walk.D[:, 0], rtol=0, atol=PRINT_TOL)
    assert max(len(line) for line in text.split("\n")) <= 90


def test_format_step_prints_both_arrays_of_the_step():
    step = GradStep("dq", "f", np.array([[0.5, -0.25]]), np.array([[0.375, 0.125]]))
    got = [float(x) for x in NUMBER.findall(format_step(step))]
    assert got == [0.5, -0.25, 0.375, 0.125]


def test_demo_prints_the_walk(capsys):
    assert demo.main(weights="npattn") == 0
    out = capsys.readouterr().out
    walk = backward_walkthrough("npattn")
    assert "the attention backward, number by number" in out
    assert format_walkthrough(walk) in out
