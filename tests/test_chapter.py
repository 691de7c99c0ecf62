"""The chapter's numbers, reproduced.

The weights come from the chapter's own seeded torch code (torch.manual_seed(123), 789 for
SelfAttention_v2) and are loaded into npattn; the outputs are compared with torch on the
chapter's input batch and with the values the book prints (4 decimals, an external
reference: these constants are the book's, not outputs of this code).
"""

import numpy as np
import pytest

import npattn
from npattn import functional as F

torch = pytest.importorskip("torch")
import chapter_ch03 as ch  # noqa: E402
from helpers import n  # noqa: E402

INPUTS = np.array(ch.INPUTS)
BATCH = np.stack((INPUTS, INPUTS))
BOOK = 5e-5  # the book rounds to 4 decimals

# Printed in the book, chapter 3 (sections 3.3-3.6), first rows where it prints matrices.
BOOK_SCORES_2 = [0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865]
BOOK_WEIGHTS_2 = [0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581]
BOOK_CONTEXT_2 = [0.4419, 0.6515, 0.5683]
BOOK_V1 = [[0.2996, 0.8053], [0.3061, 0.8210], [0.3058, 0.8203],
           [0.2948, 0.7939], [0.2927, 0.7891], [0.2990, 0.8040]]  # fmt: skip
BOOK_V2_ROW0 = [-0.0739, 0.0713]
BOOK_CAUSAL_ROW0 = [-0.4519, 0.2216]
BOOK_WRAPPER_ROW0 = [-0.4519, 0.2216, 0.4772, 0.1063]
BOOK_MHA_ROW0 = [0.3190, 0.4858]


def test_simplified_attention_for_journey():
    query = INPUTS[1]
    np.testing.assert_allclose(F.attn_scores_for_query(INPUTS, query), BOOK_SCORES_2, atol=BOOK)
    weights = F.softmax(F.attn_scores_for_query(INPUTS, query))
    np.testing.assert_allclose(weights, BOOK_WEIGHTS_2, atol=BOOK)
    np.testing.assert_allclose(
        F.softmax_naive(F.attn_scores_for_query(INPUTS, query)), BOOK_WEIGHTS_2, atol=BOOK
    )
    np.testing.assert_allclose(F.context_vector_for_query(INPUTS, query), BOOK_CONTEXT_2, atol=BOOK)


def test_loops_equal_matrix_products():
    context, weights = npattn.simple_self_attention(INPUTS)
    np.testing.assert_allclose(F.attn_scores_loops(INPUTS), INPUTS @ INPUTS.T, rtol=1e-12)
    np.testing.assert_allclose(F.context_vectors_loops(INPUTS), context, rtol=1e-12)
    np.testing.assert_allclose(context[1], BOOK_CONTEXT_2, atol=BOOK)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-12)


def seeded(name, seed, *args):
    torch.manual_seed(seed)
    ref = getattr(ch, name)(*args)
    mine = getattr(npattn, name)(*args)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


@pytest.mark.parametrize(
    "name, seed, args, x, book",
    [
        ("SelfAttention_v1", 123, (3, 2), INPUTS, BOOK_V1),
        ("SelfAttention_v2", 789, (3, 2), INPUTS, [BOOK_V2_ROW0]),
        ("CausalAttention", 123, (3, 2, 6, 0.0), BATCH, [BOOK_CAUSAL_ROW0]),
        ("MultiHeadAttentionWrapper", 123, (3, 2, 6, 0.0, 2), BATCH, [BOOK_WRAPPER_ROW0]),
        ("MultiHeadAttention", 123, (3, 2, 6, 0.0, 2), BATCH, [BOOK_MHA_ROW0]),
    ],
)
def test_seeded_chapter_modules(name, seed, args, x, book):
    ref, mine = seeded(name, seed, *args)
    y = mine(x)
    expected = n(ref(torch.tensor(x, dtype=torch.float32)))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    rows = y if y.ndim == 2 else y[0]
    np.testing.assert_allclose(rows[: len(book)], book, atol=BOOK)
    if y.ndim == 3:  # the chapter's batch is two copies of the same sentence
        np.testing.assert_array_equal(y[0], y[1])


def test_v1_and_v2_agree_when_given_the_same_weights():
    """The chapter's exercise 3.1: v2's Linear weights, transposed, drive v1."""
    _, v2 = seeded("SelfAttention_v2", 789, 3, 2)
    v1 = npattn.SelfAttention_v1(3, 2)
    v1.load_state_dict(
        {f"W_{k}": v2.state_dict()[f"W_{k}.weight"].T for k in ("query", "key", "value")}
    )
    np.testing.assert_allclose(v1(INPUTS), v2(INPUTS), rtol=1e-6)
