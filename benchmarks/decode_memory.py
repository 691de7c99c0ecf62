"""The memory an attention module holds after cached decoding, besides its KV cache: every
array reachable from the module (children, caches, shown arrays), each buffer counted once,
for every class with a KV cache.

    python benchmarks/decode_memory.py              # d=768, 12 heads, prompt 512, 64 tokens

float32, batch 1; GQA and Qwen3 with 4 key/value groups, SWA with a window of 256, MLA with
its default latent (d / 8).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    args = p.parse_args(argv)
    sys.path[:0] = [HERE, ROOT]
    import numpy as np
    from decode import held_bytes

    import npattn

    d, H, P, N = args.d, args.heads, args.prompt, args.tokens
    ctx = P + N
    modules = {
        "MultiHeadAttention": npattn.MultiHeadAttention(d, d, ctx, 0.0, H, rng=0),
        "GroupedQueryAttention": npattn.GroupedQueryAttention(d, d, 0.0, H, 4, rng=0),
        "MultiHeadLatentAttention": npattn.MultiHeadLatentAttention(d, d, 0.0, H, rng=0),
        "MultiHeadAttentionWithSWA": npattn.MultiHeadAttentionWithSWA(
            d, d, 0.0, H, sliding_window_size=256, rng=0
        ),
        "Qwen3Attention": npattn.Qwen3Attention(d, H, 4, context_length=ctx, rng=0),
    }
    x = np.random.default_rng(0).standard_normal((1, ctx, d)).astype(np.float32)
    print(
        f"After a {P}-token prompt and {N} decoded tokens, batch 1, d={d}, {H} heads, float32"
        " (KiB):\n"
    )
    print("| class | parameters, buffers | other arrays held | KV cache held | other / KV |")
    print("|---|---|---|---|---|")
    for name, m in modules.items():
        m.eval()
        m(x[:, :P], use_cache=True)
        for t in range(P, ctx):
            m(x[:, t : t + 1], use_cache=True)
        state, other, _ = held_bytes(m)
        kv = m.cache_nbytes
        print(
            f"| {name} | {state / 2**10:.0f} | {other / 2**10:.0f} | {kv / 2**10:.0f} | "
            f"{other / kv:.2f}x |"
        )


if __name__ == "__main__":
    main()
