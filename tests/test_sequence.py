"""Sequence models: Embedding, LayerNorm, attention, LSTM and GRU by hand, against PyTorch
where it is installed, in training; parameter groups and per-batch schedules; the data."""
import numpy as np
import pytest

import nnlite
from nnlite import layers, losses, optim
from nnlite.check import check_layer
from nnlite.layers import GRU, LSTM, Embedding, LayerNorm, Linear, MultiHeadAttention

from conftest import require


# -- by hand -------------------------------------------------------------------------------
def test_embedding_looks_up_rows_and_repeated_ids_add_up():
    emb = Embedding(4, 2, dtype=np.float64)
    emb.weight.data[...] = [[0, 1], [2, 3], [4, 5], [6, 7]]
    ids = np.array([[1, 3, 1]])
    np.testing.assert_array_equal(emb(ids), [[[2, 3], [6, 7], [2, 3]]])
    assert emb.backward(np.ones((1, 3, 2))) is None           # ids have no gradient
    np.testing.assert_array_equal(emb.weight.grad, [[0, 0], [2, 2], [0, 0], [1, 1]])
    big = Embedding(1000, 2, dtype=np.float64)             # the scatter-add path
    big(np.array([5, 5, 7]))
    big.backward(np.ones((3, 2)))
    assert big.weight.grad[5].tolist() == [2, 2] and big.weight.grad.sum() == 6


@pytest.mark.parametrize("ids, message", [
    (np.array([[0, 4]]), r"id 4 is outside the table of 4 embeddings"),
    (np.array([-1]), r"id -1 is outside"),
    (np.array([0.5]), "takes integer ids"),
])
def test_embedding_refuses_ids_it_cannot_look_up(ids, message):
    with pytest.raises(ValueError, match=rf"Embedding\(num_embeddings=4.*{message}"):
        Embedding(4, 2)(ids)


def test_layer_norm_by_hand():
    ln = LayerNorm(4, dtype=np.float64)
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    expected = (x - 2.5) / np.sqrt(1.25 + 1e-5)
    np.testing.assert_allclose(ln(x), expected)
    ln.weight.data[...] = 2
    ln.bias.data[...] = 1
    np.testing.assert_allclose(ln(x), 2 * expected + 1)
    with pytest.raises(ValueError, match=r"LayerNorm.*trailing axes \(4,\).*\(2, 3\)"):
        ln(np.zeros((2, 3)))


def test_attention_of_one_head_by_hand():
    mha = MultiHeadAttention(2, 1, bias=False, dtype=np.float64)
    mha.in_proj_weight.data[...] = np.vstack([np.eye(2)] * 3)    # Q = K = V = x
    mha.out_proj.weight.data[...] = np.eye(2)
    x = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    a = np.exp(np.array([[1, 0], [0, 1]]) / np.sqrt(2))
    a /= a.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(mha(x), a @ x[0][None])
    mha.causal = True
    np.testing.assert_allclose(mha(x)[0, 0], x[0, 0])          # the first sees itself only


def test_causal_attention_keeps_earlier_outputs_when_a_future_position_changes(rng):
    mha = MultiHeadAttention(8, 2, causal=True)
    x = rng.standard_normal((2, 6, 8)).astype(np.float32)
    y = mha(x)
    changed = x.copy()
    changed[:, 4] += 10
    y2 = mha(changed)
    np.testing.assert_array_equal(y2[:, :4], y[:, :4])
    assert not np.allclose(y2[:, 4:], y[:, 4:])
    with pytest.raises(ValueError, match="embed_dim 6 is not divisible by num_heads 4"):
        MultiHeadAttention(6, 4)


def test_an_lstm_of_one_unit_by_hand():
    lstm = LSTM(1, 1, dtype=np.float64)
    for p in lstm.parameters():
        p.data[...] = 0
    lstm.weight_ih.data[...] = [[1.0], [0.0], [1.0], [0.0]]    # i, f, g, o from x only
    x = np.array([[[0.5], [-1.0]]])
    s = 1 / (1 + np.exp(-np.array([0.5, -1.0])))
    c1 = s[0] * np.tanh(0.5)
    c2 = 0.5 * c1 + s[1] * np.tanh(-1.0)                      # f = σ(0) = ½
    np.testing.assert_allclose(lstm(x)[0, :, 0], [0.5 * np.tanh(c1), 0.5 * np.tanh(c2)])


