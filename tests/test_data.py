import numpy as np
import pytest

from npattn.chapter import data


def test_inputs_match_the_books_transcription():
    pytest.importorskip("torch")
    from chapter_ch03 import INPUTS

    np.testing.assert_array_equal(np.array(data.CHAPTER_INPUTS), np.array(INPUTS))


def test_one_token_per_row():
    assert len(data.TOKENS) == len(data.CHAPTER_INPUTS) == 6
    assert " ".join(data.TOKENS) == "Your journey starts with one step"
    assert data.TOKENS[data.QUERY_INDEX] == "journey"


def test_chapter_inputs_are_fresh_arrays_of_the_requested_dtype():
    a = data.chapter_inputs()
    assert a.shape == (6, 3) and a.dtype == np.float32
    a[:] = 0
    b = data.chapter_inputs(np.float64)
    assert b.dtype == np.float64
    np.testing.assert_array_equal(b, np.array(data.CHAPTER_INPUTS))


def test_chapter_batch_is_the_inputs_stacked_twice():
    batch = data.chapter_batch(np.float64)
    assert batch.shape == (2, 6, 3)
    for row in batch:
        np.testing.assert_array_equal(row, data.chapter_inputs(np.float64))
