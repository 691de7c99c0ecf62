"""npattn.exercises: every catalogued mistake is recognised by its id, correct answers in three
styles pass, and whatever a student's function does, the verdict is a Result with a message."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from exercise_solutions import ALTERNATIVES

from npattn.__main__ import main
from npattn.exercises import NAMES, PARTS, Result, all_exercises, check, get, hint, solution

ROOT = Path(__file__).resolve().parents[1]
FAST = 40  # inputs tried for a correct answer (the default, 150, is for students)
CASES = [(ex.name, m.id) for ex in all_exercises() for m in ex.mistakes]


def test_the_exercises_are_complete_and_in_the_docs_order():
    exercises = all_exercises()
    assert len(exercises) >= 16
    parts = [ex.part for ex in exercises]
    assert parts == sorted(parts, key=list(PARTS).index)  # chapter 3, backward, beyond
    for ex in exercises:
        assert ex.docs_path().is_file(), ex.docs
        assert 2 <= len(ex.hints) <= 3
        assert len(ex.mistakes) >= 3
        ids = [m.id for m in ex.mistakes]
        assert len(set(ids)) == len(ids)
        assert f"def {ex.name}({', '.join(ex.args)}):" in ex.stub_source
        assert "Shapes:" in ex.stub_source
        assert f"def {ex.name}(" in ex.solution_source


@pytest.mark.parametrize("signature", [
    "def softmax_backward(y, dy):",
    "def dropout_backward(dout, keep, p):",
    "def sdpa_backward(q, k, v, dout):",
    "def rope_backward(dy, cos, sin):",
    "def gqa_kv_backward(dk_repeated, num_kv_groups):",
    "def rmsnorm_backward(x, scale, dy, eps):",
])  # fmt: skip
def test_the_required_signatures(signature):
    name = signature[4 : signature.index("(")]
    assert signature in get(name).stub_source


@pytest.mark.parametrize(("name", "mistake"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_every_mistake_is_recognised_by_its_id(name, mistake):
    ex = get(name)
    wrong = next(m for m in ex.mistakes if m.id == mistake)
    result = check(name, wrong.fn)
    assert not result.passed
    assert result.mistake == mistake, result.message
    assert wrong.name in result.message and wrong.hint in result.message
    assert "Smallest failing input" in result.message
    assert ex.solution_source not in result.message  # a hint, never the solution


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_and_two_other_styles_pass(name):
    ex = get(name)
    for fn in (ex.solution, *ALTERNATIVES[name]):
        result = check(name, fn, max_examples=FAST)
        assert result.passed, f"{fn.__name__}:\n{result.message}"
        assert result.mistake is None and "correct" in result.message


@pytest.mark.parametrize("name", NAMES)
def test_the_stub_fails_with_its_own_message(name):
    namespace = {}
    exec(get(name).stub_source, namespace)
    result = check(name, namespace[name])
    assert not result.passed and "raised NotImplementedError" in result.message


def _softmax_bwd(y, dy):
    return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


def _modifies(y, dy):
    dy -= np.sum(dy * y, axis=-1, keepdims=True)
    dy *= y
    return dy


class _UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("no message")


class _NonStrError(Exception):
    def __str__(self):
        return 42


class _BaseError(BaseException):
    pass


def _raises_unprintable(y, dy):
    raise _UnprintableError()


def _raises_non_str(y, dy):
    raise _NonStrError()


def _raises_base(y, dy):
    raise _BaseError("stop")


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda y, dy: 1 / 0, "raised ZeroDivisionError"),
        (lambda y, dy: _softmax_bwd(y, dy)[..., :-1], "dx has shape"),
        (lambda y, dy: np.full_like(y, np.nan), "dx is nan at index"),
        (lambda y, dy: _softmax_bwd(y, dy) / y.sum(-1, keepdims=True), "dx is nan at index"),
        (lambda y, dy: _softmax_bwd(y, dy).tolist(), "a list; return a numpy array"),
        (lambda y, dy: "dx", "dx is a str"),
        (lambda y, dy: None, "dx is a NoneType"),
        (lambda y, dy: (_softmax_bwd(y, dy), y), "returned 2 values; expected 1"),
        (_modifies, "modified its input `dy` in place"),
        (lambda y: y, "raised TypeError"),
        (lambda y, dy: sys.exit(3), "raised SystemExit: 3"),
        (lambda y, dy: _softmax_bwd(y, dy) + 0j, "dx has dtype complex128; return real numbers"),
        (lambda y, dy: _softmax_bwd(y, dy).astype(np.float32), "float32: compute in float64"),
        (_raises_unprintable, "raised _UnprintableError: (its message could not be shown"),
        (_raises_non_str, "raised _NonStrError: (its message could not be shown"),
        (_raises_base, "raised _BaseError: stop"),
    ],
)
def test_a_broken_function_gets_a_verdict_not_an_exception(fn, expected):
    result = check("softmax_backward", fn)
    assert isinstance(result, Result) and not result.passed
    assert expected in result.message, result.message


def test_a_verdict_names_the_output_its_index_and_both_values():
    ex = get("sdpa_backward")
    no_scale = next(m for m in ex.mistakes if m.id == "no_scale").fn

    def wrong_dk_only(q, k, v, dout):
        dq, dk, dv = ex.solution(q, k, v, dout)
        return dq, no_scale(q, k, v, dout)[1], dv

    result = check("sdpa_backward", wrong_dk_only)
    assert not result.passed and result.failure.output == "dk"
    assert "(dq and dv are right.)" in result.message
    idx, want, got = result.failure.index, result.failure.expected, result.failure.got
    assert f"dk is wrong at index {idx}" in result.message
    assert f"expected {want:.10g}" in result.message and f"got {got:.10g}" in result.message
    dk = ex.reference(**result.inputs)[1]
    assert dk[idx] == pytest.approx(want) and want != pytest.approx(got)
    assert wrong_dk_only(**result.inputs)[1][idx] == pytest.approx(got)
    for arg in ex.args:
        assert f"    {arg}: shape" in result.message


def test_a_crash_is_located_in_the_students_code():
    def student(y, dy):
        total = np.sum(dy * y, axis=-1, keepdims=True)
        return y * (dy - total[..., 5])  # an index past the end

    result = check("softmax_backward", student)
    assert "raised IndexError" in result.message
    assert "`return y * (dy - total[..., 5])  # an index past the end`" in result.message


def test_the_smallest_input_is_found_and_the_verdict_is_deterministic():
    wrong = get("rmsnorm_backward").mistakes[0]  # eps missing: one number is enough
    first, again = check("rmsnorm_backward", wrong.fn), check("rmsnorm_backward", wrong.fn)
    assert first.message == again.message
    # shrunk to one vector of one entry, with no leading axis: B and T are not listed
    assert "input (lead=0, E=1, small=0, eps=0, seed=0):" in first.message
    assert check("rmsnorm_backward", wrong.fn, seed=3).mistake == "eps_missing"


def test_an_unknown_mistake_is_still_explained():
    result = check("dropout_backward", lambda dout, keep, p: dout * keep / (1 - p) + 1e-6)
    assert not result.passed and result.mistake is None
    assert "dx is wrong at index" in result.message and "exercises hint dropout_backward" in (
        result.message
    )


def test_a_result_prints_in_a_terminal_and_a_notebook():
    result = check("gqa_kv_backward", get("gqa_kv_backward").mistakes[0].fn)
    assert str(result) == result.message and not result
    page = result._repr_html_()
    assert page.startswith("<p><strong") and "gqa_kv_backward: not yet.</strong>" in page
    assert "tiled_grouping" in page and "(B, G, H // G, S, E)" in page
    assert bool(check("gqa_kv_backward", get("gqa_kv_backward").solution, max_examples=5))


def test_not_a_function_and_an_unknown_name():
    assert "needs a function" in check("softmax_backward", 3).message
    with pytest.raises(ValueError, match="unknown exercise 'softmax'"):
        check("softmax", _softmax_bwd)


def test_import_needs_numpy_alone_and_check_names_hypothesis():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import npattn, npattn.exercises\n"
        "try:\n"
        "    npattn.exercises.check('softmax_backward', lambda y, dy: y)\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "needs hypothesis: pip install 'npattn[exercises]'" in out.stdout


def test_the_setup_names_hypothesis_in_an_exercises_extra():
    setup = (ROOT / "setup.cfg").read_text()
    extra = setup.split("exercises =", 1)[1].split("\n\n", 1)[0].split("\n[", 1)[0]
    assert "hypothesis" in extra


# the command line


def _cli(capsys, *argv):
    code = main(["exercises", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_start_check_hint_solution(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _cli(capsys, "start", "softmax_backward")
    stub = tmp_path / "exercises" / "softmax_backward.py"
    assert code == 0 and stub.read_text() == get("softmax_backward").stub_source
    code, _, err = _cli(capsys, "start", "softmax_backward")
    assert code == 2 and err.count("\n") == 1 and "not overwriting" in err

    code, out, _ = _cli(capsys, "check", "softmax_backward", str(stub))
    assert code == 1 and "raised NotImplementedError" in out
    stub.write_text("import numpy as np\n\ndef softmax_backward(y, dy):\n    return y * dy\n")
    code, out, _ = _cli(capsys, "check", "softmax_backward", str(stub))
    assert code == 1 and "[missing_row_sum]" in out

    hints = get("softmax_backward").hints
    for level in (1, 2, 3, 3):
        code, out, _ = _cli(capsys, "hint", "softmax_backward")
        assert code == 0 and out.startswith(f"Hint {level}/3: {hints[level - 1]}")
    code, out, _ = _cli(capsys, "hint", "softmax_backward", "--all")
    assert all(h in out for h in hints)
    code, out, _ = _cli(capsys, "hint", "softmax_backward", "--level", "2")
    assert out.startswith(f"Hint 2/3: {hints[1]}")

    code, out, _ = _cli(capsys, "solution", "softmax_backward")
    stub.write_text(out)
    code, out, _ = _cli(capsys, "check", "softmax_backward", str(stub))
    assert code == 0 and "correct" in out

    code, out, _ = _cli(capsys, "list")
    line = next(x for x in out.splitlines() if "softmax_backward" in x)
    assert "passed" in line
    assert "not yet (missing_row_sum)" not in out
    assert len([x for x in out.splitlines() if ". " in x]) == len(NAMES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["hint", "softmaxx"], "unknown exercise 'softmaxx'"),
        (["check", "softmax_backward", "missing.py"], "no such file: missing.py"),
        (["check", "softmax_backward", "empty.py"], "defines no function named softmax_backward"),
        (["check", "softmax_backward", "broken.py"], "line 1: SyntaxError"),
        (["check", "softmax_backward", "raises.py"], "raised RuntimeError when loaded: no"),
        (["hint", "softmax_backward", "--level", "9"], "has hints 1 to 3; got --level 9"),
        (["check", "softmax_backward", "exits.py"], "exits.py exited when loaded"),
        (["check", "softmax_backward", "exits0.py"], "exits0.py exited when loaded"),
        (["check", "softmax_backward", "base.py"], "raised _Stop when loaded: x"),
        (["start", "softmax_backward", "afile"], "afile is not a directory"),
        (["solution", "nope"], "unknown exercise 'nope'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "broken.py").write_text("def softmax_backward(y, dy)\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('no')\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit()\n")
    (tmp_path / "exits0.py").write_text("raise SystemExit(0)\n")
    (tmp_path / "base.py").write_text("class _Stop(BaseException): pass\nraise _Stop('x')\n")
    (tmp_path / "afile").write_text("")
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_cli_list_without_a_workspace(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _cli(capsys, "list")
    assert code == 0 and "no workspace" in out
    assert [line.split()[1] for line in out.splitlines() if ". " in line] == list(NAMES)
    assert solution("dropout_backward").startswith("import numpy as np")
    assert hint("dropout_backward", 2) == get("dropout_backward").hints[1]
    with pytest.raises(ValueError, match="has hints 1 to 3, got level 4"):
        hint("dropout_backward", 4)


# the docs


def test_each_page_with_an_exercise_links_to_it_and_the_list_is_current():
    index = (ROOT / "docs" / "exercises" / "index.md").read_text()
    for ex in all_exercises():
        page = ex.docs_path().read_text()
        assert f"(../exercises/index.md#{ex.name})" in page.replace("\n", " "), ex.docs
        assert f'<a id="{ex.name}"></a>`{ex.name}`' in index
        assert f"[{ex.docs}](../{ex.docs})" in index
    assert "exercises/index.md" in (ROOT / "mkdocs.yml").read_text()
    assert f"holds {len(NAMES)} exercises" in (ROOT / "README.md").read_text()
    tool = subprocess.run(
        [sys.executable, "tools/make_notebooks.py", "--check"], cwd=ROOT, capture_output=True
    )
    assert tool.returncode == 0, tool.stdout.decode()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: ACTION"),
        (["start"], "the following arguments are required: NAME"),
        (["hint", "softmax_backward", "--level", "x"], "invalid int value: 'x'"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_cli_usage_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["exercises", *argv])
    _, err = capsys.readouterr()
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err


def _raises(*args):
    raise RuntimeError("not done")


def _extra_axis(name):
    solve = get(name).solution

    def fn(*args):
        out = solve(*args)
        return tuple(o[None] for o in out) if isinstance(out, tuple) else out[None]

    return fn


def _nan(name):
    solve = get(name).solution

    def fn(*args):
        out = solve(*args)
        return tuple(o * np.nan for o in out) if isinstance(out, tuple) else out * np.nan

    return fn


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_judges_a_crash_a_wrong_shape_and_nan(name):
    first = get(name).outputs[0]
    for fn, expected in [
        (_raises, "raised RuntimeError: not done"),
        (_extra_axis(name), f"Your {first} has shape"),
        (_nan(name), f"Your {first} is nan at index"),
    ]:
        result = check(name, fn)
        assert not result.passed and expected in result.message, result.message


# inputs that tell apart what small, regular inputs would not


def _online_v_width(q, k, v, block_size):
    """Online softmax scaled by v's width, its running output shaped like q."""
    scale = 1.0 / np.sqrt(v.shape[-1])
    m = np.full(q.shape[:-1] + (1,), -np.inf)
    l, acc = np.zeros(q.shape[:-1] + (1,)), np.zeros_like(q)
    for j in range(0, k.shape[-2], block_size):
        s = q @ np.swapaxes(k[..., j : j + block_size, :], -1, -2) * scale
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        p, alpha = np.exp(s - m_new), np.exp(m - m_new)
        l = alpha * l + p.sum(axis=-1, keepdims=True)
        acc = alpha * acc + p @ v[..., j : j + block_size, :]
        m = m_new
    return acc / l


