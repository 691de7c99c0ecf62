"""Every modern case of `python -m npattn gradcheck` passes (npattn.gradcheck_modern)."""

import numpy as np
import pytest

from npattn.__main__ import gradcheck_report
from npattn.gradcheck import check_module, check_op
from npattn.gradcheck_modern import modern_module_cases, modern_op_cases


@pytest.mark.parametrize("case", modern_op_cases(), ids=lambda s: s[0])
def test_every_modern_op_case_passes(case):
    name, fwd, bwd, inputs, kwargs, wrt = case
    report = check_op(fwd, bwd, inputs, kwargs, wrt=wrt)
    assert report.passed, report
    assert max(r.max_rel_err for r in report) < 1e-6  # float64 central differences: ~1e-9


@pytest.mark.parametrize("case", modern_module_cases(), ids=lambda s: s[0])
def test_every_modern_module_case_passes(case):
    name, module, x = case
    report = check_module(module, x)
    assert report.passed, report
    assert {r.name for r in report} == {"x", *module.parameters()}
    assert module.dtype == np.float32  # a float64 copy was checked, not the module


def test_the_command_runs_the_modern_cases(capsys, monkeypatch):
    import npattn.gradcheck_cases as cases

    monkeypatch.setattr(cases, "op_cases", lambda seed: [])
    monkeypatch.setattr(cases, "module_cases", lambda seed: [])
    assert gradcheck_report()
    out = capsys.readouterr().out
    for name, *_ in modern_op_cases() + modern_module_cases():
        assert f"== {name}\n" in out
