import sys

import numpy as np
import pytest
from tolerances import F32

import npattn
from npattn.chapter.data import SEEDS, chapter_batch, chapter_inputs
from npattn.chapter.weights import chapter_dropout_keep, chapter_module, torch_seeded_state_dict

# (class name, constructor args after d_in=3, d_out=2)
CLASSES = [
    ("SelfAttention_v1", ()),
    ("SelfAttention_v2", (False,)),
    ("SelfAttention_v2", (True,)),
    ("CausalAttention", (6, 0.0, False)),
    ("CausalAttention", (6, 0.0, True)),
    ("MultiHeadAttentionWrapper", (6, 0.0, 2, False)),
    ("MultiHeadAttentionWrapper", (6, 0.0, 3, True)),
    ("MultiHeadAttention", (6, 0.0, 2, False)),
    ("MultiHeadAttention", (6, 0.0, 2, True)),
]


@pytest.mark.parametrize("name, args", CLASSES)
def test_torch_weights_are_the_books_classes_weights(name, args):
    """The book's own classes, built after torch.manual_seed, have exactly these weights."""
    torch = pytest.importorskip("torch")
    import chapter_ch03

    torch.manual_seed(SEEDS[name])
    ref = getattr(chapter_ch03, name)(3, 2, *args)
    module, source = chapter_module(getattr(npattn, name), 3, 2, *args, weights="torch")
    assert source == "torch"
    ref_sd, sd = ref.state_dict(), module.state_dict()
    assert list(sd) == list(ref_sd)
    for key, value in ref_sd.items():
        np.testing.assert_array_equal(sd[key], value.numpy(), err_msg=key)
    x = chapter_inputs() if name.startswith("SelfAttention") else chapter_batch()
    with torch.no_grad():
        expected = ref(torch.tensor(x)).numpy()
    np.testing.assert_allclose(module(x), expected, **F32)


def test_torch_global_generator_is_left_alone():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    before = torch.get_rng_state()
    chapter_module(npattn.MultiHeadAttention, 3, 2, 6, 0.0, 2, weights="torch")
    chapter_dropout_keep((6, 6), 0.5, weights="torch")
    assert torch.equal(torch.get_rng_state(), before)


def test_dropout_keep_mask_is_the_books():
    torch = pytest.importorskip("torch")
    torch.manual_seed(SEEDS["dropout"])
    expected = torch.nn.Dropout(0.5)(torch.ones(6, 6)).numpy() != 0
    keep, source = chapter_dropout_keep((6, 6), 0.5, weights="torch")
    assert source == "torch"
    np.testing.assert_array_equal(keep, expected)


def test_npattn_weights_are_the_seeded_npattn_init():
    module, source = chapter_module(npattn.MultiHeadAttention, 3, 4, 6, 0.0, 2, weights="npattn")
    assert source == "npattn"
    fresh = npattn.MultiHeadAttention(3, 4, 6, 0.0, 2, rng=SEEDS["MultiHeadAttention"])
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(module.state_dict()[key], value)
    keep, source = chapter_dropout_keep((4, 5), 0.25, weights="npattn")
    assert source == "npattn" and keep.shape == (4, 5) and keep.dtype == np.bool_


def test_without_torch_auto_falls_back_and_torch_explains(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    _, source = chapter_module(npattn.CausalAttention, 3, 2, 6, 0.0)
    assert source == "npattn"
    assert chapter_dropout_keep((6, 6), 0.5)[1] == "npattn"
    with pytest.raises(ImportError, match="weights='npattn'"):
        chapter_module(npattn.CausalAttention, 3, 2, 6, 0.0, weights="torch")


def test_bad_weights_argument():
    with pytest.raises(ValueError, match="weights must be"):
        chapter_module(npattn.SelfAttention_v2, 3, 2, weights="book")
    with pytest.raises(ValueError, match="weights must be"):
        chapter_dropout_keep((2, 2), 0.5, weights="book")


def test_buffers_are_kept():
    pytest.importorskip("torch")
    module = npattn.CausalAttention(3, 2, 6, 0.0, rng=0)
    sd = torch_seeded_state_dict(module, 123)
    np.testing.assert_array_equal(sd["mask"], module.state_dict()["mask"])