def _tiled_v_width(q, k, v, out, lse, dout, block_size):
    """Tiled backward scaled by v's width, dv allocated like k."""
    scale = 1.0 / np.sqrt(v.shape[-1])
    D = np.sum(dout * out, axis=-1, keepdims=True)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(k)
    for j in range(0, k.shape[-2], block_size):
        c = slice(j, j + block_size)
        P = np.exp(q @ np.swapaxes(k[..., c, :], -1, -2) * scale - lse)
        dv[..., c, :] = np.swapaxes(P, -1, -2) @ dout
        dS = P * (dout @ np.swapaxes(v[..., c, :], -1, -2) - D)
        dq += dS @ k[..., c, :] * scale
        dk[..., c, :] = np.swapaxes(dS, -1, -2) @ q * scale
    return dq, dk, dv


def _masked_v_width(q, k, v, mask, dout):
    """Masked backward scaled by v's width, dv allocated like k."""
    dq, dk, dv_ = get("masked_sdpa_backward").solution(q, k, v, mask, dout)
    ratio = np.sqrt(q.shape[-1] / v.shape[-1])  # 1 / sqrt(Ev) where 1 / sqrt(E) belongs
    dv = np.zeros_like(k)
    dv[...] = dv_
    return dq * ratio, dk * ratio, dv


