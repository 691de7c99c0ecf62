"""Test your own attention module against the npattn reference.

    import npattn, torch_port.testing as tt
    ref = npattn.MultiHeadAttention(d_in=8, d_out=8, context_length=16, dropout=0.0,
                                    num_heads=2, qkv_bias=True)
    tt.assert_matches_reference(my_module, ref, weight_map=tt.maps.fused_c_attn())

The kit copies your module's weights into the reference (through `weight_map`), then lets
Hypothesis search over batch sizes, token counts and seeds for an input on which the two
disagree: in the output, in dL/dx, or in the gradient of any of your parameters (for a random
upstream gradient). It shrinks what it finds to the smallest case and raises
ReferenceMismatchError naming the quantity, the shapes, the seed and the error, with a line
that replays it. The search is deterministic (`seed=`).

- reference: any npattn module (chapter or modern, any configuration); it runs in float64.
- weight_map: None (same names), {reference_key: your_key}, or any differentiable callable
  {your_key: tensor} -> {reference_key: tensor}; ready ones in torch_port.testing.maps.
  Your parameter gradients are the reference's pulled back through it (weights.py).
- forward: callable (module, x) -> Tensor for modules returning tuples or taking masks.
- dtype: float64 (default), float32, float16 or bfloat16, judged by the error model in
  precision.py: normwise, relative to what plain torch achieves at that dtype.
Also: assert_decode_matches (KV-cache decoding), assert_sdpa_matches (an SDPA kernel) and
assert_hf_attention_matches (a transformers attention layer, in one line).
"""

from . import maps, weights
from .check import (
    Report,
    assert_matches_reference,
    compare,
    find_mismatch,
    measure,
)
from .decode import DecodeExample, assert_decode_matches, compare_decode
from .errors import (
    ConfigurationMismatchError,
    Example,
    KitSetupError,
    Mismatch,
    ReferenceMismatchError,
    StructuralSizeWarning,
    UnmappedParameterWarning,
)
from .hf import HFExample, assert_hf_attention_matches, compare_hf
from .oracle import SDPAExample, assert_sdpa_matches, compare_sdpa, plain_sdpa
from .precision import FACTOR, FLOOR, Judgement
from .setup import check_reference_tables

__all__ = [
    "FACTOR",
    "FLOOR",
    "ConfigurationMismatchError",
    "DecodeExample",
    "Example",
    "HFExample",
    "Judgement",
    "KitSetupError",
    "Mismatch",
    "ReferenceMismatchError",
    "Report",
    "SDPAExample",
    "StructuralSizeWarning",
    "UnmappedParameterWarning",
    "assert_decode_matches",
    "assert_hf_attention_matches",
    "assert_matches_reference",
    "assert_sdpa_matches",
    "check_reference_tables",
    "compare",
    "compare_decode",
    "compare_hf",
    "compare_sdpa",
    "find_mismatch",
    "maps",
    "measure",
    "plain_sdpa",
    "weights",
]
