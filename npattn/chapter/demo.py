"""`python -m npattn demo`: chapter 3 on the command line, stage by stage, 4 decimals.

Every number printed is computed here (npattn.chapter.walkthrough); nothing is typed in.
With torch installed the trainable stages load the chapter's torch-seeded weights, so the
numbers are the book's; without it npattn's own seeded init is used and they differ.
"""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np

from .data import TOKENS, chapter_batch
from .walkthrough import walk

DECIMALS = 4  # the book prints 4 decimals
WIDTH = 92


def format_array(a, decimals: int = DECIMALS) -> str:
    """An array as the book prints tensors: nested brackets, fixed decimals, ', ' separators.

    Booleans print as 1 / 0 (the chapter's masks are ones and zeros).
    """
    a = np.asarray(a)
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    if np.issubdtype(a.dtype, np.integer):
        return np.array2string(a, separator=", ")
    # a leading space for the sign only where some value is negative, so columns line up
    sign = " " if np.any(np.signbit(a[np.isfinite(a)])) else ""
    text = np.array2string(
        a,
        separator=", ",
        max_line_width=WIDTH,
        threshold=10_000,
        formatter={"float_kind": lambda v: f"{v:{sign}.{decimals}f}"},
    )
    return "\n".join(line.rstrip() for line in text.split("\n"))


def _say(*sentences: str) -> None:
    """A paragraph of explanation, after a blank line."""
    print("\n" + textwrap.fill(" ".join(sentences), WIDTH))


def _show(name: str, value) -> None:
    """name = value, continuation lines indented under the first bracket."""
    lines = format_array(value).split("\n")
    print(f"{name} = {lines[0]}")
    for line in lines[1:]:
        print((" " * (len(name) + 3) + line).rstrip())


def _section(title: str) -> None:
    print(f"\n{'=' * WIDTH}\n{title}\n{'=' * WIDTH}")


def _weights_note(source: str) -> None:
    if source == "torch":
        _say(
            "Weights: the chapter's own, drawn by torch right after torch.manual_seed(123) (789",
            "for SelfAttention_v2) as in the book (npattn.chapter.weights), so these are the",
            "book's numbers.",
        )
    else:
        from .weights import torch_available

        _say(
            "Weights: npattn's own initialisation, seeded like the book (123, 789) but drawn",
            "by numpy's generator: these numbers DIFFER from the book's.",
            "Run with --weights auto to see the book's."
            if torch_available()
            else "Install torch to see the book's (from a clone of npattn:"
            " pip install -c constraints.txt -e '.[torch]').",
        )


def demo_simple(s: dict) -> None:
    _section("3.3.1 A simple self-attention mechanism without trainable weights")
    _say('The input: "Your journey starts with one step", one 3-d embedding per token:')
    for token, row in zip(TOKENS, s["inputs"]):
        print(f"  {token:<8} {format_array(row)}")
    _say(
        'The attention scores of the query x^(2) ("journey") are its dot products with every input:'
    )
    _show("attn_scores_2", s["attn_scores_2"])
    _say("Dividing them by their sum makes them add up to 1:")
    _show("attn_weights_2_tmp", s["attn_weights_2_tmp"])
    print(f"sum = {s['attn_weights_2_tmp'].sum():.{DECIMALS}f}")
    _say(
        "The softmax is the usual way: always positive, and it favours the largest scores.",
        "The chapter's naive softmax, exp(x) / sum(exp(x)):",
    )
    _show("attn_weights_2_naive", s["attn_weights_2_naive"])
    _say(
        "and npattn's stable softmax, which subtracts the row max first (same numbers,",
        "no overflow):",
    )
    _show("attn_weights_2", s["attn_weights_2"])
    print(f"sum = {s['attn_weights_2'].sum():.{DECIMALS}f}")
    _say("The context vector z^(2) is the attention-weighted sum of all the inputs:")
    _show("context_vec_2", s["context_vec_2"])

    _section("3.3.2 Computing attention weights for all input tokens")
    diff = np.abs(s["attn_scores"] - s["attn_scores_loops"]).max()
    _say(
        "All the scores at once, inputs @ inputs.T (the chapter's double loop gives the same",
        f"matrix, max difference {diff:.1e}):",
    )
    _show("attn_scores", s["attn_scores"])
    _say("A softmax along each row turns the scores into weights; every row sums to 1:")
    _show("attn_weights", s["attn_weights"])
    _show("row sums", s["attn_weights"].sum(axis=-1))
    _say("The context vectors are attn_weights @ inputs; the second row is z^(2) again:")
    _show("all_context_vecs", s["all_context_vecs"])