def test_a_gru_of_one_unit_by_hand():
    gru = GRU(1, 1, return_sequences=False, dtype=np.float64)
    for p in gru.parameters():
        p.data[...] = 0
    gru.weight_ih.data[...] = [[0.0], [0.0], [1.0]]           # r, z, n from x only
    x = np.array([[[2.0]]])
    np.testing.assert_allclose(gru(x), [[0.5 * np.tanh(2.0)]])  # z = ½, h = ½n


@pytest.mark.parametrize("make", [lambda: LSTM(3, 5), lambda: GRU(3, 5),
                                  lambda: LSTM(3, 5, return_sequences=False)])
def test_recurrent_layers_check_over_many_steps_and_refuse_wrong_features(make, rng):
    report = check_layer(make(), rng.standard_normal((2, 7, 3)))
    assert report.ok, str(report)
    with pytest.raises(ValueError, match=r"expects sequences of shape \(N, T, 3\), got "
                                         r"\(2, 7, 4\)"):
        make()(np.zeros((2, 7, 4), np.float32))


def test_cross_entropy_over_positions_and_its_label_shape_check(rng):
    logits = rng.standard_normal((2, 3, 5))
    labels = rng.integers(0, 5, (2, 3))
    loss = losses.CrossEntropy()
    flat = losses.CrossEntropy().forward(logits.reshape(6, 5), labels.reshape(6))
    assert loss.forward(logits, labels) == pytest.approx(flat)
    assert loss.backward().shape == (2, 3, 5)
    with pytest.raises(ValueError, match=r"target of shape \(2, 4\) does not fit logits of "
                                         r"shape \(2, 3, 5\).*leading shape \(2, 3\)"):
        loss(logits, labels[:, :1].repeat(4, axis=1))  # checked at the door


# -- against PyTorch -------------------------------------------------------------------------
def test_layers_equal_torchs_with_the_same_weights(rng):
    torch = require("torch")
    x = rng.standard_normal((3, 6, 8)).astype(np.float32)
    tx = torch.from_numpy(x)
    cases = [(LSTM(8, 4), torch.nn.LSTM(8, 4, batch_first=True), "_l0"),
             (GRU(8, 4), torch.nn.GRU(8, 4, batch_first=True), "_l0"),
             (LayerNorm(8), torch.nn.LayerNorm(8), "")]
    for ours, theirs, suffix in cases:
        theirs.load_state_dict({k + suffix: torch.from_numpy(v)
                                for k, v in ours.state_dict().items()})
        out = theirs(tx)
        out = out[0] if isinstance(out, tuple) else out
        np.testing.assert_allclose(ours(x), out.detach().numpy(), atol=1e-5)
    for causal in (False, True):
        ours = MultiHeadAttention(8, 2, causal=causal)
        theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
        mask = torch.triu(torch.full((6, 6), float("-inf")), 1) if causal else None
        out = theirs(tx, tx, tx, attn_mask=mask, need_weights=False)[0]
        np.testing.assert_allclose(ours(x), out.detach().numpy(), atol=1e-5)
    from scipy.special import erf
    np.testing.assert_allclose(layers.GELU()(x), torch.nn.GELU()(tx).numpy(), atol=1e-6)
    ids = rng.integers(0, 10, (3, 6))
    emb = Embedding(10, 4)
    theirs = torch.nn.Embedding(10, 4)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in emb.state_dict().items()})
    np.testing.assert_array_equal(emb(ids), theirs(torch.from_numpy(ids)).detach().numpy())
    assert erf(0) == 0


def test_recurrent_gradients_equal_torchs(rng):
    torch = require("torch")
    x = rng.standard_normal((2, 5, 3))
    for ours, theirs in ((LSTM(3, 4, dtype=np.float64), torch.nn.LSTM(3, 4, batch_first=True)),
                         (GRU(3, 4, dtype=np.float64), torch.nn.GRU(3, 4, batch_first=True))):
        theirs = theirs.double()
        theirs.load_state_dict({k + "_l0": torch.from_numpy(v)
                                for k, v in ours.state_dict().items()})
        g = rng.standard_normal((2, 5, 4))
        tx = torch.from_numpy(x).requires_grad_()
        (theirs(tx)[0] * torch.from_numpy(g)).sum().backward()
        ours(x)
        np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), atol=1e-10)
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad, getattr(theirs, name + "_l0").grad.numpy(),
                                       atol=1e-10)


# -- training ------------------------------------------------------------------------------------
def tiny_lm(vocab=12, width=16, context=8):
    ids = nnlite.Input((context,))
    tok = Embedding(vocab, width)
    h = tok(ids)
    h = layers.Add()([h, MultiHeadAttention(width, 2, causal=True)(LayerNorm(width)(h))])
    head = Linear(width, vocab, bias=False)
    head.weight = tok.weight                                   # tied, as GPT's
    return nnlite.Model(ids, head(LayerNorm(width)(h)))


