"""Every tolerance the suite uses, named and justified in one place (docs/testing.md).

float64: hand-written backward passes and torch autograd do the same products in a different
order, so they differ by a few ulps times the condition of the sums: ~1e-14 relative here.
1e-10 leaves four orders of margin while any real bug (a wrong sign, a missing term) gives
errors of order 1.

float32: torch.testing.assert_close's defaults (rtol 1.3e-6, atol 1e-5) assume one op; a
whole attention module chains ~5 matmuls and a softmax, so we allow 1e-4 relative / 1e-5
absolute, still far below the error of any real bug.

Finite differences: central differences with h = 1e-6 in float64 have error ~eps/h + h^2,
i.e. ~1e-10, so we use torch.autograd.gradcheck's atol 1e-5 and rtol 1e-3.
"""

F64 = dict(rtol=1e-10, atol=1e-12)  # npattn vs torch, float64
F32 = dict(rtol=1e-4, atol=1e-5)  # npattn vs torch, float32, whole modules
FD = dict(rtol=1e-3, atol=1e-5)  # analytic vs central differences, float64


def large_logits_f64(max_abs_score: float) -> dict:
    """Normwise relative tolerance for attention in float64 at large logits |s|.

    A score is rounded to a few ulps of |s| (and any change in how it is computed, such as
    the tiled op scaling q before q @ k^T, moves it by as much); the tiled backward's
    P = exp(s - lse) adds a few more. So weights, outputs and gradients carry relative errors
    ~ eps * |s|, above F64's 1e-10 once |s| nears 1e6 (docs/backward/tiled.md).
    """
    return dict(rtol=F64["rtol"] + 64 * EPS64 * max_abs_score)


EPS64 = 2.220446049250313e-16  # np.finfo(np.float64).eps

# Low precision on CUDA (tests/test_cuda.py): normwise errors, max|actual - expected| divided
# by max|expected| for each quantity (all parameter gradients together), against a float64
# reference built from the same rounded weights and inputs. With unit roundoff u = 2^-8
# (bfloat16) and 2^-11 (float16), a whole MultiHeadAttention measures about 1u on the CPU
# (B=2, T=128, d=64, 4 heads), forward and backward; we allow 4u. A fused kernel (flash,
# efficient) may also reach twice the error of the chapter's plain matmul-and-softmax code in
# the same dtype on the same device (FlashAttention's own test criterion): GPU matmuls may
# reduce in low precision. That plain code itself must stay within LOW_PRECISION_BASELINE.
BF16_NORMWISE = 4 * 2.0**-8  # 1.6e-2
FP16_NORMWISE = 4 * 2.0**-11  # 2.0e-3
LOW_PRECISION_BASELINE = 2  # the plain code may reach 2 x the normwise bound above