def demo_trainable(t: dict) -> None:
    _section("3.4 Implementing self-attention with trainable weights")
    _weights_note(t["source"])
    _say("Three (d_in=3, d_out=2) matrices project each input to a query, a key and a value:")
    for name in ("W_query", "W_key", "W_value"):
        _show(name, t[name])
    _say("The query of x^(2), and the keys and values of every input:")
    _show("query_2", t["query_2"])
    print(f"keys.shape = {t['keys'].shape}, values.shape = {t['values'].shape}")
    _say("The score of query 2 against key 2, then against every key:")
    print(f"attn_score_22 = {t['attn_score_22']:.{DECIMALS}f}")
    _show("attn_scores_2", t["attn_scores_2"])
    _say(
        "The scores are divided by sqrt(d_k) before the softmax, so that large head dims do",
        "not push the softmax into regions of tiny gradients:",
    )
    _show("attn_weights_2", t["attn_weights_2"])
    _show("context_vec_2", t["context_vec_2"])
    _say("SelfAttention_v1 does this for every token at once (its second row is context_vec_2):")
    _show("sa_v1(inputs)", t["sa_v1_out"])
    _say("SelfAttention_v2 uses Linear layers, with their better initialisation:")
    _show("sa_v2(inputs)", t["sa_v2_out"])
    diff = np.abs(t["sa_v2_out"] - t["v1_from_v2_out"]).max()
    _say(
        "Exercise 3.1: SelfAttention_v1 given v2's weights (transposed) gives the same",
        f"output, max difference {diff:.1e}.",
    )


def demo_causal(c: dict) -> None:
    _section("3.5.1 Applying a causal attention mask")
    _say("The weights of SelfAttention_v2 above, before masking:")
    _show("attn_weights", c["attn_weights"])
    _say(
        "In causal attention a token may only look at itself and the tokens before it.",
        "The mask is the lower triangle (1 = attend):",
    )
    _show("mask_simple", c["mask"])
    _say("Method 1: zero the weights above the diagonal ...")
    _show("masked_simple", c["masked_simple"])
    _say("... and divide each row by its new sum:")
    _show("masked_simple_norm", c["masked_simple_norm"])
    _say("Method 2: set the future scores to -inf, so that the softmax gives them weight 0:")
    _show("masked", c["masked"])
    _show("attn_weights", c["attn_weights_causal"])
    _say(
        f"Both methods give the same weights: max difference {c['methods_max_diff']:.1e}",
        "(float32 rounding). Method 2 needs one softmax and no renormalisation.",
    )


def demo_dropout(d: dict) -> None:
    _section("3.5.2 Masking additional attention weights with dropout")
    if d["source"] == "torch":
        _say("The keep-mask is torch's, drawn after torch.manual_seed(123) as in the book.")
    else:
        _say("The keep-mask is drawn by numpy's generator (seed 123): the book's differs.")
    _say(
        "Dropout with p = 0.5 on a matrix of ones zeroes about half the entries and scales",
        "the kept ones by 1 / (1 - p) = 2, so the expected value stays 1:",
    )
    _show("dropout(example)", d["example"])
    _say(
        "The same mask on the causal attention weights. Dropout is used in training only;",
        "in eval mode it is the identity:",
    )
    _show("dropout(attn_weights)", d["attn_weights"])


def demo_causal_attention(ca: dict, batch) -> None:
    _section("3.5.3 Implementing a compact causal attention class")
    _weights_note(ca["source"])
    _say("The batch holds the inputs twice, torch.stack((inputs, inputs)):")
    print(f"batch.shape = {batch.shape}")
    _say("CausalAttention(d_in=3, d_out=2, context_length=6, dropout=0.0) on the batch:")
    _show("context_vecs", ca["context_vecs"])
    print(f"context_vecs.shape = {ca['context_vecs'].shape}")


