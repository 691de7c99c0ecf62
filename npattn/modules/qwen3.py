"""Qwen3's attention (and, with qk_norm=False and rope_base=500_000, Llama 3's): grouped-query
attention with RMSNorm on each head's queries and keys (QK-norm), then RoPE.

A preset of npattn.Attention (npattn/models/attention.py): the book's arguments become an
AttentionConfig with RoPE (and Llama 3.1's frequency scaling when rope_freq_config is given)
and a per-head QK-norm. Names, arguments, state_dict keys and numbers are the book's class's.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, G = num_kv_groups,
E = head_dim (d_in // H by default; even, for RoPE), d_in the model width.
"""

from __future__ import annotations

from .._checks import check_allocation, check_bool, check_positive_int, check_real
from ..fast.dispatch import MODERN_ATTN_IMPLS
from ..models.attention import Attention
from ..models.config import AttentionConfig, QKNorm
from ..ops.rope import FREQ_CONFIG_KEYS, compute_rope_params
from ..ops.rope_config import Llama3, RoPE
from ._input import attn_impl_property
from .presets import preset_property

QK_NORM_EPS = 1e-6


def _llama3(freq_config) -> Llama3:
    """The book's freq_config dict as npattn's Llama3 scaling (the same frequencies)."""
    factor, low, high, original = (freq_config[k] for k in FREQ_CONFIG_KEYS)
    if float(original) != int(original):
        raise ValueError(
            f"freq_config['original_context_length'] must be a whole number, got {original}"
        )
    return Llama3(factor, low, high, int(original))


class Qwen3Attention(Attention):
    """Causal GQA with QK-norm and split-halves RoPE at absolute positions; no biases, no
    dropout. cos and sin for context_length positions (float64) are read-only attributes
    computed from the configuration; they are not in the state_dict.

    Shapes: x (B, T, d_in), positions < context_length -> out (B, T, d_in).

    The steps are npattn.Attention's: projections, split heads, q_norm and k_norm (RMSNorm
    over E, qk_norm only), RoPE at positions ptr_current_pos .. ptr_current_pos + T - 1,
    cache, causal mask & key padding, SDPA with GQA, merge heads, out_proj (H * E -> d_in).
    attn_impl: "reference" (the default) or the opt-in "tiled" (memory linear in T;
    attn_weights is None). The KV-cache path runs forward only whatever attn_impl says.
    """

    attn_impl = attn_impl_property(MODERN_ATTN_IMPLS)  # npattn/fast/dispatch.py

    d_in = preset_property("hidden_size")
    num_heads = preset_property("num_heads")
    num_kv_groups = preset_property("kv_heads")
    head_dim = preset_property("head_size")
    group_size = preset_property("group_size")

    def __init__(
        self,
        d_in: int,
        num_heads: int,
        num_kv_groups: int,
        head_dim: int | None = None,
        qk_norm: bool = True,
        *,
        rope_base: float = 1_000_000.0,
        context_length: int = 4096,
        rope_freq_config=None,
        rng=None,
        attn_impl: str = "reference",
    ):
        d_in = check_positive_int(d_in, "d_in")
        num_heads = check_positive_int(num_heads, "num_heads")
        num_kv_groups = check_positive_int(num_kv_groups, "num_kv_groups")
        if num_heads % num_kv_groups:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_kv_groups ({num_kv_groups})"
            )
        if head_dim is None:
            if d_in % num_heads:
                raise ValueError(
                    f"d_in ({d_in}) must be divisible by num_heads ({num_heads}) when "
                    f"head_dim is not given"
                )
            head_dim = d_in // num_heads
        head_dim = check_positive_int(head_dim, "head_dim")
        self.context_length = check_positive_int(context_length, "context_length")
        width = num_heads * head_dim
        check_allocation((width, max(d_in, width)), 4, "num_heads, head_dim, d_in", "a weight")
        self.rope_base = check_real(rope_base, "rope_base", "a float > 0")
        if not self.rope_base > 0:
            raise ValueError(f"rope_base must be > 0, got {self.rope_base}")
        # the book's checks of the tables (head_dim even, freq_config's keys and ranges),
        # on one position: the module computes its tables from the config, on demand
        compute_rope_params(head_dim, self.rope_base, 1, rope_freq_config)
        self.rope_freq_config = None if rope_freq_config is None else dict(rope_freq_config)
        scaling = None if rope_freq_config is None else _llama3(rope_freq_config)
        config = AttentionConfig(
            hidden_size=d_in, num_heads=num_heads, num_kv_heads=num_kv_groups,
            head_dim=head_dim, rope=RoPE(theta=self.rope_base, scaling=scaling),
            qk_norm=QKNorm(eps=QK_NORM_EPS) if check_bool(qk_norm, "qk_norm") else None,
        )  # fmt: skip
        super().__init__(config, rng=rng, attn_impl=attn_impl)

    @property
    def d_out(self) -> int:
        """H * E, the width of the queries (the book's name; out_proj maps it back to d_in)."""
        return self.config.num_heads * self.config.head_size

    @property
    def cos(self):
        """cos of the RoPE angles at positions 0 .. context_length - 1: (context_length, E)."""
        return self._tables()[0]

    @property
    def sin(self):
        """sin of the RoPE angles at positions 0 .. context_length - 1: (context_length, E)."""
        return self._tables()[1]

    def _tables(self):
        cos, sin = compute_rope_params(
            self.head_dim, self.rope_base, self.context_length, self.rope_freq_config
        )
        cos.flags.writeable = sin.flags.writeable = False  # derived: change the config instead
        return cos, sin

    def _kv_limits(self) -> tuple:
        return None, self.context_length  # positions never exceed context_length

    def inputs(self, x, use_cache, positions, key_padding_mask, x_kv=None):
        call = super().inputs(x, use_cache, positions, key_padding_mask, x_kv)
        start, T = (self.ptr_current_pos if call.use_cache else 0), call.x.shape[1]
        if start + T > self.context_length:
            raise ValueError(
                f"positions {start}..{start + T - 1} run past context_length="
                f"{self.context_length}: x has {T} tokens after {start} cached ones"
            )
        if positions is not None and call.positions.max() >= self.context_length:
            raise ValueError(
                f"positions must be < context_length={self.context_length}, got "
                f"{int(call.positions.max())}"
            )
        return call

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, num_heads={self.num_heads}, num_kv_groups="
            f"{self.num_kv_groups}, head_dim={self.head_dim}, qk_norm={self.q_norm is not None}"
        )
