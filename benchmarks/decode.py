"""Decoding speed of one attention layer, one token at a time after a prompt, batch 1, float32:
npattn with and without the KV cache, torch_port with it, and the book's own chapter 4
KV-cache classes in torch (MultiHeadAttention of ch04/03_kv-cache, GroupedQueryAttention of
ch04/04_gqa: book_classes below). Also: the memory npattn's module holds after decoding, other
than its KV cache.

    make bench-decode        # env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE, --profile
    python benchmarks/decode.py --profile    # also: where npattn's cached time goes
    python benchmarks/decode.py --quick      # prompt 64, 16 tokens, 3 repeats

Layers: d=768 and 12 heads (GPT-2 small): multi-head attention (npattn and torch_port's
MultiHeadAttention, the chapter's class) and grouped-query attention with 4 key/value groups
(GroupedQueryAttention). Every path of a layer holds the same weights and decodes the same
tokens. One repeat of a path: prefill the prompt (untimed, cached paths only), then decode
--tokens tokens one per call (timed together); the paths without the cache run the full
forward over the prompt and the tokens so far for each new token, so they decode only
--uncached-tokens. Repeats are interleaved in a rotated order and the table gives medians, so
load from other processes spreads over all paths: compare the ratios, not the absolute rates.
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

from timing import pin_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOK = "book's class, cache"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens (prefilled, untimed)")
    p.add_argument("--tokens", type=int, default=64, help="tokens decoded per repeat, cached")
    p.add_argument("--uncached-tokens", type=int, default=8, help="the same, without the cache")
    p.add_argument("--d", type=int, default=768, help="d_in = d_out")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--groups", type=int, default=4, help="GQA's num_kv_groups")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--warmup", type=int, default=1, help="untimed repeats of every path first")
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="prompt 64, 16 tokens, 3 repeats")
    p.add_argument("--profile", action="store_true", help="profile npattn's cached decoding")
    p.add_argument("--out", help="also write the Markdown table to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.prompt, args.tokens, args.uncached_tokens, args.repeats = 64, 16, 4, 3
    return args


def book_classes(torch, nn):
    """The book's chapter 4 KV-cache classes, step for step as the book writes them
    (rasbt/LLMs-from-scratch: ch04/03_kv-cache/gpt_with_kv_cache.py's MultiHeadAttention,
    ch04/04_gqa's GroupedQueryAttention): the cache is a pair of non-persistent buffers that
    grows by torch.cat on every call; MHA slices its (context_length, context_length) mask
    buffer at ptr_current_pos, GQA compares positions and repeats each cached key/value head
    for its group with repeat_interleave."""

    class MultiHeadAttention(nn.Module):  # ch04/03_kv-cache
        def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
            super().__init__()
            assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
            self.d_out = d_out
            self.num_heads = num_heads
            self.head_dim = d_out // num_heads
            self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.out_proj = nn.Linear(d_out, d_out)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer(
                "mask",
                torch.triu(torch.ones(context_length, context_length), diagonal=1),
                persistent=False,
            )
            self.register_buffer("cache_k", None, persistent=False)
            self.register_buffer("cache_v", None, persistent=False)
            self.ptr_current_pos = 0

        def forward(self, x, use_cache=False):
            b, num_tokens, d_in = x.shape
            keys_new = self.W_key(x)  # (b, num_tokens, d_out)
            values_new = self.W_value(x)
            queries = self.W_query(x)
            keys_new = keys_new.view(b, num_tokens, self.num_heads, self.head_dim)
            values_new = values_new.view(b, num_tokens, self.num_heads, self.head_dim)
            queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)
            if use_cache:
                if self.cache_k is None:
                    self.cache_k, self.cache_v = keys_new, values_new
                else:
                    self.cache_k = torch.cat([self.cache_k, keys_new], dim=1)
                    self.cache_v = torch.cat([self.cache_v, values_new], dim=1)
                keys, values = self.cache_k, self.cache_v
            else:
                keys, values = keys_new, values_new
            keys = keys.transpose(1, 2)  # (b, num_heads, num_tokens, head_dim)
            queries = queries.transpose(1, 2)
            values = values.transpose(1, 2)
            attn_scores = queries @ keys.transpose(2, 3)
            num_tokens_Q = queries.shape[-2]
            num_tokens_K = keys.shape[-2]
            if use_cache:
                mask_bool = self.mask.bool()[
                    self.ptr_current_pos : self.ptr_current_pos + num_tokens_Q, :num_tokens_K
                ]
                self.ptr_current_pos += num_tokens_Q
            else:
                mask_bool = self.mask.bool()[:num_tokens_Q, :num_tokens_K]
            attn_scores.masked_fill_(mask_bool, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context_vec = (attn_weights @ values).transpose(1, 2)
            context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
            context_vec = self.out_proj(context_vec)
            return context_vec

        def reset_cache(self):
            self.cache_k, self.cache_v = None, None
            self.ptr_current_pos = 0

    class GroupedQueryAttention(nn.Module):  # ch04/04_gqa
        def __init__(self, d_in, d_out, num_heads, num_kv_groups, dtype=None):
            super().__init__()
            assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
            assert num_heads % num_kv_groups == 0, "num_heads must be divisible by num_kv_groups"
            self.d_out = d_out
            self.num_heads = num_heads
            self.head_dim = d_out // num_heads
            self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False, dtype=dtype)
            self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False, dtype=dtype)
            self.num_kv_groups = num_kv_groups
            self.group_size = num_heads // num_kv_groups
            self.W_query = nn.Linear(d_in, d_out, bias=False, dtype=dtype)
            self.out_proj = nn.Linear(d_out, d_out, bias=False, dtype=dtype)
            self.register_buffer("cache_k", None, persistent=False)
            self.register_buffer("cache_v", None, persistent=False)
            self.ptr_current_pos = 0

        def forward(self, x, use_cache=False):
            b, num_tokens, _ = x.shape
            queries = self.W_query(x)  # (b, num_tokens, d_out)
            keys = self.W_key(x)  # (b, num_tokens, num_kv_groups * head_dim)
            values = self.W_value(x)
            queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
            keys_new = keys.view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)
            values_new = values.view(b, num_tokens, self.num_kv_groups, self.head_dim)
            values_new = values_new.transpose(1, 2)
            if use_cache:
                if self.cache_k is None:
                    self.cache_k, self.cache_v = keys_new, values_new
                else:
                    self.cache_k = torch.cat([self.cache_k, keys_new], dim=2)
                    self.cache_v = torch.cat([self.cache_v, values_new], dim=2)
                keys, values = self.cache_k, self.cache_v
            else:
                keys, values = keys_new, values_new
            keys = keys.repeat_interleave(self.group_size, dim=1)  # (b, num_heads, S, head_dim)
            values = values.repeat_interleave(self.group_size, dim=1)
            attn_scores = queries @ keys.transpose(2, 3)
            num_tokens_Q = queries.shape[-2]
            num_tokens_K = keys.shape[-2]
            device = queries.device
            if use_cache:
                q_positions = torch.arange(
                    self.ptr_current_pos,
                    self.ptr_current_pos + num_tokens_Q,
                    device=device,
                    dtype=torch.long,
                )
                self.ptr_current_pos += num_tokens_Q
            else:
                q_positions = torch.arange(num_tokens_Q, device=device, dtype=torch.long)
                self.ptr_current_pos = 0
            k_positions = torch.arange(num_tokens_K, device=device, dtype=torch.long)
            mask = q_positions.unsqueeze(-1) < k_positions.unsqueeze(0)
            attn_scores = attn_scores.masked_fill(mask, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            assert keys.shape[-1] == self.head_dim
            context = (attn_weights @ values).transpose(1, 2)  # (b, num_tokens, heads, head_dim)
            context = context.reshape(b, num_tokens, self.d_out)
            context = self.out_proj(context)
            return context

        def reset_cache(self):
            self.cache_k, self.cache_v = None, None
            self.ptr_current_pos = 0

    return MultiHeadAttention, GroupedQueryAttention


class Path:
    """One way to decode a layer: prefill() untimed, then decode() timed; tokens/s per repeat."""

    def __init__(self, name, module, x, prompt, tokens, cached, is_torch):
        self.name, self.module, self.x, self.prompt = name, module, x, prompt
        self.tokens, self.cached, self.is_torch = tokens, cached, is_torch
        self.rates, self.outputs, self.cache_bytes = [], None, None

    def decode(self):
        if self.cached:
            self.module.reset_cache()
            self.module(self.x[:, : self.prompt], use_cache=True)
        outs = []
        t0 = time.perf_counter()
        for t in range(self.prompt, self.prompt + self.tokens):
            if self.cached:
                outs.append(self.module(self.x[:, t : t + 1], use_cache=True))
            else:
                outs.append(self.module(self.x[:, : t + 1])[:, -1:])
        return outs, time.perf_counter() - t0

    def run(self, torch):
        with torch.no_grad():
            outs, seconds = self.decode()
        self.rates.append(self.tokens / seconds)
        self.outputs = [o.numpy() if self.is_torch else o for o in outs]
        self.cache_bytes = sum(  # the book's classes have no cache_nbytes: count alike
            a.nbytes for a in (self.module.cache_k, self.module.cache_v) if a is not None
        )


def build(args):
    """[(layer label, paths, the npattn module with the cache)] for MHA and GQA."""
    import numpy as np
    import torch

    import torch_port as tp

    torch.manual_seed(args.seed)
    d, H, G, P = args.d, args.heads, args.groups, args.prompt
    total = P + max(args.tokens, args.uncached_tokens)
    x = torch.randn(1, total, d)
    x_np = x.numpy().astype(np.float32)
    BookMHA, BookGQA = book_classes(torch, torch.nn)
    mha = tp.MultiHeadAttention(d, d, total, 0.0, H)
    gqa = tp.GroupedQueryAttention(d, d, 0.0, H, G)
    layers = (
        (f"MHA, {H} heads", mha, BookMHA(d, d, total, 0.0, H)),
        (f"GQA, {H} heads, {G} groups", gqa, BookGQA(d, d, H, G)),
    )
    configs = []
    for label, port, book in layers:
        port.eval().keep_attn_weights = False
        missing, _ = book.load_state_dict(port.state_dict(), strict=False)  # not the mask
        assert not missing, missing
        cached = tp.to_npattn(port).eval()  # its own copy: each path keeps its own cache
        n_cached, n_full = args.tokens, args.uncached_tokens
        paths = [
            Path("npattn, cache", cached, x_np, P, n_cached, True, False),
            Path("npattn, no cache", tp.to_npattn(port).eval(), x_np, P, n_full, False, False),
            Path("torch_port, cache", port, x, P, n_cached, True, True),
            Path(BOOK, book.eval(), x, P, n_cached, True, True),
        ]
        configs.append((label, paths, cached))
    return configs


def held_bytes(module) -> tuple:
    """(parameters and buffers, other arrays, KV cache storage): bytes of the memory kept alive
    by everything reachable from an npattn module (children, caches, shown arrays), each
    buffer counted once, whatever views of it are held."""
    import numpy as np

    seen, owners = set(), {}

    def visit(obj):
        if id(obj) in seen or obj is None or isinstance(obj, (str, int, float, bool)):
            return
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            owner = obj
            while isinstance(owner.base, np.ndarray):
                owner = owner.base
            owners[id(owner)] = owner
        elif isinstance(obj, (tuple, list)):
            for item in obj:
                visit(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item)
        elif type(obj).__module__.startswith("npattn") and hasattr(obj, "__dict__"):
            visit(vars(obj))  # modules, the KV buffer

    visit(module)
    kv = {id(a) for a in module._kv.arrays}
    state = set()
    for a in module.state_dict().values():
        while isinstance(a.base, np.ndarray):
            a = a.base
        state.add(id(a))
    size = {key: sum(a.nbytes for k, a in owners.items() if k in keys) for key, keys in (
        ("state", state), ("kv", kv))}  # fmt: skip
    other = sum(a.nbytes for k, a in owners.items() if k not in state and k not in kv)
    return size["state"], other, size["kv"]


def memory_lines(configs) -> list:
    tokens = configs[0][1][0].tokens
    lines = [
        "",
        f"Memory held by npattn's module after the last repeat (prompt and {tokens} tokens "
        "decoded), KiB:",
        "",
        "| layer | parameters, buffers | other arrays held | KV cache held | KV storage |",
        "|---|---|---|---|---|",
    ]
    for label, _, module in configs:
        state, other, kv = held_bytes(module)
        lines.append(
            f"| {label} | {state / 2**10:.0f} | {other / 2**10:.0f} | "
            f"{module.cache_nbytes / 2**10:.0f} | {kv / 2**10:.0f} |"
        )
    return lines


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def table(configs, args) -> str:
    import numpy as np

    lines = [
        f"Decoding after a {args.prompt}-token prompt, batch 1, d={args.d}, float32, "
        f"{args.threads} thread(s), {cpu_name()}; medians of {args.repeats} interleaved "
        f"repeats of {args.tokens} tokens ({args.uncached_tokens} without the cache).",
        "",
        f"| layer | path | tokens/s | / {BOOK.split(',')[0]} | cache KiB | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for label, paths, _ in configs:
        base = statistics.median(next(p for p in paths if p.name == BOOK).rates)
        ref = np.concatenate(paths[2].outputs, axis=1)  # torch_port's, cached
        for p in paths:
            rate, out = statistics.median(p.rates), np.concatenate(p.outputs, axis=1)
            diff = np.abs(out - ref[:, : out.shape[1]]).max()
            kib = f"{p.cache_bytes / 2**10:.0f}" if p.cached else "-"
            lines.append(
                f"| {label} | {p.name} | {rate:.0f} | {rate / base:.2f}x | {kib} | {diff:.1e} |"
            )
            if p.name == "npattn, cache":
                ratios.append(f"- {label}: npattn with the cache / {BOOK}: {rate / base:.2f}x")
    return "\n".join(lines + [""] + ratios + memory_lines(configs)) + "\n"


def short(file: str) -> str:
    """A source file's path from the repository, or from site-packages."""
    return file.removeprefix(ROOT + os.sep).split("site-packages" + os.sep)[-1]


def profile(module, x, prompt, tokens, top=12) -> str:
    """cProfile of npattn's cached decoding: the functions with the most own time, per token.
    Matrix products count in the function that calls them (numpy's @ is not a Python call);
    the profiler's own overhead inflates the small functions."""
    module.reset_cache()
    module(x[:, :prompt], use_cache=True)
    prof = cProfile.Profile()
    prof.enable()
    for t in range(prompt, prompt + tokens):
        module(x[:, t : t + 1], use_cache=True)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = [
        (tottime, calls, f"{short(file)}:{line}({name})")
        for (file, line, name), (_, calls, tottime, _, _) in stats.stats.items()
    ]
    total = sum(r[0] for r in rows)
    out = [f"{'own us/token':>13}{'share':>7}{'calls/token':>12}  function"]
    for tottime, calls, where in sorted(rows, reverse=True)[:top]:
        out.append(
            f"{1e6 * tottime / tokens:>13.1f}{tottime / total:>7.0%}{calls / tokens:>12.1f}  "
            f"{where}"
        )
    out.append(f"{1e6 * total / tokens:>13.1f}   100%  (total, profiled)")
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    pin_threads(args.threads)  # before numpy or torch is imported
    sys.path.insert(0, ROOT)
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    pinned = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    print(
        f"# numpy {np.__version__}, torch {torch.__version__}"
        + (f"; still set: {', '.join(pinned)}" if pinned else ""),
        file=sys.stderr,
    )
    configs = build(args)
    paths = [p for _, ps, _ in configs for p in ps]
    for _ in range(args.warmup):
        for p in paths:
            p.run(torch)
    for p in paths:
        p.rates.clear()
    for r in range(args.repeats):
        for p in paths[r % len(paths) :] + paths[: r % len(paths)]:  # a rotated order
            p.run(torch)
        print(f"  repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    md = table(configs, args)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    if args.profile:
        for label, paths, module in configs:
            print(f"## where npattn's cached decoding spends its time: {label}")
            print(profile(module, paths[0].x, args.prompt, args.tokens) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