def _softmax_axis2(attn_scores):
    s = np.where(np.tri(attn_scores.shape[-1], dtype=bool), attn_scores, -np.inf)
    w = np.exp(s - s.max(axis=2, keepdims=True))
    return w / w.sum(axis=2, keepdims=True)


def _rmsnorm_rank3(x, scale, dy, eps):
    dx, _ = get("rmsnorm_backward").solution(x, scale, dy, eps)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return dx, np.sum(dy * x * rstd, axis=(0, 1))


def _transposed(name):
    """The reference, with a transpose that only a 3-axis array accepts."""
    solve = get(name).solution
    return lambda *args: solve(*args).transpose(0, 1, 2)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("online_softmax_attention", _online_v_width),
        ("tiled_sdpa_backward", _tiled_v_width),
        ("masked_sdpa_backward", _masked_v_width),
        ("causal_attention_weights", _softmax_axis2),
        ("rmsnorm_backward", _rmsnorm_rank3),
        ("softmax_backward", lambda y, dy: y * (dy - np.sum(dy * y, axis=2, keepdims=True))),
        ("dropout_backward", lambda dout, keep, p: (dout * keep).transpose(0, 1, 2) / (1 - p)),
        ("softcap_backward", lambda s, dout, cap: dout.transpose(0, 1, 2) / np.cosh(s / cap) ** 2),
        ("mask_renormalize_backward", _transposed("mask_renormalize_backward")),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_value_width_and_number_of_leading_axes_vary(name, fn):
    result = check(name, fn)
    assert not result.passed, result.message


