"""The central-difference checker itself: it passes correct backwards, catches wrong ones,
and leaves its inputs alone. Also: every case in `python -m npattn gradcheck` passes."""

import numpy as np
import pytest

import npattn
from npattn import functional as F
from npattn.gradcheck import check_module, check_op, numerical_gradient
from npattn.gradcheck_cases import module_cases, op_cases


@pytest.mark.parametrize("case", op_cases(), ids=lambda s: s[0])
def test_every_op_case_passes(case):
    name, fwd, bwd, inputs, kwargs, wrt = case
    report = check_op(fwd, bwd, inputs, kwargs, wrt=wrt)
    assert report.passed, report
    assert max(r.max_rel_err for r in report) < 1e-6  # float64 central differences: ~1e-9


@pytest.mark.parametrize("case", module_cases(), ids=lambda s: s[0])
def test_every_module_case_passes(case):
    name, module, x = case
    before = {k: v.copy() for k, v in module.state_dict().items()}
    report = check_module(module, x)
    assert report.passed, report
    assert {r.name for r in report} == {"x", *module.parameters()}
    assert module.dtype == np.float32  # a float64 copy was checked, not the module
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_catches_a_wrong_backward():
    def bad_softmax_backward(dy, y):
        return y * (dy + np.sum(dy * y, axis=-1, keepdims=True))  # sign flipped

    def fwd(x):
        y = F.softmax(x)
        return y, y

    x = np.random.default_rng(0).standard_normal((3, 4))
    report = check_op(fwd, bad_softmax_backward, {"x": x})
    assert not report.passed
    assert "NO" in str(report)


class OffByOnePercent(npattn.SelfAttention_v2):
    """A module whose W_value gradient is 1% too large: a bug check_module must catch."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.W_value._grads["weight"] = self.W_value._grads["weight"] * 1.01
        return dx


def test_catches_a_module_parameter_gradient_that_is_off():
    x = np.random.default_rng(0).standard_normal((4, 3))
    report = check_module(OffByOnePercent(3, 2, rng=0), x)
    assert not report.passed
    assert [r.name for r in report if not r.passed] == ["W_value.weight"]
    assert check_module(npattn.SelfAttention_v2(3, 2, rng=0), x).passed


def test_numerical_gradient_restores_the_array():
    x = np.random.default_rng(0).standard_normal(5)
    x0 = x.copy()
    numerical_gradient(lambda: float(np.sum(x**3)), x)
    np.testing.assert_array_equal(x, x0)


def test_check_op_does_not_modify_inputs():
    x = np.random.default_rng(0).standard_normal((2, 3))
    x0 = x.copy()
    check_op(
        F.linear_forward,
        lambda d, c: F.linear_backward(d, c)[:2],
        {"x": x, "weight": np.ones((4, 3))},
    )
    np.testing.assert_array_equal(x, x0)


def test_command_line_report(capsys):
    from npattn.__main__ import main

    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "all gradients agree with central differences" in out
    for name, *_ in op_cases() + module_cases():
        assert f"== {name}" in out


def test_a_zero_gradient_is_marked_and_explained():
    """The key bias's true gradient is 0 (softmax ignores a shift shared by a whole row), so
    its relative error is rounding noise over atol: the report marks it and says so."""
    x = np.random.default_rng(0).standard_normal((2, 4, 5))
    report = check_module(npattn.SelfAttention_v2(5, 3, qkv_bias=True, rng=0), x)
    flagged = {r.name for r in report if r.zero_gradient}
    assert flagged == {"W_key.bias"}
    assert report.passed
    text = str(report)
    assert "yes *" in text and "zero gradient" in text


def test_every_command_line_option_has_help():
    import argparse

    from npattn.__main__ import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert all(choice.help for choice in sub._choices_actions)
