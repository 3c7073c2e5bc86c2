"""Text generation and character vocabularies: model.generate as nanoGPT's, CharVocab."""
import numpy as np
import pytest

import nnlite
from nnlite import Input, Model, Sequential
from nnlite.datasets import CharVocab
from nnlite.layers import Embedding, Flatten, Linear, MultiHeadAttention, PositionalEmbedding


def tiny_gpt(vocab=7, context=4):
    ids = Input((context,), dtype=np.int64)
    h = PositionalEmbedding(context, 8)(Embedding(vocab, 8)(ids))
    h = MultiHeadAttention(8, 2, causal=True)(h)
    return Model(ids, Linear(8, vocab)(h))


def test_greedy_generation_is_the_argmax_chain_over_the_last_context_ids():
    model = tiny_gpt()
    start = np.array([[1, 2], [3, 0]])
    out = model.generate(start, 9, temperature=0)
    assert out.shape == (2, 11) and out.dtype == np.int64
    np.testing.assert_array_equal(out[:, :2], start)
    by_hand = start.copy()
    for _ in range(9):
        logits = model.predict(by_hand[:, -4:])          # the position table holds 4
        by_hand = np.concatenate([by_hand, logits[:, -1].argmax(1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, by_hand)


def test_sampling_stays_in_the_top_k_and_a_seed_reproduces_it():
    model = Sequential(Embedding(50, 50))                 # logits: a row of a fixed table
    table = model[0].weight.data
    start = np.array([[3]] * 64)
    out = model.generate(start, 5, top_k=3, seed=1)
    for row in out:
        for prev, new in zip(row[:-1], row[1:]):
            assert new in np.argsort(table[prev])[-3:]
    np.testing.assert_array_equal(out, model.generate(start, 5, top_k=3, seed=1))
    assert not np.array_equal(out, model.generate(start, 5, top_k=3, seed=2))
    spread = model.generate(start, 1, seed=0)[:, 1]       # without top_k: many ids
    assert len(set(spread.tolist())) > 10
    cold = model.generate(start, 1, temperature=1e-3, seed=0)[:, 1]
    assert set(cold.tolist()) == {int(table[3].argmax())}


def test_the_draws_follow_the_softmax():
    model = Sequential(Embedding(4, 4))
    model[0].weight.data[0] = np.log([0.1, 0.2, 0.3, 0.4])
    draws = model.generate(np.zeros((20000, 1), np.int64), 1, seed=0)[:, 1]
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, [0.1, 0.2, 0.3, 0.4],
                               atol=0.015)


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.array([[0.5, 1.0]]), 3), {}, "ids must be integers"),
    ((np.zeros((1, 0), np.int64), 3), {}, "T >= 1"),
    ((np.array([1, 2]), 3), {}, r"ids\[None\]"),
    ((np.array([[1, 2]]), -1), {}, "max_new_tokens"),
    ((np.array([[1, 2]]), 3), {"top_k": 0}, "top_k"),
    ((np.array([[1, 2]]), 3), {"temperature": -1.0}, "temperature"),
    ((np.array([[1, 9]]), 3), {}, "id 9 is outside the table of 7"),
])
def test_bad_arguments_say_which(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_gpt().generate(*args, **kwargs)


def test_a_model_that_does_not_return_logits_per_position_is_refused():
    model = Sequential(Embedding(7, 3), Flatten(), Linear(6, 7))
    with pytest.raises(ValueError, match=r"logits \(N, T, vocab\).*returned \(1, 7\)"):
        model.generate(np.array([[1, 2]]), 2)


def test_char_vocab_round_trips_and_names_an_unknown_character(tmp_path):
    text = "To be, or not to be: that is the question. Ünïcödé ✓"
    vocab = CharVocab(text)
    assert len(vocab) == len(set(text)) and vocab.chars == "".join(sorted(set(text)))
    ids = vocab.encode(text)
    assert ids.dtype == np.int64 and vocab.decode(ids) == text
    assert vocab.decode(np.array([], np.int64)) == ""
    with pytest.raises(ValueError, match=r"'z' \(position 2\) is not one of"):
        vocab.encode("Toz")
    with pytest.raises(ValueError, match=r"ids must be in \[0, "):
        vocab.decode([0, len(vocab)])
    vocab.save(tmp_path / "v.json")
    again = CharVocab.load(tmp_path / "v.json")
    assert again.chars == vocab.chars and again.decode(again.encode(text)) == text


@pytest.mark.parametrize("content", [b"not json", b'{"chars": "ab"}',
                                     b'{"format": "nnlite-charvocab", "chars": "ba"}',
                                     b'{"format": "nnlite-charvocab", "chars": 5}',
                                     b"\xff\xfe", b"[" * (1 << 21)])
def test_a_vocabulary_file_loads_exactly_or_is_refused_naming_it(tmp_path, content):
    path = tmp_path / "v.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="v.json"):
        CharVocab.load(path)


def test_tiny_shakespeare_has_65_characters(data_root):
    text = nnlite.datasets.load_tiny_shakespeare(data_root)
    vocab = CharVocab(text)
    assert len(text) == 1115394 and len(vocab) == 65
    assert vocab.decode(vocab.encode(text[:1000])) == text[:1000]
