"""Decoding speed: one token at a time after a prompt, one attention layer, batch 1, float32.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/decode_npattn.py
    python benchmarks/decode_npattn.py --quick          # smaller, fewer repeats
    python benchmarks/decode_npattn.py --profile        # also: where npattn's cached time goes

Rows, side by side in one process, each repeat running every row once in a rotated order
(medians of interleaved repeats, so load from other processes spreads over all rows):
    npattn, cache      GroupedQueryAttention(..., use_cache=True), one token per call
    npattn, no cache   the full forward over prompt + tokens so far, per new token
    torch, cache       TorchCachedGQA below: the book's style of cache (torch.cat on every
                       call, masked_fill, softmax), written here, under torch.no_grad()
Configurations: d=768, 12 heads, with 12 key/value groups (multi-head attention) and 4.
The torch class is given npattn's weights, and the cached outputs are checked to agree.
Threads are pinned (--threads, default 1) for numpy's BLAS and torch: decoding one token is a
chain of small matrix-vector products, which extra threads on a busy machine only slow down.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompt-tokens", type=int, default=512, help="tokens fed before decoding")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens decoded one at a time")
    p.add_argument("--uncached-tokens", type=int, default=8, help="new tokens, no-cache rows")
    p.add_argument("--d", type=int, default=768, help="d_in = d_out")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--groups", type=int, nargs="+", default=[12, 4], help="num_kv_groups")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    p.add_argument("--quick", action="store_true", help="prompt 64, 16 new tokens, 3 repeats")
    p.add_argument("--profile", action="store_true", help="profile npattn's cached decoding")
    args = p.parse_args(argv)
    if args.quick:
        args.prompt_tokens, args.new_tokens, args.uncached_tokens, args.repeats = 64, 16, 4, 3
    return args


def torch_class():
    import torch
    from torch import nn

    class TorchCachedGQA(nn.Module):
        """Grouped-query attention with a KV cache, the book's way: the cache grows by
        torch.cat, the causal mask comes from positions, masked_fill then softmax."""

        def __init__(self, d_in, d_out, num_heads, num_kv_groups):
            super().__init__()
            self.num_heads, self.num_kv_groups = num_heads, num_kv_groups
            self.head_dim = d_out // num_heads
            self.d_out = d_out
            self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False)
            self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False)
            self.W_query = nn.Linear(d_in, d_out, bias=False)
            self.out_proj = nn.Linear(d_out, d_out, bias=False)
            self.cache_k = self.cache_v = None
            self.ptr_current_pos = 0

        def reset_cache(self):
            self.cache_k = self.cache_v = None
            self.ptr_current_pos = 0

        def forward(self, x, use_cache=False):
            b, T, _ = x.shape
            H, G, E = self.num_heads, self.num_kv_groups, self.head_dim
            queries = self.W_query(x).view(b, T, H, E).transpose(1, 2)  # (b, H, T, E)
            keys = self.W_key(x).view(b, T, G, E).transpose(1, 2)  # (b, G, T, E)
            values = self.W_value(x).view(b, T, G, E).transpose(1, 2)
            start = self.ptr_current_pos if use_cache else 0
            if use_cache:
                if self.cache_k is not None:
                    keys = torch.cat([self.cache_k, keys], dim=2)  # (b, G, S, E)
                    values = torch.cat([self.cache_v, values], dim=2)
                self.cache_k, self.cache_v = keys, values
                self.ptr_current_pos += T
            else:
                self.reset_cache()
            if H != G:
                keys = keys.repeat_interleave(H // G, dim=1)  # (b, H, S, E)
                values = values.repeat_interleave(H // G, dim=1)
            S = keys.shape[2]
            attn_scores = queries @ keys.transpose(2, 3)  # (b, H, T, S)
            q_pos = torch.arange(start, start + T).unsqueeze(1)  # (T, 1)
            k_pos = torch.arange(S).unsqueeze(0)  # (1, S)
            attn_scores.masked_fill_(k_pos > q_pos, -torch.inf)
            attn_weights = torch.softmax(attn_scores / E**0.5, dim=-1)
            context = (attn_weights @ values).transpose(1, 2).reshape(b, T, self.d_out)
            return self.out_proj(context)

    return TorchCachedGQA


def make_rows(args, groups):
    """(name, setup, step) per row: setup() prefills, step(i) decodes token i."""
    import numpy as np
    import torch

    import npattn

    d, H, P = args.d, args.heads, args.prompt_tokens
    n_total = P + max(args.new_tokens, args.uncached_tokens)
    x = np.random.default_rng(0).standard_normal((1, n_total, d)).astype(np.float32)
    xt = torch.from_numpy(x)
    m = npattn.GroupedQueryAttention(d, d, 0.0, H, groups, rng=0).eval()
    t = torch_class()(d, d, H, groups).eval()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})

    def np_setup():
        m.reset_cache()
        m(x[:, :P], use_cache=True)

    def torch_setup():
        t.reset_cache()
        with torch.no_grad():
            t(xt[:, :P], use_cache=True)

    def torch_step(i):
        with torch.no_grad():
            return t(xt[:, i : i + 1], use_cache=True)

    rows = [
        ("npattn, cache", np_setup, lambda i: m(x[:, i : i + 1], use_cache=True)),
        ("npattn, no cache", lambda: None, lambda i: m(x[:, : i + 1])[:, -1:]),
        ("torch, cache", torch_setup, torch_step),
    ]
    # the rows compute the same thing: check the first decoded token
    np_setup()
    torch_setup()
    got = [rows[0][2](P), rows[1][2](P), torch_step(P).numpy()]
    for name, out in zip(("npattn, no cache", "torch, cache"), got[1:]):
        np.testing.assert_allclose(out, got[0], rtol=1e-4, atol=1e-5, err_msg=name)
    return rows, m


def time_rows(rows, args):
    P = args.prompt_tokens
    times = {name: [] for name, *_ in rows}
    for rep in range(args.repeats):
        k = rep % len(rows)
        for name, setup, step in rows[k:] + rows[:k]:  # a rotated order each repeat
            n = args.uncached_tokens if "no cache" in name else args.new_tokens
            setup()
            t0 = time.perf_counter()
            for i in range(P, P + n):
                step(i)
            times[name].append(n / (time.perf_counter() - t0))  # tokens per second
    return {name: statistics.median(ts) for name, ts in times.items()}


def profile_npattn(m, args, top=14):
    import numpy as np

    P = args.prompt_tokens
    x = np.random.default_rng(1).standard_normal((1, P + args.new_tokens, args.d))
    x = x.astype(np.float32)
    m.reset_cache()
    m(x[:, :P], use_cache=True)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(P, P + args.new_tokens):
        m(x[:, i : i + 1], use_cache=True)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue())


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy or torch is imported
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    unset = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    print(
        f"# decoding after a {args.prompt_tokens}-token prompt, batch 1, float32, d={args.d}, "
        f"{args.heads} heads; {args.threads} thread(s); numpy {np.__version__}, torch "
        f"{torch.__version__}; medians of {args.repeats} interleaved repeats"
        + (f"; set: {', '.join(unset)}" if unset else "")
    )
    print(f"{'layer':<22}{'row':<18}{'tokens/s':>10}{'vs torch, cache':>17}")
    for groups in args.groups:
        rows, m = make_rows(args, groups)
        tps = time_rows(rows, args)
        kind = "MHA" if groups == args.heads else "GQA"
        layer = f"{kind} ({groups} kv groups)"
        for name, _, _ in rows:
            ratio = tps[name] / tps["torch, cache"]
            print(f"{layer:<22}{name:<18}{tps[name]:>10.1f}{ratio:>16.2f}x")
        if args.profile:
            print(f"\n## where npattn's cached decoding spends its time, {layer}")
            profile_npattn(m, args)


if __name__ == "__main__":
    main()