def test_a_mistake_is_named_only_if_it_also_matches_on_larger_inputs():
    # the sum over axis 0: right with no leading axis, and on one-row inputs it agrees with
    # "diagonal only", but not on larger ones
    result = check("softmax_backward", lambda y, dy: y * (dy - np.sum(dy * y, axis=0)))
    assert not result.passed and result.mistake is None, result.message
    assert "coincides with a known mistake" in result.message
    assert "yours is a different error" in result.message
    assert "This looks like a known mistake" not in result.message


def test_a_finite_fill_is_recognised_on_fully_masked_rows():
    def finite_fill(q, k, v, mask, dout):
        scale = 1.0 / np.sqrt(q.shape[-1])
        s = np.where(mask, q @ np.swapaxes(k, -1, -2) * scale, -1e9)
        P = np.exp(s - s.max(-1, keepdims=True))
        P /= P.sum(-1, keepdims=True)
        dP = dout @ np.swapaxes(v, -1, -2)
        dS = P * (dP - (dP * P).sum(-1, keepdims=True))
        return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout

    result = check("masked_sdpa_backward", finite_fill)
    assert result.mistake == "finite_fill" and "masked_row=1" in result.message


def test_precision_loss_is_pointed_out():
    def in_float32(y, dy):
        y32, dy32 = y.astype(np.float32), dy.astype(np.float32)
        return (y32 * (dy32 - np.sum(dy32 * y32, axis=-1, keepdims=True))).astype(np.float64)

    result = check("softmax_backward", in_float32)
    assert "may compute in float32 or lose precision" in result.message, result.message
    assert "rtol 1e-09" in result.message
    # a plain wrong answer gets no such note
    assert "float32" not in check("softmax_backward", lambda y, dy: y * dy).message


