"""`python -m npattn demo` prints the chapter's numbers.

Expected values are computed here, independently: stage 1 in numpy from the inputs, the
trainable stages from the book's own torch classes (tests/chapter_ch03.py) built after the
chapter's seeds. The only typed-in numbers are the book's published 4-decimal values for the
query "journey", compared as strings as an external reference.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npattn.chapter import demo
from npattn.chapter.data import QUERY_INDEX, SEEDS, chapter_batch, chapter_inputs

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"-?\d+\.\d{4}(?![\d])")
PRINT_TOL = 0.5e-4 + 1e-6  # 4-decimal rounding, plus float32 vs float64

# printed in the book, section 3.3.1 (attn_scores_2, attn_weights_2, context_vec_2)
BOOK_SCORES_2 = "0.9544 1.4950 1.4754 0.8434 0.7070 1.0865"
BOOK_WEIGHTS_2 = "0.1385 0.2379 0.2333 0.1240 0.1082 0.1581"  # they add up to 1.0000
BOOK_CONTEXT_2 = "0.4419 0.6515 0.5683"


def printed_numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def find_run(printed: list[str], expected, what: str) -> int:
    """Index where `expected` (flattened) appears as a contiguous run of printed numbers."""
    want = np.asarray(expected, dtype=np.float64).ravel()
    got = np.array([float(p) for p in printed])
    for i in range(len(got) - len(want) + 1):
        if np.all(np.abs(got[i : i + len(want)] - want) <= PRINT_TOL):
            return i
    raise AssertionError(f"{what} = {np.round(want, 4).tolist()} is not printed")


def stage1_expected():
    x = chapter_inputs(np.float64)
    scores = x @ x[QUERY_INDEX]
    weights = np.exp(scores) / np.exp(scores).sum()
    all_scores = x @ x.T
    all_weights = np.exp(all_scores) / np.exp(all_scores).sum(-1, keepdims=True)
    return {
        "attn_scores_2": scores,
        "attn_weights_2_tmp": scores / scores.sum(),
        "attn_weights_2": weights,
        "context_vec_2": weights @ x,
        "attn_scores": all_scores,
        "attn_weights": all_weights,
        "all_context_vecs": all_weights @ x,
    }


def check_stage1(printed):
    for name, value in stage1_expected().items():
        find_run(printed, value, name)
    for book in (BOOK_SCORES_2, BOOK_WEIGHTS_2, BOOK_CONTEXT_2):
        want = book.split()
        assert any(printed[i : i + len(want)] == want for i in range(len(printed))), book


@pytest.fixture(scope="module")
def demo_output():
    out = subprocess.run(
        [sys.executable, "-m", "npattn", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_demo_prints_stage1_and_the_books_values(demo_output):
    check_stage1(printed_numbers(demo_output))


def test_demo_prints_the_books_trainable_stages(demo_output):
    torch = pytest.importorskip("torch")
    import chapter_ch03 as book

    assert "these are the book's numbers" in demo_output.replace("\n", " ")
    printed = printed_numbers(demo_output)
    inputs, batch = torch.tensor(chapter_inputs()), torch.tensor(chapter_batch())
    x = chapter_inputs(np.float64)
    with torch.no_grad():
        torch.manual_seed(SEEDS["SelfAttention_v1"])
        sa_v1 = book.SelfAttention_v1(3, 2)
        Wq, Wk, Wv = (p.numpy().astype(np.float64) for p in sa_v1.parameters())
        query_2, keys, values = x[QUERY_INDEX] @ Wq, x @ Wk, x @ Wv
        scores_2 = query_2 @ keys.T
        weights_2 = np.exp(scores_2 / np.sqrt(2)) / np.exp(scores_2 / np.sqrt(2)).sum()
        for name, value in [
            ("W_query", Wq),
            ("query_2", query_2),
            ("attn_scores_2", scores_2),
            ("attn_weights_2", weights_2),
            ("context_vec_2", weights_2 @ values),
            ("sa_v1(inputs)", sa_v1(inputs)),
        ]:
            find_run(printed, value, name)
        torch.manual_seed(SEEDS["SelfAttention_v2"])
        sa_v2 = book.SelfAttention_v2(3, 2)
        find_run(printed, sa_v2(inputs), "sa_v2(inputs)")
        q = x @ sa_v2.W_query.weight.numpy().T
        k = x @ sa_v2.W_key.weight.numpy().T
        scores = np.where(np.tri(6, dtype=bool), q @ k.T / np.sqrt(2), -np.inf)
        causal = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
        find_run(printed, causal, "causal attn_weights")
        torch.manual_seed(SEEDS["dropout"])
        dropped_ones = torch.nn.Dropout(0.5)(torch.ones(6, 6)).numpy()
        find_run(printed, dropped_ones, "dropout(example)")
        find_run(printed, causal * dropped_ones, "dropout(attn_weights)")
        for name, args in [
            ("CausalAttention", (6, 0.0)),
            ("MultiHeadAttentionWrapper", (6, 0.0, 2)),
            ("MultiHeadAttention", (6, 0.0, 2)),
        ]:
            torch.manual_seed(SEEDS[name])
            find_run(printed, getattr(book, name)(3, 2, *args)(batch), name)
        gpt2 = book.MultiHeadAttention(768, 768, 1024, 0.0, 12)
        count = sum(p.numel() for p in gpt2.parameters())
    assert f"{count:,} parameters" in demo_output
    assert "2,360,064" in demo_output  # the book's answer to exercise 3.3
    assert "Central differences in float64" in demo_output and "DISAGREE" not in demo_output


def mha_numpy(sd, x, num_heads):
    """The chapter's MultiHeadAttention forward, written out in numpy for this test."""
    b, t, _ = x.shape
    q, k, v = (x @ sd[f"W_{n}.weight"].T for n in ("query", "key", "value"))
    split = [a.reshape(b, t, num_heads, -1).transpose(0, 2, 1, 3) for a in (q, k, v)]
    q, k, v = split
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    scores = np.where(np.tri(t, dtype=bool), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
    return context @ sd["out_proj.weight"].T + sd["out_proj.bias"]


def test_demo_without_torch_says_numbers_differ_and_writes_figures(monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    import npattn
    from npattn.chapter.plots import FIGURES

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert demo.main(plot_dir=tmp_path) == 0
    text = capsys.readouterr().out
    assert "DIFFER from the book" in text.replace("\n", " ")
    printed = printed_numbers(text)
    check_stage1(printed)
    x = chapter_batch(np.float64)
    mha = npattn.MultiHeadAttention(3, 2, 6, 0.0, 2, rng=SEEDS["MultiHeadAttention"])
    sd = {k: v.astype(np.float64) for k, v in mha.state_dict().items()}
    find_run(printed, mha_numpy(sd, x, 2), "MultiHeadAttention (npattn init)")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{n}.png" for n in FIGURES)
    for name in names:
        assert str(tmp_path / name) in text


def test_format_array_prints_four_decimals_like_the_book():
    a = np.array([[0.12344, -1.5], [2.0, 0.0]])
    assert demo.format_array(a) == "[[ 0.1234, -1.5000],\n [ 2.0000,  0.0000]]"
    assert demo.format_array(np.array([0.5, 1.0])) == "[0.5000, 1.0000]"
    assert demo.format_array(np.tri(2, dtype=bool)) == "[[1, 0],\n [1, 1]]"
