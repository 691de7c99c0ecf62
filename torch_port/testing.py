"""Test your own attention module against the npattn reference.

    import npattn, torch_port.testing as tt
    ref = npattn.MultiHeadAttention(d_in=8, d_out=8, context_length=16, dropout=0.0,
                                    num_heads=2, qkv_bias=True)
    tt.assert_matches_reference(my_module, ref, weight_map=my_map)

The kit copies your module's weights into the reference (through `weight_map`), then lets
Hypothesis search over batch sizes, token counts and seeds for an input on which the two
disagree: in the output, in dL/dx, or in any mapped parameter gradient (for a random upstream
gradient). It shrinks what it finds to the smallest case and raises ReferenceMismatchError naming
the quantity, the shapes, the seed and the error. The search is deterministic (`seed=`).

Both modules run in eval mode on copies (yours is never modified), in float64 by default.

weight_map: None when your parameter names are the reference's (e.g. the chapter's classes);
a dict {reference_key: your_key}; or a callable taking {your_key: tensor} and returning
{reference_key: tensor} in the reference's (torch) layout. It must only rearrange (slice,
concatenate, transpose), because the kit also applies it to your gradients. Your parameters
it does not use are not compared. torch_port's variants have one: `variant.to_mha_layout`.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

import npattn

TOLERANCES = {  # (rtol, atol); as tests/tolerances.py, which gives the reasons
    torch.float64: dict(rtol=1e-10, atol=1e-12),  # different summation orders: ~1e-14
    torch.float32: dict(rtol=1e-4, atol=1e-5),  # ~5 chained matmuls and a softmax
}
MAX_TOKENS = 8  # token counts tried when the reference has no context_length


@dataclass(frozen=True)
class Example:
    """One generated case: x = default_rng(seed).standard_normal((batch, tokens, d_in)),
    then the upstream gradient from the same generator."""

    batch: int
    tokens: int
    seed: int


@dataclass(frozen=True)
class Mismatch:
    """The first disagreement: what differed, on which input, and by how much."""

    quantity: str  # "output", "dx", "grad[W_query.weight]", or "exception"
    example: Example
    shape: tuple
    max_abs_error: float
    detail: str

    def __str__(self) -> str:
        ex = self.example
        return (
            f"{self.quantity} disagrees on x of shape (B={ex.batch}, T={ex.tokens}, d_in) "
            f"from seed {ex.seed}: {self.detail}"
        )


class ReferenceMismatchError(AssertionError):
    """Raised by assert_matches_reference; `.mismatch` holds the Mismatch."""

    def __init__(self, message: str, mismatch: Mismatch):
        super().__init__(message)
        self.mismatch = mismatch


def _map_params(params: dict, weight_map) -> dict:
    if weight_map is None:
        return dict(params)
    if callable(weight_map):
        return dict(weight_map(params))
    return {ref_key: params[user_key] for ref_key, user_key in weight_map.items()}


def _prepare(module, reference, weight_map, dtype):
    """Copies of both modules in eval mode, the reference holding the user's weights."""
    if not isinstance(reference, npattn.Module):
        raise TypeError(f"reference must be an npattn module, got {type(reference).__name__}")
    user = copy.deepcopy(module).to(dtype).eval()
    ref = copy.deepcopy(reference).eval()
    params = {k: p.detach() for k, p in user.named_parameters()}
    mapped = _map_params(params, weight_map)
    ref_params = ref.parameters()
    missing = [k for k in ref_params if k not in mapped]
    if missing:
        raise ValueError(
            f"weight_map gives no value for the reference's parameters {missing}; "
            f"your module has {list(params)}"
        )
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    sd = ref.state_dict()
    for key in ref_params:
        sd[key] = mapped[key].cpu().numpy().astype(np_dtype)
    ref.astype(np_dtype)  # load_state_dict keeps the module's dtype, as torch's does
    ref.load_state_dict(sd)  # strict about shapes: a wrong map fails here, naming the key
    return user, ref


def _tolerance(dtype, rtol, atol) -> dict:
    """TOLERANCES[dtype] (float32's for other dtypes), with rtol/atol overriding it if given."""
    tol = dict(TOLERANCES.get(dtype, TOLERANCES[torch.float32]))
    tol.update({k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None})
    return tol


def _violation(name, actual, expected, rtol, atol, example) -> Mismatch | None:
    """A Mismatch when |actual - expected| > atol + rtol * |expected| anywhere."""
    if actual.shape != expected.shape:
        detail = f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        return Mismatch(name, example, tuple(expected.shape), float("inf"), detail)
    err = np.abs(actual - expected)
    err = np.where(np.isnan(err) & ~(np.isnan(actual) & np.isnan(expected)), np.inf, err)
    err = np.nan_to_num(err, nan=0.0)  # NaN in both places agrees, as in assert_close
    excess = err - (atol + rtol * np.abs(np.nan_to_num(expected)))
    if excess.size == 0 or excess.max() <= 0:
        return None
    i = np.unravel_index(np.argmax(excess), excess.shape)
    detail = (
        f"max abs error {err.max():.3g}; worst at index {tuple(int(j) for j in i)}: "
        f"got {actual[i]:.6g}, expected {expected[i]:.6g} (rtol={rtol:g}, atol={atol:g})"
    )
    return Mismatch(name, example, tuple(expected.shape), float(err.max()), detail)


