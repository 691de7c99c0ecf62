"""`python -m npattn decode`: a prompt, then one token at a time, through one attention layer
of each class, with and without the KV cache.

For each class it prints the decoding speed (new tokens per second) with the cache and
without it (a full forward over the prompt and every token so far, for each new token), the
cache's size after the last token (bytes held, and bytes allocated for it), and the largest
difference between the two ways' outputs. Weights are seeded; inputs are random vectors
standing in for token embeddings.

Shapes: x (1, P + N, d), P prompt tokens and N new ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import modules as M

DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass
class DecodeResult:
    name: str
    cached_tps: float  # new tokens per second, with the cache
    uncached_tps: float  # new tokens per second, full forward per token
    cache_nbytes: int  # bytes the cache holds after the last token
    cache_allocated_nbytes: int  # bytes allocated for it
    max_diff: float  # max |cached - uncached| over the new tokens' outputs


def layers(d: int, heads: int, groups: int, window: int, context_length: int, seed: int):
    """(name, module or None, why skipped) for each class, seeded, in eval mode."""
    specs = [
        (
            "GroupedQueryAttention",
            lambda: M.GroupedQueryAttention(d, d, 0.0, heads, groups, rng=seed),
        ),
        (
            "MultiHeadLatentAttention",
            lambda: M.MultiHeadLatentAttention(d, d, 0.0, heads, rng=seed),
        ),
        ("MultiHeadLatentAttention, absorbed", lambda: _absorbed(d, heads, seed)),
        (
            f"MultiHeadAttentionWithSWA, W={window}",
            lambda: M.MultiHeadAttentionWithSWA(
                d, d, 0.0, heads, sliding_window_size=window, rng=seed
            ),
        ),
        (
            "Qwen3Attention",
            lambda: M.Qwen3Attention(d, heads, groups, context_length=context_length, rng=seed),
        ),
        (
            "MultiHeadAttention",
            lambda: M.MultiHeadAttention(d, d, context_length, 0.0, heads, rng=seed),
        ),
    ]
    out = []
    for name, build in specs:
        try:
            out.append((name, build().eval(), None))
        except ValueError as e:  # e.g. Qwen3Attention's RoPE needs an even head_dim
            out.append((name, None, str(e)))
    return out


def _absorbed(d: int, heads: int, seed: int):
    m = M.MultiHeadLatentAttention(d, d, 0.0, heads, rng=seed)
    m.absorbed = True  # cached calls attend on the latents
    return m


class Progress:
    """A progress bar on stderr: tqdm when it is installed, else a plain counter; silent when
    stderr is not a terminal (unless forced)."""

    def __init__(self, total: int, enabled: bool | None = None, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.done, self.bar, self.width = total, 0, None, 0
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, file=self.stream, unit="tok", leave=False)

    def update(self, n: int = 1, label: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description(label, refresh=False)
            self.bar.update(n)
        else:
            line = f"{label} {self.done}/{self.total}"
            self.stream.write("\r" + line.ljust(self.width))  # over the previous line
            self.width = max(self.width, len(line))
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def decode_one(name, m, x, prompt_tokens: int, progress: Progress) -> DecodeResult:
    """Decode x[:, P:] one token at a time with the cache, then without it."""
    P, N = prompt_tokens, x.shape[1] - prompt_tokens
    m.reset_cache()
    m(x[:, :P], use_cache=True)  # the prompt, in one call
    cached = []
    t0 = time.perf_counter()
    for i in range(P, P + N):
        cached.append(m(x[:, i : i + 1], use_cache=True))  # (1, 1, d)
        progress.update(1, f"{name}, cached")
    cached_s = time.perf_counter() - t0
    nbytes, allocated = m.cache_nbytes, m.cache_allocated_nbytes
    uncached = []
    t0 = time.perf_counter()
    for i in range(P, P + N):
        uncached.append(m(x[:, : i + 1])[:, -1:])  # the whole sequence again, keep the last
        progress.update(1, f"{name}, no cache")
    uncached_s = time.perf_counter() - t0
    diff = np.abs(np.concatenate(cached, axis=1) - np.concatenate(uncached, axis=1)).max()
    return DecodeResult(name, N / cached_s, N / uncached_s, nbytes, allocated, float(diff))


def run(
    prompt_tokens=128,
    new_tokens=32,
    d=256,
    heads=8,
    groups=2,
    dtype="float32",
    seed=0,
    window=None,
    progress=None,
    out=None,
) -> list[DecodeResult]:
    """Decode through every class, print one row each; returns the results."""
    out = sys.stdout if out is None else out
    window = max(1, prompt_tokens // 2) if window is None else window
    context_length = prompt_tokens + new_tokens
    x = np.random.default_rng(seed).standard_normal((1, context_length, d))
    x = x.astype(DTYPES[dtype])
    built = layers(d, heads, groups, window, context_length, seed)
    print(
        f"# prompt of {prompt_tokens} tokens, then {new_tokens} one at a time; d={d}, "
        f"{heads} heads, {groups} kv groups, {dtype}, seed {seed}",
        file=out,
    )
    print(
        f"{'class':<36}{'cached tok/s':>13}{'no cache':>10}{'speed-up':>10}"
        f"{'cache bytes':>13}{'allocated':>11}{'max |diff|':>12}",
        file=out,
    )
    bar = Progress(2 * new_tokens * sum(m is not None for _, m, _ in built), progress)
    results = []
    try:
        for name, m, why in built:
            if m is None:
                print(f"{name:<36}skipped: {why}", file=out)
                continue
            m.astype(DTYPES[dtype])
            r = decode_one(name, m, x, prompt_tokens, bar)
            results.append(r)
            print(
                f"{name:<36}{r.cached_tps:>13.1f}{r.uncached_tps:>10.1f}"
                f"{r.cached_tps / r.uncached_tps:>9.1f}x{r.cache_nbytes:>13,}"
                f"{r.cache_allocated_nbytes:>11,}{r.max_diff:>12.1e}",
                file=out,
            )
    finally:
        bar.close()
    return results


# Sizes are checked before anything is allocated: the weights of the six classes take about
# WEIGHT_BYTES_PER_D2 * d^2 bytes, and each full forward about SCORE_BYTES * heads * T^2.
MAX_D = 4096
MAX_TOKENS = 1 << 16
MAX_GIB = 4
WEIGHT_BYTES_PER_D2 = 256
SCORE_BYTES = 24


def add_arguments(parser) -> None:
    """The decode subcommand's options."""
    from .._cli import int_in

    positive = int_in(1, MAX_TOKENS)
    parser.add_argument("--prompt-tokens", type=positive, default=128, help="tokens fed first")
    parser.add_argument(
        "--new-tokens", type=positive, default=32, help="tokens decoded one at a time"
    )
    parser.add_argument("--d", type=int_in(1, MAX_D), default=256, help="model width d_in = d_out")
    parser.add_argument("--heads", type=int_in(1, MAX_D), default=8, help="attention heads")
    parser.add_argument(
        "--groups",
        type=int_in(1, MAX_D),
        default=2,
        help="key/value groups (GQA, Qwen3); divides --heads",
    )
    parser.add_argument(
        "--window",
        type=positive,
        default=None,
        help="sliding window (default: half the prompt)",
    )
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default="float32", help="dtype of weights and inputs"
    )
    parser.add_argument("--seed", type=int_in(0), default=0, help="seed of the weights and inputs")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )


def check_arguments(parser, args) -> None:
    """Refuse, through parser.refuse (one line, exit 2), sizes that do not fit together."""
    if args.d % args.heads:
        parser.refuse("--heads", f"must divide --d ({args.d}), got {args.heads}")
    if args.heads % args.groups:
        parser.refuse("--groups", f"must divide --heads ({args.heads}), got {args.groups}")
    T = args.prompt_tokens + args.new_tokens
    gib = SCORE_BYTES * args.heads * T * T / 2**30
    if gib > MAX_GIB:
        parser.refuse(
            "--prompt-tokens",
            f"{args.prompt_tokens} + --new-tokens {args.new_tokens} tokens with --heads "
            f"{args.heads} need about {gib:,.0f} GiB of attention scores (at most {MAX_GIB} GiB)",
        )


def main(args) -> int:
    """Run with the parsed options (checked by the parser and check_arguments)."""
    run(
        args.prompt_tokens,
        args.new_tokens,
        args.d,
        args.heads,
        args.groups,
        args.dtype,
        args.seed,
        args.window,
        args.progress,
    )
    return 0
