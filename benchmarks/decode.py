"""Decoding speed of one attention layer, one token at a time after a prompt, with and without
the KV cache: npattn against torch_port and a torch class written in the style of the book's
ch. 4 KV-cache bonus (torch.cat on the cache, masked_fill, softmax).

    python benchmarks/decode.py                       # d=768, 12 heads (MHA) and 4 groups (GQA)
    python benchmarks/decode.py --prompt 8 --tokens 4 --d 16 --heads 4 --groups 2 --repeats 3

Every path decodes the same tokens with the same weights (float32, batch 1). One repeat of a
path: prefill the prompt (untimed), then --tokens steps of one token each (timed together).
Repeats are interleaved in a rotated order and the tables give medians, so load from other
processes spreads over all paths; compare the ratios, not the absolute numbers. Without the
cache, each step runs the full forward over the prompt and the tokens so far and keeps the
last row. npattn rows are skipped, with the reason, where npattn lacks the class or the cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens (prefilled, untimed)")
    p.add_argument("--tokens", type=int, default=64, help="decoded tokens per repeat (timed)")
    p.add_argument("--d", type=int, default=768, help="d_in = d_out")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--groups", type=int, default=4, help="GQA's num_kv_groups")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--warmup", type=int, default=1, help="untimed repeats of every path first")
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the Markdown table to this file")
    return p.parse_args(argv)


def book_style_classes(torch, nn):
    """Two torch classes in the style of the book's bonus code: the ch. 4 KV-cache MHA (cache
    (B, S, H, E), the mask buffer sliced at the cache position) and the GQA one (cache
    (B, G, S, E), a mask from position comparisons, repeat_interleave)."""

    class BookStyleMHA(nn.Module):
        def __init__(self, d_in, d_out, context_length, num_heads):
            super().__init__()
            self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
            self.W_query = nn.Linear(d_in, d_out, bias=False)
            self.W_key = nn.Linear(d_in, d_out, bias=False)
            self.W_value = nn.Linear(d_in, d_out, bias=False)
            self.out_proj = nn.Linear(d_out, d_out)
            self.dropout = nn.Dropout(0.0)
            ones = torch.ones(context_length, context_length)
            self.register_buffer("mask", torch.triu(ones, diagonal=1), persistent=False)
            self.cache_k = self.cache_v = None
            self.ptr_current_pos = 0

        def forward(self, x, use_cache=False):
            b, n, _ = x.shape
            shape = (b, n, self.num_heads, self.head_dim)
            q = self.W_query(x).view(shape)
            k_new, v_new = self.W_key(x).view(shape), self.W_value(x).view(shape)
            if use_cache:
                if self.cache_k is None:
                    self.cache_k, self.cache_v = k_new, v_new
                else:
                    self.cache_k = torch.cat([self.cache_k, k_new], dim=1)
                    self.cache_v = torch.cat([self.cache_v, v_new], dim=1)
                k, v = self.cache_k, self.cache_v
            else:
                k, v = k_new, v_new
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            scores = q @ k.transpose(2, 3)
            start = self.ptr_current_pos if use_cache else 0
            masked = self.mask.bool()[start : start + n, : k.shape[2]]
            if use_cache:
                self.ptr_current_pos += n
            scores.masked_fill_(masked, -torch.inf)
            weights = self.dropout(torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1))
            ctx = (weights @ v).transpose(1, 2).contiguous().view(b, n, self.d_out)
            return self.out_proj(ctx)

        def reset_cache(self):
            self.cache_k = self.cache_v = None
            self.ptr_current_pos = 0

    class BookStyleGQA(nn.Module):
        def __init__(self, d_in, d_out, num_heads, num_kv_groups):
            super().__init__()
            self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
            self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False)
            self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False)
            self.num_kv_groups, self.group_size = num_kv_groups, num_heads // num_kv_groups
            self.W_query = nn.Linear(d_in, d_out, bias=False)
            self.out_proj = nn.Linear(d_out, d_out, bias=False)
            self.dropout = nn.Dropout(0.0)
            self.cache_k = self.cache_v = None
            self.ptr_current_pos = 0

        def forward(self, x, use_cache=False):
            b, n, _ = x.shape
            q = self.W_query(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            kv_shape = (b, n, self.num_kv_groups, self.head_dim)
            k_new = self.W_key(x).view(kv_shape).transpose(1, 2)
            v_new = self.W_value(x).view(kv_shape).transpose(1, 2)
            if use_cache:
                if self.cache_k is None:
                    self.cache_k, self.cache_v = k_new, v_new
                else:
                    self.cache_k = torch.cat([self.cache_k, k_new], dim=2)
                    self.cache_v = torch.cat([self.cache_v, v_new], dim=2)
                k, v = self.cache_k, self.cache_v
            else:
                k, v = k_new, v_new
            k = k.repeat_interleave(self.group_size, dim=1)
            v = v.repeat_interleave(self.group_size, dim=1)
            scores = q @ k.transpose(2, 3)
            start = self.ptr_current_pos if use_cache else 0
            q_pos = torch.arange(start, start + n, device=x.device)
            k_pos = torch.arange(k.shape[2], device=x.device)
            if use_cache:
                self.ptr_current_pos += n
            scores = scores.masked_fill(q_pos.unsqueeze(-1) < k_pos.unsqueeze(0), -torch.inf)
            weights = self.dropout(torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1))
            ctx = (weights @ v).transpose(1, 2).contiguous().view(b, n, self.d_out)
            return self.out_proj(ctx)

        def reset_cache(self):
            self.cache_k = self.cache_v = None
            self.ptr_current_pos = 0

    return BookStyleMHA, BookStyleGQA


class Path:
    """One way to decode: `prefill()` untimed, then `decode()` timed; tokens/s per repeat."""

    def __init__(self, name, module, x, prompt, cached, is_torch):
        self.name, self.module, self.x, self.prompt = name, module, x, prompt
        self.cached, self.is_torch = cached, is_torch
        self.rates, self.outputs, self.cache_bytes = [], None, None

    def prefill(self):
        if self.cached:
            self.module.reset_cache()
            self.module(self.x[:, : self.prompt], use_cache=True)

    def decode(self):
        outs = []
        for t in range(self.prompt, self.x.shape[1]):
            if self.cached:
                y = self.module(self.x[:, t : t + 1], use_cache=True)
            else:
                y = self.module(self.x[:, : t + 1])[:, -1:]
            outs.append(y)
        return outs

    def run(self, torch):
        self.prefill()
        t0 = time.perf_counter()
        with torch.no_grad():
            outs = self.decode()
        seconds = time.perf_counter() - t0
        self.rates.append(len(outs) / seconds)
        self.outputs = [o.numpy() if self.is_torch else o for o in outs]
        self.cache_bytes = cache_bytes(self.module)


def cache_bytes(module) -> int:
    """Bytes held by a module's cache tensors or arrays (the book-style classes have no
    cache_nbytes, so this counts for every path alike)."""
    total = 0
    for name in ("cache_k", "cache_v", "cache_c_kv"):
        a = getattr(module, name, None)
        if a is not None:
            total += a.nbytes
    return total


def npattn_paths(name, port, x_np, prompt, log):
    """npattn's rows (with and without the cache), or [] with the reason logged."""
    import numpy as np

    import npattn
    import torch_port as tp

    if not hasattr(npattn, name):
        log(f"skipped npattn {name}: this npattn has no {name} class")
        return []
    ref = tp.to_npattn(port).eval()
    paths = [Path("npattn, no cache", ref, x_np, prompt, False, False)]
    try:
        ref(np.zeros((1, 1, x_np.shape[-1]), np.float32), use_cache=True)
        ref.reset_cache()
    except (TypeError, AttributeError) as err:
        log(f"skipped npattn {name} with cache: npattn's class has no KV cache ({err})")
        return paths
    # the cached path gets its own copy, so both keep their own state
    paths.insert(0, Path("npattn, cache", tp.to_npattn(port).eval(), x_np, prompt, True, False))
    return paths