def compare(
    module,
    reference,
    example: Example,
    weight_map=None,
    *,
    dtype=torch.float64,
    rtol=None,
    atol=None,
    check_backward: bool = True,
) -> Mismatch | None:
    """Run one example through both modules; the first disagreement, or None.

    Shapes: x (batch, tokens, reference.d_in) -> both outputs; dx like x; each mapped
    parameter gradient in the reference's layout. The quantities are checked in that order.
    """
    tol = _tolerance(dtype, rtol, atol)
    user, ref = _prepare(module, reference, weight_map, dtype)
    return _compare_prepared(user, ref, example, weight_map, tol, check_backward)


def _compare_prepared(user, ref, example, weight_map, tol, check_backward):
    """compare() on modules already copied and loaded by _prepare (they are reused)."""
    user.zero_grad(set_to_none=True)
    rng = np.random.default_rng(example.seed)
    x = rng.standard_normal((example.batch, example.tokens, ref.d_in)).astype(ref.dtype)
    device = next(user.parameters()).device
    try:
        y_ref = ref(x)
        g = rng.standard_normal(y_ref.shape).astype(ref.dtype)  # random upstream gradient
        tx = torch.tensor(x, device=device, requires_grad=True)
        y = user(tx)
        if not torch.is_tensor(y):
            raise TypeError(f"module(x) must return a tensor, got {type(y).__name__}")
        found = _violation("output", y.detach().cpu().numpy(), y_ref, example=example, **tol)
        if found or not check_backward:
            return found
        dx_ref = ref.backward(g)
        y.backward(torch.tensor(g, device=device))
    except Exception as e:  # the user's module raising is a disagreement too
        return Mismatch("exception", example, (), float("inf"), f"{type(e).__name__}: {e}")
    found = _violation("dx", tx.grad.cpu().numpy(), dx_ref, example=example, **tol)
    if found:
        return found
    grads = {k: p.grad for k, p in user.named_parameters() if p.grad is not None}
    zeros = {k: torch.zeros_like(p) for k, p in user.named_parameters() if p.grad is None}
    mapped = _map_params({**zeros, **grads}, weight_map)  # unused parameters: zero gradient
    for key, g_ref in ref.grads.items():
        actual = mapped[key].detach().cpu().numpy()
        found = _violation(f"grad[{key}]", actual, g_ref, example=example, **tol)
        if found:
            return found
    return None


def find_mismatch(
    module,
    reference,
    weight_map=None,
    *,
    max_examples: int = 50,
    seed: int = 0,
    dtype=torch.float64,
    rtol=None,
    atol=None,
    max_batch: int = 3,
    max_tokens: int | None = None,
    check_backward: bool = True,
) -> Mismatch | None:
    """Search for the smallest Example on which module and reference disagree; None if
    `max_examples` examples agree. Deterministic for a given `seed`.

    Token counts run from 1 to reference.context_length (or MAX_TOKENS, or max_tokens).
    """
    lengths = [getattr(m, "context_length", None) for _, m in reference.named_modules()]
    context_length = min((n for n in lengths if n is not None), default=MAX_TOKENS)
    max_tokens = max_tokens or context_length
    examples = st.builds(
        Example,
        batch=st.integers(1, max_batch),
        tokens=st.integers(1, max_tokens),
        seed=st.integers(0, 2**32 - 1),
    )
    tol = _tolerance(dtype, rtol, atol)
    user, ref = _prepare(module, reference, weight_map, dtype)  # a bad weight_map raises here

    def check(example: Example) -> Mismatch | None:
        return _compare_prepared(user, ref, example, weight_map, tol, check_backward)

    def disagrees(example: Example) -> bool:
        return check(example) is not None

    search = settings(
        max_examples=max_examples,
        derandomize=False,  # random=Random(seed) below makes it deterministic, whatever profile
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),  # no database, no explain phase
    )
    try:
        example = find(examples, disagrees, settings=search, random=random.Random(seed))
    except NoSuchExample:
        return None
    return check(example)


def assert_matches_reference(module, reference, weight_map=None, **kwargs) -> None:
    """Raise ReferenceMismatchError if module and the npattn reference disagree anywhere.

    Shapes: module maps (B, T, d_in) -> (B, T, d_out) like reference. kwargs: as for
    find_mismatch (max_examples, seed, dtype, rtol, atol, max_batch, max_tokens,
    check_backward). The message names the quantity, shapes, seed and error, and how to
    replay the case with torch_port.testing.compare.
    """
    mismatch = find_mismatch(module, reference, weight_map, **kwargs)
    if mismatch is None:
        return
    ex = mismatch.example
    dtype = kwargs.get("dtype", torch.float64)
    message = (
        f"{type(module).__name__} does not match npattn.{type(reference).__name__} "
        f"({str(dtype).replace('torch.', '')}): {mismatch}\n"
        f"replay: torch_port.testing.compare(module, reference, "
        f"Example(batch={ex.batch}, tokens={ex.tokens}, seed={ex.seed}), weight_map)"
    )
    raise ReferenceMismatchError(message, mismatch)