def test_different_outputs_on_the_same_input_are_pointed_out():
    calls = []

    def keeps_state(y, dy):  # wrong from its second call on, and differently each time
        calls.append(1)
        return _softmax_bwd(y, dy) + (len(calls) > 1) * len(calls)

    result = check("softmax_backward", keeps_state)
    assert not result.passed and "gave different outputs" in result.message, result.message
    same_every_time = check("softmax_backward", lambda y, dy: y * dy)
    assert "gave different outputs" not in same_every_time.message


def test_cli_records_that_are_not_what_they_should_be_are_ignored(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ws = tmp_path / "exercises"
    ws.mkdir()
    for status, hints in [
        ("[1, 2]", '"x"'),
        ('{"softmax_backward": 3, "dropout_backward": ["x"]}', '{"softmax_backward": "two"}'),
        ('{"softmax_backward": null}', '{"softmax_backward": [1]}'),
    ]:
        (ws / ".status.json").write_text(status)
        (ws / ".hints.json").write_text(hints)
        code, out, _ = _cli(capsys, "list")
        assert code == 0 and len([x for x in out.splitlines() if ". " in x]) == len(NAMES)
        code, out, _ = _cli(capsys, "hint", "softmax_backward")
        assert code == 0 and out.startswith("Hint 1/3"), out


def test_cli_a_helper_module_beside_the_file_imports(tmp_path, capsys):
    (tmp_path / "mine_helpers.py").write_text(
        "import numpy as np\n\ndef row_sum(a):\n    return np.sum(a, axis=-1, keepdims=True)\n"
    )
    (tmp_path / "sm.py").write_text(
        "from mine_helpers import row_sum\n\n"
        "def softmax_backward(y, dy):\n    return y * (dy - row_sum(dy * y))\n"
    )
    code, out, _ = _cli(capsys, "check", "softmax_backward", str(tmp_path / "sm.py"))
    assert code == 0 and "correct" in out
    assert str(tmp_path) not in sys.path  # put back as it was


def test_cli_hint_takes_a_dir_and_says_when_progress_is_not_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    hints = get("softmax_backward").hints
    code, out, _ = _cli(capsys, "hint", "softmax_backward", "ws")
    assert code == 0 and out.startswith(f"Hint 1/3: {hints[0]}")
    assert "is not saved" in out and "exercises start softmax_backward ws" in out
    _cli(capsys, "start", "softmax_backward", "ws")
    for level in (1, 2):
        code, out, _ = _cli(capsys, "hint", "softmax_backward", "ws")
        assert out.startswith(f"Hint {level}/3") and "not saved" not in out
    code, out, _ = _cli(capsys, "hint", "softmax_backward", "--dir", "ws")
    assert out.startswith("Hint 3/3")


def test_cli_check_keeps_no_record_outside_a_workspace(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    loose = tmp_path / "elsewhere"
    loose.mkdir()
    (loose / "softmax_backward.py").write_text(solution("softmax_backward"))
    code, out, _ = _cli(capsys, "check", "softmax_backward", str(loose / "softmax_backward.py"))
    assert code == 0 and "correct" in out
    assert not (loose / ".status.json").exists()
    _cli(capsys, "start", "softmax_backward", "ws")
    (tmp_path / "ws" / "softmax_backward.py").write_text(solution("softmax_backward"))
    _cli(capsys, "check", "softmax_backward", "ws/softmax_backward.py")
    assert "passed" in (tmp_path / "ws" / ".status.json").read_text()


@pytest.mark.parametrize(
    ("name", "mistake", "formula"),
    [
        ("softmax_backward", "sign_flipped", "y * (dy - sum(dy * y))"),
        ("softmax_backward", "missing_row_sum", "subtract y times sum(dy * y)"),
        ("rope_backward", "forward_rotation", "dy * cos - rotate_half(dy * sin)"),
        ("rope_backward", "cos_only", "-rotate_half(dy * sin)"),
        ("rmsnorm_backward", "rstd_constant", "x_hat * mean(dx_hat * x_hat)"),
        ("softcap_backward", "times_cap", "dout * (1 - t**2)"),
        ("softcap_backward", "tanh_not_squared", "1 - tanh(u)**2"),
        ("mask_renormalize_backward", "row_sum_ignored", "(dout - sum(dout * out)) / r"),
        ("mask_renormalize_backward", "renormalisation_ignored", "sum(dout * out)"),
        ("sinks_backward", "dsinks_sign", "-p_sink * dot"),
        ("sinks_backward", "dsinks_zero", "-sum(p_sink * rowsum("),
        ("sdpa_backward", "softmax_diagonal_only", "P * (dP - rowsum(dP * P))"),
        ("sdpa_backward", "scale_on_dq_only", "dS^T @ q * scale"),
        ("online_softmax_attention", "acc_not_rescaled", "exp(m_old - m_new)"),
        ("online_softmax_attention", "l_not_rescaled", "exp(m_old - m_new)"),
        ("tiled_sdpa_backward", "D_per_block", "D = rowsum(dout * out)"),
    ],
)
def test_a_mistakes_hint_says_what_is_wrong_not_the_finished_formula(name, mistake, formula):
    ex = get(name)
    m = next(m for m in ex.mistakes if m.id == mistake)
    assert formula not in m.hint.replace("\n", " ")
    assert len(m.hint) > 40  # still a hint: what is wrong and where to look


def test_the_verdict_and_the_docs_say_that_only_outputs_are_compared():
    import npattn.functional as F

    result = check("softmax_backward", lambda y, dy: F.softmax_backward(dy, y), max_examples=5)
    assert result.passed and "Only the outputs are compared" in result.message
    for name in ("online_softmax_attention", "tiled_sdpa_backward", "mla_absorbed_weights"):
        assert "The checker compares the" in get(name).stub_source
    index = (ROOT / "docs" / "exercises" / "index.md").read_text()
    assert "compares outputs only" in index and "no time limit" in index