def build(args, log):
    import numpy as np
    import torch

    import torch_port as tp

    torch.manual_seed(args.seed)
    total = args.prompt + args.tokens
    d, H, G = args.d, args.heads, args.groups
    x = torch.randn(1, total, d)
    BookStyleMHA, BookStyleGQA = book_style_classes(torch, torch.nn)
    configs = []
    mha = tp.MultiHeadAttention(d, d, total, 0.0, H).eval()
    gqa = tp.GroupedQueryAttention(d, d, 0.0, H, G).eval()
    book_mha = BookStyleMHA(d, d, total, H).eval()
    book_gqa = BookStyleGQA(d, d, H, G).eval()
    for port, book, label in (
        (mha, book_mha, f"MHA, {H} heads"),
        (gqa, book_gqa, f"GQA, {H} heads, {G} groups"),
    ):
        port.keep_attn_weights = False
        missing, _ = book.load_state_dict(port.state_dict(), strict=False)
        assert not missing, missing
        name = type(port).__name__
        paths = [
            Path("torch_port, cache", port, x, args.prompt, True, True),
            Path("book-style torch, cache", book, x, args.prompt, True, True),
        ]
        paths += npattn_paths(name, port, x.numpy().astype(np.float32), args.prompt, log)
        configs.append((label, paths))
    return configs


def table(configs, args) -> str:
    import numpy as np

    lines = [
        f"Decoding {args.tokens} tokens after a {args.prompt}-token prompt, batch 1, "
        f"d={args.d}, float32, {args.threads} thread(s); medians of {args.repeats} "
        "interleaved repeats.",
        "",
        "| layer | path | tokens/s | / book-style torch | cache KiB | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for label, paths in configs:
        base = statistics.median(paths[1].rates)
        ref = np.concatenate(paths[0].outputs, axis=1)
        for p in paths:
            rate = statistics.median(p.rates)
            diff = np.abs(np.concatenate(p.outputs, axis=1) - ref).max()
            kib = f"{p.cache_bytes / 2**10:.1f}" if p.cached else "-"
            lines.append(
                f"| {label} | {p.name} | {rate:.1f} | {rate / base:.2f}x | {kib} | {diff:.1e} |"
            )
            if p.name.startswith("npattn") and p.cached:
                ratios.append(
                    f"- {label}: npattn with cache / book-style torch: {rate / base:.2f}x"
                )
    return "\n".join(lines + [""] + ratios) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in THREAD_VARS:
        os.environ[var] = str(args.threads)
    sys.path.insert(0, ROOT)
    import torch

    torch.set_num_threads(args.threads)

    def log(msg):
        print(msg, file=sys.stderr)

    configs = build(args, log)
    paths = [p for _, ps in configs for p in ps]
    for _ in range(args.warmup):
        for p in paths:
            p.run(torch)
    for p in paths:
        p.rates.clear()
    for r in range(args.repeats):
        for p in paths[r % len(paths) :] + paths[: r % len(paths)]:
            p.run(torch)
        log(f"  repeat {r + 1}/{args.repeats} done")
    md = table(configs, args)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