def test_a_tiny_language_model_trains_on_integer_ids_and_resumes_bit_identically(tmp_path):
    rng = np.random.default_rng(0)
    text = np.tile(np.arange(12), 60)                          # 0 1 2 ... 11 0 1 ...
    starts = rng.integers(0, len(text) - 9, 256)
    x = np.stack([text[s:s + 8] for s in starts])
    y = np.stack([text[s + 1:s + 9] for s in starts])

    def run(epochs, callbacks=(), model=None, opt=None, initial_epoch=0):
        if model is None:
            nnlite.set_seed(0)
            model = tiny_lm()
            decay = [p for n, p in model.named_parameters() if p.data.ndim >= 2]
            rest = [p for n, p in model.named_parameters() if p.data.ndim < 2]
            opt = optim.AdamW([{"params": rest, "weight_decay": 0.0},     # not model order
                               {"params": decay, "weight_decay": 0.1}], lr=1e-2,
                              betas=(0.9, 0.99), max_grad_norm=1.0)
        schedule = optim.WarmupCosineLR(opt, warmup_steps=5, total_steps=64, min_lr=1e-3)
        history = model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=epochs,
                            batch_size=32, seed=0, verbose=False, initial_epoch=initial_epoch,
                            callbacks=[schedule, *callbacks])
        return model, opt, history

    model, opt, history = run(8)
    assert model.predict(x).dtype == np.float32
    assert history.history["accuracy"][-1] > 0.95 and opt.steps == 64
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)        # decayed to min_lr
    assert model.layers[-1].weight is model.layers[0].weight

    run(4, [nnlite.callbacks.ModelCheckpoint(tmp_path / "lm.npz")])
    resumed, opt2, epoch = nnlite.load_checkpoint(tmp_path / "lm.npz")
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.0, 0.1]
    assert resumed.layers[-1].weight is resumed.layers[0].weight
    run(8, model=resumed, opt=opt2, initial_epoch=epoch)
    for a, b in zip(model.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_a_sequential_that_starts_with_an_embedding_takes_integer_ids():
    model = nnlite.Sequential(Embedding(5, 3), LSTM(3, 4, return_sequences=False),
                              Linear(4, 2))
    ids = np.random.default_rng(0).integers(0, 5, (20, 6))
    assert model.predict(ids).shape == (20, 2)
    model.fit(ids, ids[:, 0] % 2, loss=losses.CrossEntropy(), verbose=False,
              optimizer=optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="fit: x must hold integer ids"):
        model.fit(ids + 0.5, ids[:, 0] % 2, loss=losses.CrossEntropy(), verbose=False,
                  optimizer=optim.Adam(model.parameters()))


def test_lambda_lr_steps_per_batch_counting_across_epochs():
    model = nnlite.Sequential(Linear(2, 1))
    opt = optim.SGD(model.parameters(), lr=1.0)
    seen = []

    class Record(nnlite.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(opt.lr)

    x = np.zeros((8, 2), np.float32)
    schedule = optim.LambdaLR(opt, lambda step: 1 / (step + 1))
    model.fit(x, x[:, :1], loss=losses.MSE(), optimizer=opt, epochs=2, batch_size=4,
              verbose=False, callbacks=[schedule, Record()])
    assert seen == pytest.approx([1 / 2, 1 / 3, 1 / 4, 1 / 5])   # recorded after each step


def test_parameter_groups_have_their_own_settings_and_are_checked():
    a, b = Linear(2, 2), Linear(2, 2)
    opt = optim.Adam([{"params": a.parameters()}, {"params": b.parameters(), "lr": 0.5}],
                     lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    with pytest.raises(ValueError, match="more than one group"):
        optim.Adam([{"params": a.parameters()}, {"params": a.parameters()}])
    with pytest.raises(ValueError, match=r"unknown settings \['momentum'\]"):
        optim.Adam([{"params": a.parameters(), "momentum": 0.9}])
    with pytest.raises(ValueError, match="lr must be a positive number"):
        optim.Adam([{"params": a.parameters(), "lr": -1}])


def test_load_tiny_shakespeare_finds_and_verifies_the_text(data_root, tmp_path):
    text = nnlite.datasets.load_tiny_shakespeare(data_root)
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    assert len(set(text)) == 65
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("not it")
    with pytest.raises(ValueError, match="input.txt is 6 bytes, expected 1,115,394"):
        nnlite.datasets.load_tiny_shakespeare(tmp_path, download=False)


def test_positional_embedding_adds_a_row_per_position_and_refuses_longer_sequences():
    pos = layers.PositionalEmbedding(3, 2, dtype=np.float64)
    pos.weight.data[...] = [[1, 1], [2, 2], [3, 3]]
    x = np.zeros((2, 2, 2))
    np.testing.assert_array_equal(pos(x), [[[1, 1], [2, 2]]] * 2)
    np.testing.assert_array_equal(pos.backward(np.ones((2, 2, 2))), 1)
    np.testing.assert_array_equal(pos.weight.grad, [[2, 2], [2, 2], [0, 0]])
    with pytest.raises(ValueError, match="a sequence of 4 positions is longer than the table "
                                         "of 3"):
        pos(np.zeros((1, 4, 2)))


def test_recurrent_models_save_load_and_resume_bit_identically(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, (64, 5))
    y = ids.sum(axis=1) % 3

    def fresh():
        nnlite.set_seed(4)
        model = nnlite.Sequential(Embedding(6, 4), GRU(4, 8), LSTM(8, 8, return_sequences=False),
                                  Linear(8, 3))
        return model, optim.Adam(model.parameters(), lr=1e-2)

    def fit(model, opt, epochs, initial_epoch=0, callbacks=()):
        model.fit(ids, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=epochs,
                  initial_epoch=initial_epoch, batch_size=16, seed=1, verbose=False,
                  callbacks=callbacks)

    straight, opt = fresh()
    fit(straight, opt, 4)
    model, opt = fresh()
    fit(model, opt, 2, callbacks=[nnlite.callbacks.ModelCheckpoint(tmp_path / "rnn.npz")])
    resumed, opt2, epoch = nnlite.load_checkpoint(tmp_path / "rnn.npz")
    fit(resumed, opt2, 4, initial_epoch=epoch)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    straight.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(nnlite.load(tmp_path / "m.npz").predict(ids),
                                  straight.predict(ids))


def _torch_block(torch, e, h, ratio, p, bias):
    nn = torch.nn

    class Block(nn.Module):      # nanoGPT's Block, from torch.nn's layers
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(e, bias=bias), nn.LayerNorm(e, bias=bias)
            self.attn = nn.MultiheadAttention(e, h, dropout=p, bias=bias, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(e, ratio * e, bias=bias), nn.GELU(),
                                     nn.Linear(ratio * e, e, bias=bias))

        def forward(self, x):
            t = x.shape[1]
            mask = torch.triu(torch.full((t, t), float("-inf"), dtype=x.dtype), 1)
            a = self.ln_1(x)
            u = x + self.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
            return u + self.mlp(self.ln_2(u))
    return Block().double()


@pytest.mark.parametrize("bias", [True, False])
def test_a_transformer_block_is_nanogpts_block(rng, tmp_path, bias):
    torch = require("torch")
    block = layers.TransformerBlock(8, 2, mlp_ratio=3, bias=bias, dtype=np.float64)
    theirs = _torch_block(torch, 8, 2, 3, 0.0, bias)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in block.state_dict().items()},
                           strict=True)
    x = rng.standard_normal((2, 5, 8))
    xt = torch.from_numpy(x).requires_grad_()
    out = theirs(xt)
    np.testing.assert_allclose(block.forward(x), out.detach().numpy(), atol=1e-9)
    g = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(g))
    np.testing.assert_allclose(block.backward(g), xt.grad.numpy(), atol=1e-9)
    grads = {n: p.grad for n, p in theirs.named_parameters()}
    for name, p in block.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].numpy(), atol=1e-9, err_msg=name)
    assert nnlite.check.check_layer(layers.TransformerBlock(4, 2, mlp_ratio=2, bias=bias), x[:, :, :4])
    model = nnlite.Sequential(block)
    model.predict(x)
    model.save(tmp_path / "b.npz")
    np.testing.assert_array_equal(nnlite.load(tmp_path / "b.npz").predict(x), model.predict(x))
    assert "0 TransformerBlock" in model.summary()


def test_a_transformer_block_with_dropout_trains_and_is_the_identity_of_its_mask_in_eval(rng):
    block = layers.TransformerBlock(8, 2, dropout=0.1)
    x = rng.standard_normal((2, 4, 8)).astype(np.float32)
    with block.evaluating():
        np.testing.assert_array_equal(block.forward(x), block.forward(x))
    assert nnlite.check.check_layer(layers.TransformerBlock(4, 2, dropout=0.3), x[:, :, :4])
