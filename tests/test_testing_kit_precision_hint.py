"""When a module fails only by the rounding of a lower precision (a softmax in float32
inside a float64 module), the kit's message says so and names where such islands hide.
Shapes: x (B, T, D) -> (B, T, D)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402
from torch_port import testing as tt  # noqa: E402

D, H, CL = 8, 2, 8


class SoftmaxIn(tp.MultiHeadAttention):
    """The chapter's class with its softmax computed in `low` and cast back."""

    def __init__(self, low):
        torch.manual_seed(0)
        super().__init__(D, D, CL, 0.0, H, True)
        self.low = low

    def forward(self, x):
        b, T, _ = x.shape
        q, k, v = (
            lin(x).view(b, T, H, D // H).transpose(1, 2)  # (B, T, D) -> (B, H, T, E)
            for lin in (self.W_query, self.W_key, self.W_value)
        )
        scores = (q @ k.transpose(2, 3)).masked_fill(self.mask.bool()[:T, :T], -torch.inf)
        weights = torch.softmax((scores / (D // H) ** 0.5).to(self.low), dim=-1).to(x.dtype)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, T, D))


@pytest.mark.parametrize(
    "low, checked, level",
    [
        (torch.float32, torch.float64, "float32"),
        (torch.float16, torch.float64, "float16"),
        (torch.bfloat16, torch.float64, "bfloat16"),
        (torch.bfloat16, torch.float32, "bfloat16"),
    ],
    ids=str,
)
def test_a_lower_precision_island_is_named(low, checked, level):
    ref = npattn.MultiHeadAttention(D, D, CL, 0.0, H, True)
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(SoftmaxIn(low), ref, dtype=checked, max_examples=10)
    message = str(info.value)
    hint = message.split("this error is at ", 1)[1].split(" rounding level")[0]
    assert level in hint.split(" or ")  # a softmax alone in bfloat16 can look like float16
    assert "softmax" in message and "RMSNorm" in message and "RoPE" in message


def test_a_real_bug_gets_no_rounding_hint():
    class NoScale(SoftmaxIn):
        def forward(self, x):
            return super().forward(x * 2.0)

    ref = npattn.MultiHeadAttention(D, D, CL, 0.0, H, True)
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(NoScale(torch.float64), ref, max_examples=10)
    assert "rounding level" not in str(info.value)
