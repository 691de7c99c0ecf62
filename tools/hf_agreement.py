"""The agreement of torch_port.hf's layers with Hugging Face transformers, in float64: per
family (and layer type) and quantity, the relative error max|ours - transformers| /
max|transformers| of torch_port's Attention (LatentAttention for DeepSeek-V3) and of
npattn's (when this npattn has the class).

Quantities (tests/hf_helpers.py): the output, dL/dx and the worst parameter gradient (pulled
back through weight_map to transformers' names) for L = sum(out * g) with a random g at
positions 3..9; cached decoding (prefill 5 tokens, then 4 one at a time, DynamicCache on
transformers' side); the same for a left-padded batch (2-D attention_mask, real rows only).
transformers' float32 steps (eager softmax, RMSNorm, RoPE angles) are kept in float64 as
tests/hf_helpers.py explains.

    PYTHONPATH=.:tests python tools/hf_agreement.py
    make hf-agreement
"""

from __future__ import annotations

import warnings

import hf_helpers as H


def main() -> None:
    impls = ["torch", "npattn"]
    names = {"torch": "torch_port", "npattn": "npattn"}
    header = ["family", "layer"] + list(H.QUANTITIES)
    for impl in impls:
        print(f"\n{names[impl]} vs transformers (float64, max relative error)\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        worst = 0.0
        for family in H.FAMILIES:
            for layer_idx in H.LAYERS.get(family, (0,)):
                case = H.make_case(family, layer_idx)
                if impl == "npattn" and not H.has_npattn(case):
                    continue
                kind = "sliding" if case.sliding else "full"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    errs = H.agreement(case, impl)
                worst = max(worst, *errs.values())
                cells = [f"{errs[q]:.1e}" for q in H.QUANTITIES]
                print(f"| {family} | {layer_idx} ({kind}) | " + " | ".join(cells) + " |")
        print(f"\nworst: {worst:.1e}")


if __name__ == "__main__":
    main()