def demo_multihead(m: dict, gpt2_params: int) -> None:
    _section("3.6.1 Stacking multiple single-head attention layers")
    _weights_note(m["source"])
    _say(
        "MultiHeadAttentionWrapper(3, 2, 6, 0.0, num_heads=2) runs two CausalAttention heads",
        "and puts their outputs side by side: d_out=2 per head gives 4 columns. The first",
        "head is the CausalAttention above (same seed):",
    )
    _show("context_vecs", m["wrapper_out"])
    print(f"context_vecs.shape = {m['wrapper_out'].shape}")

    _section("3.6.2 Implementing multi-head attention with weight splits")
    _say(
        "MultiHeadAttention(3, 2, 6, 0.0, num_heads=2) computes one projection, splits it",
        "into 2 heads of head_dim 1, attends in each head, merges the heads and applies",
        "out_proj. Here d_out=2 is the total width:",
    )
    _show("context_vecs", m["context_vecs"])
    print(f"context_vecs.shape = {m['context_vecs'].shape}")
    _say(
        "Exercise 3.3: at GPT-2 small's size, MultiHeadAttention(768, 768, 1024, 0.0, 12)",
        f"has {gpt2_params:,} parameters (the mask buffer is not a parameter).",
    )


def demo_backward(mha) -> None:
    from ..gradcheck import check_module

    _section("Beyond the chapter: the backward pass")
    report = check_module(mha, chapter_batch(np.float64), seed=0)
    worst = max(report, key=lambda r: r.max_abs_err)
    _say(
        "Every npattn module has a hand-written backward: dx = mha.backward(dy) returns",
        "dL/dx and fills mha.grads. Central differences in float64 (npattn.gradcheck) agree",
        f"for all {len(report)} arrays (x and every parameter): the largest absolute error is",
        f"{worst.max_abs_err:.1e} ({worst.name}).",
        "" if report.passed else "SOME GRADIENTS DISAGREE.",
    )
    _say("Run `python -m npattn gradcheck` for the full report, stage by stage.")


def demo_backward_walkthrough(weights: str) -> None:
    from .backward_walkthrough import backward_walkthrough, format_walkthrough

    _section("Beyond the chapter: the attention backward, number by number")
    _say(
        "One causal head (CausalAttention's weights above) on the six tokens, in float64. The",
        "upstream gradient dout is random; each gradient is followed back one step at a time",
        "(docs/backward/sdpa.md) and printed beside its central-difference value.",
    )
    print("\n" + format_walkthrough(backward_walkthrough(weights)))


def main(plot_dir=None, weights: str = "auto") -> int:
    """Print the walk-through; with plot_dir, also write the heatmaps there. Returns 0.

    weights: "auto" (the chapter's torch-seeded weights if torch is installed), "torch" or
    "npattn" (npattn's own seeded init).
    """
    if plot_dir is not None and importlib.util.find_spec("matplotlib") is None:
        print("--plot needs matplotlib: pip install matplotlib")
        return 2
    w = walk(weights)
    print('npattn demo: chapter 3 of "Build a Large Language Model (From Scratch)", stage by')
    print("stage, in NumPy. Every number below is computed; the book prints 4 decimals too.")
    demo_simple(w.simple)
    demo_trainable(w.trainable)
    demo_causal(w.causal)
    demo_dropout(w.dropout)
    demo_causal_attention(w.causal_attention, w.batch)
    demo_multihead(w.multihead, w.gpt2_parameters)
    demo_backward(w.multihead["mha"])
    demo_backward_walkthrough(weights)
    from ..beyond.demo import demo_modern

    demo_modern(w.batch)
    if plot_dir is not None:
        from .plots import write_chapter_figures

        paths = write_chapter_figures(plot_dir, w)
        _section("Figures")
        _say(f"Attention heatmaps written to {plot_dir}:")
        for p in paths:
            print(f"  {p}")
    return 0
