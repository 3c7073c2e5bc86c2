"""Files other tools read (state dicts, safetensors, ONNX) and loading that survives any file."""
import gc
import io
import json
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import nnlite
from nnlite import layers, losses, optim
from nnlite.layers import (BatchNorm, Conv2D, Dropout, Flatten, Linear, MaxPool2D, RandomShift,
                           ReLU)

from conftest import require, rewrite


def mlp():
    return nnlite.Sequential(Linear(64, 32), ReLU(), Dropout(0.1), Linear(32, 10))


def cnn():
    return nnlite.Sequential(RandomShift(1), Conv2D(1, 4, 3, padding=1), BatchNorm(4), ReLU(),
                             MaxPool2D(2), Flatten(), Linear(4 * 4 * 4, 10))


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = nnlite.datasets.load_digits()
    return x / np.float32(16), y, xt / np.float32(16), yt


def trained(make, x, y, epochs=3):
    nnlite.set_seed(0)
    model = make()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=epochs, verbose=False,
              seed=0)
    return model, opt


def flat(x):
    return x.reshape(len(x), -1)


# -- state dicts in PyTorch's names and layouts ---------------------------------------------
def test_state_dict_has_pytorch_names_and_layouts():
    state = cnn().state_dict()
    assert {k: v.shape for k, v in state.items()} == {
        "1.weight": (4, 1, 3, 3), "1.bias": (4,), "2.weight": (4,), "2.bias": (4,),
        "2.running_mean": (4,), "2.running_var": (4,), "2.num_batches_tracked": (),
        "6.weight": (10, 64), "6.bias": (10,)}
    model = cnn()
    state["6.weight"] = np.arange(640, dtype=np.float64).reshape(10, 64)
    assert model.load_state_dict(state) == ([], [])
    np.testing.assert_array_equal(model[6].weight.data, state["6.weight"])
    assert model[6].weight.dtype == np.float32            # converted to the model's dtype


def test_load_state_dict_names_every_missing_unexpected_and_mismatched_key():
    model = mlp()
    state = model.state_dict()
    del state["0.bias"]
    state["9.weight"] = np.zeros(3)
    state["3.weight"] = np.zeros((10, 31))
    with pytest.raises(ValueError, match=r"'3.weight' has shape \(10, 31\), the model needs "
                                         r"\(10, 32\).*missing key '0.bias'.*unexpected key "
                                         r"'9.weight'"):
        model.load_state_dict(state)
    with pytest.raises(ValueError, match="3.weight") as info:
        model.load_state_dict(state, strict=False)
    assert "missing" not in str(info.value)
    state["3.weight"] = np.ones((10, 32))
    before = model[0].bias.data.copy()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert (missing, unexpected) == (["0.bias"], ["9.weight"])
    np.testing.assert_array_equal(model[0].bias.data, before)
    np.testing.assert_array_equal(model[3].weight.data, 1)


def test_a_graph_models_state_dict_names_its_layers_by_first_use():
    x = nnlite.Input((4,))
    shared = Linear(4, 4)
    model = nnlite.Model(x, Linear(4, 2)(layers.Add()([shared(x), shared(ReLU()(x))])))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]


@pytest.mark.parametrize("make, shape", [(mlp, (64,)), (cnn, (1, 8, 8))])
def test_round_trip_through_pytorch_by_state_dict_and_safetensors(digits, tmp_path, make,
                                                                  shape):
    torch = require("torch")
    from safetensors.torch import load_file, save_file

    x, y, xt, _ = digits
    x, xt = x.reshape(-1, *shape), xt.reshape(-1, *shape)
    model, _ = trained(make, x, y)
    twin = _torch_twin(torch, make)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    twin.eval()
    with torch.no_grad():
        theirs = twin(torch.from_numpy(xt)).numpy()
    np.testing.assert_allclose(theirs, model.predict(xt), atol=1e-5)

    back = make()
    assert back.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()}) == ([], [])
    np.testing.assert_allclose(back.predict(xt), model.predict(xt), atol=1e-5)

    model.save_weights(tmp_path / "ours.safetensors")
    twin.load_state_dict(load_file(str(tmp_path / "ours.safetensors")))
    save_file(twin.state_dict(), str(tmp_path / "theirs.safetensors"))
    again = make()
    again.load_weights(tmp_path / "theirs.safetensors")
    np.testing.assert_allclose(again.predict(xt), model.predict(xt), atol=1e-5)


def _torch_twin(torch, make):
    nn = torch.nn
    if make is mlp:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))
    return nn.Sequential(nn.Identity(), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def test_load_weights_refuses_what_is_not_safetensors(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(ValueError, match="w.safetensors is not a readable safetensors file"):
        mlp().load_weights(tmp_path / "w.safetensors")


def test_mutated_safetensors_files_load_or_fail_with_a_clear_error(tmp_path):
    model = mlp()
    model.save_weights(tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    rng = np.random.default_rng(1)
    path = tmp_path / "mutated.safetensors"
    for i in range(600):
        mutated = bytearray(data[:rng.integers(len(data))] if i % 3 == 0 else data)
        for _ in range(rng.integers(0 if i % 3 == 0 else 1, 4)):
            mutated[rng.integers(len(mutated))] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(mutated))
        try:
            model.load_weights(path)
        except ValueError as e:
            assert str(path) in str(e), str(e)
            continue
        assert all(np.isfinite(p.data).all() for p in model.parameters())


# -- ONNX ------------------------------------------------------------------------------------
def _onnxruntime_outputs(path, feeds):
    ort = require("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("make, shape", [(mlp, (64,)), (cnn, (1, 8, 8))])
def test_onnx_export_runs_in_onnxruntime_to_the_same_predictions(digits, tmp_path, make,
                                                                  shape):
    onnx = require("onnx")
    x, y, xt, _ = digits
    model, _ = trained(make, x.reshape(-1, *shape), y)
    nnlite.export_onnx(model, tmp_path / "m.onnx")      # the input shape it was trained on
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"))
    (got,) = _onnxruntime_outputs(tmp_path / "m.onnx", {"input": xt.reshape(-1, *shape)})
    np.testing.assert_allclose(got, model.predict(xt.reshape(-1, *shape)), atol=1e-5)


def test_every_builtin_layer_and_graphs_with_several_inputs_and_outputs_export(tmp_path, rng):
    require("onnx")
    a, b = nnlite.Input((2, 6, 6)), nnlite.Input((5,))
    h = Conv2D(2, 3, 3, stride=2, padding=1)(a)
    h = layers.AvgPool2D(2, stride=1)(ReLU()(BatchNorm(3)(h)))
    h = Flatten()(nnlite.Sequential(RandomShift(1), layers.RandomHorizontalFlip(),
                                    layers.Tanh(), layers.Reshape((-1, 2, 2)))(h))
    h = layers.Concatenate()([Linear(12, 5)(h), b])
    h = layers.Multiply()([layers.GELU()(Linear(10, 5)(h)), layers.Sigmoid()(b)])
    out0 = layers.Softmax()(layers.LeakyReLU(0.2)(layers.Add()([h, b, b])))
    out1 = Dropout(0.5)(Linear(5, 2, bias=False)(h))
    model = nnlite.Model([a, b], [out0, out1])
    exported = {type(m).__name__ for m in model.modules()}
    # MaxPool2D: the CNN test above; the sequence layers: test_sequence_layers_export
    assert exported >= set(layers.__all__) - {"MaxPool2D", "Embedding", "LayerNorm",
                                              "PositionalEmbedding",
                                              "MultiHeadAttention", "TransformerBlock",
                                              "LSTM", "GRU"}
    norm = next(m for m in model.layers if isinstance(m, BatchNorm))
    norm.running_var[...] = rng.uniform(0.5, 2, 3)
    nnlite.export_onnx(model, tmp_path / "g.onnx")
    xs = [rng.standard_normal((4, 2, 6, 6)).astype(np.float32),
          rng.standard_normal((4, 5)).astype(np.float32)]
    got = _onnxruntime_outputs(tmp_path / "g.onnx", {"input_0": xs[0], "input_1": xs[1]})
    for g, p in zip(got, model.predict(xs)):
        np.testing.assert_allclose(g, p, atol=1e-5)


def test_sequence_layers_export_or_say_they_cannot(tmp_path, rng):
    require("onnx")
    ids = nnlite.Input((5,))
    h = layers.LayerNorm(4)(layers.PositionalEmbedding(5, 4)(layers.Embedding(9, 4)(ids)))
    model = nnlite.Model(ids, Linear(4, 3)(layers.LayerNorm(4, bias=False)(h)))
    nnlite.export_onnx(model, tmp_path / "s.onnx")
    x = rng.integers(0, 9, (2, 5))
    (got,) = _onnxruntime_outputs(tmp_path / "s.onnx", {"input": x})
    np.testing.assert_allclose(got, model.predict(x), atol=1e-5)
    for layer in (layers.LSTM(4, 4), layers.GRU(4, 4), layers.MultiHeadAttention(4, 2)):
        with pytest.raises(ValueError, match=f"{type(layer).__name__}.*has no ONNX export rule"):
            nnlite.export_onnx(nnlite.Sequential(layer), tmp_path / "r.onnx", (3, 4))


def test_a_custom_layer_without_an_export_rule_is_named_and_one_can_be_registered(tmp_path):
    require("onnx")

    class Doubler(nnlite.Layer):
        def forward(self, x):
            return 2 * x

        def backward(self, grad):
            return 2 * grad

    model = nnlite.Sequential(Linear(3, 3), Doubler())
    with pytest.raises(ValueError, match=r"Doubler\(\) has no ONNX export rule.*export_rule"):
        nnlite.export_onnx(model, tmp_path / "d.onnx")

    @nnlite.onnx.export_rule(Doubler)
    def _(layer, graph, x):
        return graph.op("Mul", x, graph.constant(2.0))

    nnlite.export_onnx(model, tmp_path / "d.onnx")
    x = np.ones((2, 3), np.float32)
    (got,) = _onnxruntime_outputs(tmp_path / "d.onnx", {"input": x})
    np.testing.assert_allclose(got, model.predict(x), atol=1e-6)
    with pytest.raises(ValueError, match="pass input_shape"):
        nnlite.export_onnx(nnlite.Sequential(ReLU()), tmp_path / "r.onnx")


# -- loading you can trust --------------------------------------------------------------------
def test_a_tiny_file_declaring_an_enormous_layer_is_refused_without_allocating_it(tmp_path):
    path = tmp_path / "huge.npz"
    nnlite.Sequential(Linear(2, 2)).save(path)
    rewrite(path, lambda h: h["architecture"]["config"]["layers"][0]["layer"]["config"].update(
        in_features=20000, out_features=20000))
    assert path.stat().st_size < 4000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"huge.npz.*Linear.*\(20000, 20000\).*more than "
                                             r"the file holds"):
            nnlite.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2 ** 20


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"param/0.weight": a["param/0.weight"].astype("U8")}), "<U8"),
    (lambda a: a.update({"param/0.weight": a["param/0.weight"].astype(np.int32)}), "int32"),
    (lambda a: a.update({"param/0.weight": a["param/0.weight"] * np.nan}), "NaN or infinite"),
    (lambda a: a.update({"param/0.weight": a["param/0.weight"][:, :3]}), r"shape \(32, 3\)"),
    (lambda a: a.update({"param/9.extra": np.zeros(2, np.float32)}),
     "does not use the arrays param/9.extra"),
])
def test_weight_arrays_of_the_wrong_dtype_shape_or_values_are_refused(tmp_path, change,
                                                                      message):
    path = tmp_path / "m.npz"
    mlp().save(path)
    rewrite(path, change_arrays=change)
    with pytest.raises(ValueError, match=f"m.npz.*{message}"):
        nnlite.load(path)


@pytest.mark.parametrize("index, key, value, message", [
    (0, "in_features", 0, r"Linear: in_features must be a whole number in \[1, inf\)"),
    (0, "in_features", "64", "in_features must be a whole number"),
    (2, "p", 1e300, r"Dropout: p .* \[0, 1\)"),
    (0, "bias", "yes", "bias must be True or False"),
    (0, "dtype", "int8", "floating dtype"),
    (0, "unknown", 1, "unexpected keyword argument 'unknown'"),
])
def test_config_values_a_constructor_would_choke_on_are_refused_naming_the_layer(
        tmp_path, index, key, value, message):
    path = tmp_path / "m.npz"
    mlp().save(path)
    rewrite(path, lambda h: h["architecture"]["config"]["layers"][index]["layer"]["config"]
            .update({key: value}))
    with pytest.raises(ValueError, match=f"m.npz.*{message}"):
        nnlite.load(path)


@pytest.mark.parametrize("config, message", [
    ({"kernel_size": 0}, r"kernel_size must be a whole number in \[1, inf\)"),
    ({"kernel_size": 2, "stride": [1]}, "stride must be one whole number or two"),
    ({"kernel_size": 2, "stride": [0, 1]}, "stride must be a whole number"),
])
def test_pooling_configs_are_checked_at_load_not_at_predict(tmp_path, config, message):
    path = tmp_path / "cnn.npz"
    cnn().save(path)
    rewrite(path, lambda h: h["architecture"]["config"]["layers"][4]["layer"].update(
        config=config))
    with pytest.raises(ValueError, match=f"cnn.npz.*MaxPool2D.*{message}"):
        nnlite.load(path)


def test_only_public_layers_and_the_programs_own_can_be_built(tmp_path):
    path = tmp_path / "m.npz"
    mlp().save(path)
    for name in ("_Pool2D", "Trainable", "Layer", "object"):
        rewrite(path, lambda h: h["architecture"]["config"]["layers"][1]["layer"].update(
            {"class": name}))
        with pytest.raises(ValueError, match=f"m.npz.*{name!r}"):
            nnlite.load(path)


def test_a_file_whose_layer_class_changed_does_not_drop_its_weights_silently(tmp_path, rng):
    class Swish(nnlite.Layer):
        def __init__(self, n):
            super().__init__()
            self.n = n
            self.beta = nnlite.Parameter(np.ones(n))

        def forward(self, x):
            return x / (1 + np.exp(-self.beta.data * x))

    nnlite.Sequential(Linear(3, 3), Swish(3)).save(tmp_path / "swish.npz")

    class Swish(nnlite.Layer):  # noqa: F811 -- a different Swish, without parameters
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return x / (1 + np.exp(-x))

    with pytest.raises(ValueError, match=r"does not use the arrays param/1.beta"):
        nnlite.load(tmp_path / "swish.npz")


def test_files_that_are_not_nnlites_say_what_they_are(tmp_path):
    (tmp_path / "notes.npz").write_text("just some notes\n")
    with pytest.raises(ValueError, match="notes.npz is not an nnlite file: it is a text file") \
            as info:
        nnlite.load(tmp_path / "notes.npz")
    assert "pickle" not in str(info.value)
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"array.npy is a single NumPy array \(.npy\)"):
        nnlite.load(tmp_path / "array.npy")
    with pytest.raises(ValueError, match="is a folder"):
        nnlite.load(tmp_path)


def test_a_truncated_file_leaves_no_unclosed_file(tmp_path):
    path = tmp_path / "m.npz"
    mlp().save(path)
    path.write_bytes(path.read_bytes()[:700])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(ValueError, match="m.npz"):
            nnlite.load(path)
        import gc
        gc.collect()


def test_save_into_a_missing_folder_names_the_target(tmp_path):
    target = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(FileNotFoundError, match=f"cannot save {target}: the folder"):
        mlp().save(target)


def test_an_architecture_whose_layers_no_longer_fit_fails_at_load(digits, tmp_path):
    x, y, *_ = digits
    model, _ = trained(cnn, x.reshape(-1, 1, 8, 8), y, epochs=1)
    model.save(tmp_path / "cnn.npz")
    rewrite(tmp_path / "cnn.npz", lambda h: h["architecture"]["config"]["layers"][4]["layer"]
            ["config"].update(kernel_size=[4, 4], stride=[4, 4]))
    with pytest.raises(ValueError, match=r"cnn.npz.*Linear.*\(N, 64\).*\(1, 16\)"):
        nnlite.load(tmp_path / "cnn.npz")


# -- the fuzzer ---------------------------------------------------------------------------------
def _saved_bytes(tmp_path, digits):
    """A trained MLP, CNN and residual graph Model, as checkpoint files' bytes."""
    x, y, *_ = digits
    files = {}
    def residual():
        i = nnlite.Input((64,))
        h = ReLU()(Linear(64, 16)(i))
        return nnlite.Model(i, Linear(16, 10)(layers.Add()([h, ReLU()(Linear(16, 16)(h))])))

    for name, make, shape in (("mlp", mlp, (64,)), ("cnn", cnn, (1, 8, 8)),
                              ("graph", residual, (64,))):
        model, opt = trained(make, x.reshape(-1, *shape), y, epochs=1)
        model.save(tmp_path / f"{name}.npz", optimizer=opt, epoch=1)
        files[name] = ((tmp_path / f"{name}.npz").read_bytes(), x[:5].reshape(-1, *shape))
    return files


def _header_edits(rng, header):
    """One random edit somewhere in the JSON header: a value replaced by another kind."""
    spots = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            spots.append((node, key))
            if isinstance(value, (dict, list)):
                walk(value)

    walk(header)
    node, key = spots[rng.integers(len(spots))]
    choices = [0, -1, 1, 2 ** 40, 1e300, -0.5, "Linear", "_Pool2D", "x", None, True, [],
               [1], {}, {"same_as": 0}, {"layer": {"class": "ReLU", "config": {}}}]
    node[key] = choices[rng.integers(len(choices))]
    return header


def _mutations(data, rng, count):
    """Seeded mutations of a saved file's bytes: flipped bytes, truncations, header and
    array edits re-zipped with valid checksums."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    header = json.loads(str(np.load(io.BytesIO(members["__nnlite__.npy"]))))
    for i in range(count):
        kind = i % 4
        if kind == 0:                                   # flip one to three bytes
            mutated = bytearray(data)
            for _ in range(rng.integers(1, 4)):
                mutated[rng.integers(len(mutated))] ^= int(rng.integers(1, 256))
            yield bytes(mutated)
        elif kind == 1:                                 # cut short
            yield data[:rng.integers(len(data))]
        else:
            new = dict(members)
            if kind == 2:
                h = _header_edits(rng, json.loads(json.dumps(header)))
                buf = io.BytesIO()
                np.save(buf, np.array(json.dumps(h)))
                new["__nnlite__.npy"] = buf.getvalue()
            else:                                       # an array of another dtype or shape
                name = sorted(k for k in members if k != "__nnlite__.npy")[
                    rng.integers(len(members) - 1)]
                a = np.load(io.BytesIO(members[name]))
                with np.errstate(invalid="ignore"):
                    a = [a.astype(np.float64), a.astype(np.int64), a.reshape(-1)[:-1] if a.size
                         else a, a * np.inf, np.zeros((2, 2), np.float32), a.astype("U3")][
                        rng.integers(6)]
                buf = io.BytesIO()
                np.save(buf, a)
                new[name] = buf.getvalue()
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as z:
                for name, content in new.items():
                    z.writestr(name, content)
            yield out.getvalue()


def test_thousands_of_mutated_files_load_exactly_or_fail_with_a_clear_error(digits, tmp_path):
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for name, (data, probe) in _saved_bytes(tmp_path, digits).items():
        path = tmp_path / f"mutated-{name}.npz"
        for mutated in _mutations(data, rng, 1000):
            path.write_bytes(mutated)
            for load in (nnlite.load, nnlite.load_checkpoint):
                try:
                    result = load(path)
                except ValueError as e:
                    assert str(path) in str(e), str(e)
                    outcomes["refused"] += 1
                    continue
                model = result[0] if isinstance(result, tuple) else result
                out = model.predict(probe)                # a loaded model works
                assert np.isfinite(out).all()
                outcomes["loaded"] += 1
    assert outcomes["refused"] > 3000 and outcomes["loaded"] > 100, outcomes


def test_mnist_mlp_and_cnn_travel_to_pytorch_safetensors_and_onnx_and_back(data_root,
                                                                           tmp_path):
    """The done-when of the files issue, on MNIST: the MLP of README and the CNN example's
    network, trained briefly, round-trip through PyTorch (state dict and safetensors) and
    export to ONNX, all predicting within 1e-5."""
    import importlib.util
    from pathlib import Path

    torch = require("torch")
    require("onnx")
    from safetensors.torch import load_file, save_file
    nn = torch.nn

    spec = importlib.util.spec_from_file_location(
        "mnist_cnn", Path(__file__).resolve().parent.parent / "examples" / "mnist_cnn.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    (x, y), (xt, _) = nnlite.datasets.load_mnist(data_root, download=False)
    x, xt = x[:2000, None] / np.float32(255), xt[:500, None] / np.float32(255)
    cases = [
        (lambda: nnlite.Sequential(Linear(784, 256), ReLU(), Dropout(0.2), Linear(256, 10)),
         lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2),
                               nn.Linear(256, 10)), (784,)),
        (lambda: example.build(32),
         lambda: nn.Sequential(nn.Identity(), nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32),
                               nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                               nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                               nn.Linear(64 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10)),
         (1, 28, 28))]
    for make, make_torch, shape in cases:
        model, _ = trained(make, x.reshape(-1, *shape), y[:2000], epochs=1)
        inputs = xt.reshape(-1, *shape)
        expected = model.predict(inputs)
        twin = make_torch().eval()
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        with torch.no_grad():
            np.testing.assert_allclose(twin(torch.from_numpy(inputs)).numpy(), expected,
                                       atol=1e-5)
        back = make()
        back.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
        np.testing.assert_allclose(back.predict(inputs), expected, atol=1e-5)
        model.save_weights(tmp_path / "w.safetensors")
        twin.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
        save_file(twin.state_dict(), str(tmp_path / "t.safetensors"))
        again = make()
        again.load_weights(tmp_path / "t.safetensors")
        np.testing.assert_allclose(again.predict(inputs), expected, atol=1e-5)
        nnlite.export_onnx(model, tmp_path / "m.onnx")
        (got,) = _onnxruntime_outputs(tmp_path / "m.onnx", {"input": inputs})
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_export_without_onnx_names_the_extra_to_install(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)     # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "nnlite\[onnx\]"'):
        nnlite.export_onnx(mlp(), tmp_path / "m.onnx")


def test_a_graph_file_declaring_an_enormous_input_is_refused(tmp_path):
    x = nnlite.Input((3,))
    nnlite.Model(x, Linear(3, 2)(x)).save(tmp_path / "g.npz")
    rewrite(tmp_path / "g.npz", lambda h: h["architecture"]["config"]["inputs"][0].update(
        shape=[100000, 100000]))
    with pytest.raises(ValueError, match=r"g.npz.*too large to rebuild"):
        nnlite.load(tmp_path / "g.npz")


# -- which class a file builds --------------------------------------------------------------
def test_a_programs_own_class_named_linear_never_replaces_nnlites(tmp_path, rng):
    path = tmp_path / "m.npz"
    model = nnlite.Sequential(Linear(3, 2))
    model.save(path)

    class Linear_(nnlite.Layer):  # a user's layer that calls itself Linear
        def __init__(self, in_features, out_features, bias=True, init="he", dtype=None):
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.bias, self.init, self.dtype = bias, init, dtype

        def forward(self, x):
            return x[:, :2] * 0

    Linear_.__name__ = Linear_.__qualname__ = "Linear"
    x = rng.standard_normal((4, 3)).astype(np.float32)
    loaded = nnlite.load(path)
    assert type(loaded[0]) is Linear
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    own = tmp_path / "own.npz"
    nnlite.save(nnlite.Sequential(Linear_(3, 2)), own)
    assert type(nnlite.load(own)[0]) is Linear_  # saved as module:qualname


def test_two_program_classes_of_one_name_are_an_error_naming_both(tmp_path):
    def make(module):
        cls = type("Scale", (nnlite.Layer,), {"__module__": module,
                                               "forward": lambda self, x: x})
        return cls

    first, second = make("lab_one"), make("lab_two")
    path = tmp_path / "m.npz"
    nnlite.save(nnlite.Sequential(first()), path)
    assert type(nnlite.load(path)[0]) is first   # the file names lab_one:Scale
    rewrite(path, lambda h: h["architecture"]["config"]["layers"][0]["layer"].update(
        {"class": "Scale"}))                     # as a version-2 file named it
    with pytest.raises(ValueError, match=r"m.npz.*'Scale' could be any of lab_one:Scale, "
                                         r"lab_two:Scale"):
        nnlite.load(path)
    del first, second
    gc.collect()  # the classes go, so no later load sees two Scales


def test_a_version_2_file_still_loads(tmp_path, rng):
    path = tmp_path / "m.npz"
    model = nnlite.Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    model.save(path)
    rewrite(path, lambda h: h.update(version=2))
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(nnlite.load(path).predict(x), model.predict(x))


# -- weights files and state dicts ------------------------------------------------------------
def _bn_model():
    return nnlite.Sequential(Linear(4, 3), BatchNorm(3))


@pytest.mark.parametrize("name, value, message", [
    ("1.running_var", np.array([np.nan, 1, 1]), "NaN or infinite"),
    ("1.running_var", np.array([np.inf, 1, 1]), "NaN or infinite"),
    ("1.running_var", np.array([-1.0, 1, 1]), "negative variance"),
    ("1.running_mean", np.array([np.nan, 1, 1]), "NaN or infinite"),
    ("1.num_batches_tracked", np.array(np.nan), r"whole numbers >= 0"),
    ("1.num_batches_tracked", np.array(1e30), r"whole numbers >= 0"),
    ("1.num_batches_tracked", np.array(-3), r"whole numbers >= 0"),
    ("0.weight", np.full((3, 4), 1e300), r"NaN or infinite values \(as float32\)"),
    ("0.weight", np.full((3, 4), 1e4000, np.longdouble), r"NaN or infinite values"),
])
def test_buffers_and_parameters_are_checked_after_conversion(tmp_path, name, value, message):
    model = _bn_model()
    before = model.state_dict()
    state = dict(before, **{name: value})
    with pytest.raises(ValueError, match=f"'{name}'.*{message}"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():  # nothing changed
        np.testing.assert_array_equal(v, before[k])
    from safetensors.numpy import save_file
    save_file({k: np.asarray(v) for k, v in state.items()
               if np.asarray(v).dtype != np.longdouble}, tmp_path / "w.safetensors")
    if np.asarray(value).dtype != np.longdouble:
        with pytest.raises(ValueError, match=f"w.safetensors.*'{name}'.*{message}"):
            model.load_weights(tmp_path / "w.safetensors")


def test_a_negative_running_variance_in_an_nnlite_file_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    _bn_model().save(path)
    rewrite(path, change_arrays=lambda a: a.update(
        {"buffer/1.running_var": -a["buffer/1.running_var"]}))
    with pytest.raises(ValueError, match=r"m.npz: buffer '1.running_var' holds a negative"):
        nnlite.load(path)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_bf16_and_fp16_safetensors_from_pytorch_load_exactly(tmp_path, dtype):
    torch = require("torch")
    from safetensors.torch import save_file
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    state = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v
             for k, v in twin.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    model = _bn_model()
    model.load_weights(tmp_path / "w.safetensors")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k].to(torch.float32).numpy()
                                      if state[k].is_floating_point() else state[k].numpy())


def test_a_duplicate_key_in_a_safetensors_header_is_refused(tmp_path):
    model = _bn_model()
    model.save_weights(tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n].decode()
    entry = header[header.index('"0.bias"'):header.index("}", header.index('"0.bias"')) + 1]
    twice = header.replace(entry, entry + "," + entry, 1).encode()
    (tmp_path / "d.safetensors").write_bytes(len(twice).to_bytes(8, "little") + twice +
                                             data[8 + n:])
    with pytest.raises(ValueError, match=r"d.safetensors.*'0.bias' appears twice"):
        model.load_weights(tmp_path / "d.safetensors")


def test_weights_paths_and_objects_of_the_wrong_kind_say_what_they_are(tmp_path):
    model = _bn_model()
    with pytest.raises(ValueError, match=r"is a folder, not a safetensors file"):
        model.load_weights(tmp_path)
    with pytest.raises(ValueError, match=r"must be a mapping of names to arrays .* got list"):
        model.load_state_dict([("0.weight", np.zeros((3, 4)))])
    model.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match=r"model.npz is a zip archive .*load it with "
                                         r"nnlite.load"):
        model.load_weights(tmp_path / "model.npz")


def test_a_float64_model_with_exact_gelu_runs_in_onnxruntime(tmp_path, rng):
    ort = require("onnxruntime")
    require("onnx")
    model = nnlite.Sequential(Linear(4, 8, dtype=np.float64), layers.GELU(),
                              Linear(8, 2, dtype=np.float64))
    nnlite.export_onnx(model, tmp_path / "g.onnx", input_shape=(4,))
    x = rng.standard_normal((5, 4))
    got = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.predict(x), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_what_save_accepts_load_loads_bit_for_bit_in_either_byte_order(tmp_path, rng, dtype,
                                                                        order):
    """nnlite writes little-endian always: a model whose arrays are big-endian (an array
    assigned after ``.astype(">f4")``) saves, checkpoints and exports loadable files
    (float16 models are saved and loaded; the training kernels take float32 and float64)."""
    model = nnlite.Sequential(Linear(3, 4), BatchNorm(4), Linear(4, 2)).astype(dtype)
    opt = None
    if dtype != "float16":
        x, y = rng.standard_normal((16, 3)), rng.integers(0, 2, 16)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=1, batch_size=8,
                  verbose=False)
    wanted = np.dtype(dtype).newbyteorder(order)
    for p in model.parameters():
        p.data = p.data.astype(wanted)
    for _, owner, attr in model._slots("_buffers"):
        if getattr(owner, attr).dtype.kind == "f":
            setattr(owner, attr, getattr(owner, attr).astype(wanted))
    assert model[0].weight.dtype.isnative == (order == "<")
    nnlite.save(model, tmp_path / "m.npz", optimizer=opt, epoch=1 if opt else None)
    model.save_weights(tmp_path / "m.safetensors")
    if opt is None:
        loaded = nnlite.load(tmp_path / "m.npz")
    else:
        loaded, opt2, _ = nnlite.load_checkpoint(tmp_path / "m.npz")
        assert opt2.steps == opt.steps
        for a, b in zip(opt.state.values(), opt2.state.values()):
            np.testing.assert_array_equal(a, b)
    again = nnlite.Sequential(Linear(3, 4), BatchNorm(4), Linear(4, 2)).astype(dtype)
    again.load_weights(tmp_path / "m.safetensors")
    for other in (loaded, again):
        for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
            assert b.dtype.isnative and b.dtype.newbyteorder("=") == a.dtype.newbyteorder("=")
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert Linear(2, 2, dtype=np.dtype(dtype).newbyteorder(">")).weight.dtype.isnative
    assert nnlite.Sequential(Linear(2, 2)).astype(">f8")[0].weight.dtype.isnative


def test_a_model_with_big_endian_weights_exports_to_onnx(tmp_path, rng):
    require("onnx")
    ort = require("onnxruntime")
    model = nnlite.Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
    for p in model.parameters():
        p.data = p.data.astype(">f4")
    nnlite.export_onnx(model, tmp_path / "m.onnx", input_shape=(4,))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    out = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(out, model.predict(x), rtol=1e-6, atol=1e-6)


def test_export_onnx_with_a_wrong_input_shape_names_the_layer_and_both_shapes(tmp_path):
    require("onnx")
    model = nnlite.Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
    with pytest.raises(ValueError, match=r"export_onnx: input_shape \(5,\): layer 0 \(Linear\): "
                                         r"Linear\(in_features=4.* expects input of shape "
                                         r"\(N, 4\), got \(1, 5\)"):
        nnlite.export_onnx(model, tmp_path / "m.onnx", input_shape=(5,))
    assert not (tmp_path / "m.onnx").exists()


def test_a_loaded_model_evaluates_with_the_loss_it_was_trained_with(tmp_path, digits):
    x, y, xt, yt = (v.reshape(len(v), -1) for v in digits)
    y, yt = y.ravel(), yt.ravel()
    model = mlp()
    loss = losses.CrossEntropy(label_smoothing=0.1, weight=np.linspace(0.5, 2, 10))
    model.fit(x, y, loss=loss, optimizer=optim.Adam(model.parameters()), epochs=1,
              verbose=False)
    model.save(tmp_path / "m.npz")
    loaded = nnlite.load(tmp_path / "m.npz")
    assert loaded.evaluate(xt, yt) == pytest.approx(model.evaluate(xt, yt), rel=1e-6)
    assert "loss" in loaded.evaluate(xt, yt)
    for record, message in [({"class": "os:system"}, "is not one of nnlite's losses"),
                            ({"class": "CrossEntropy", "config": {"weight": [-1]}},
                             "weight must hold one finite number"),
                            ([{"class": "MSE"}, {"class": "MSE"}], "one loss per output")]:
        rewrite(tmp_path / "m.npz", lambda h: h.update(loss=record))
        with pytest.raises(ValueError, match=f"m.npz: its loss.*{message}|m.npz: .*{message}"):
            nnlite.load(tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", lambda h: h.pop("loss"))   # a file without it: as before
    assert set(nnlite.load(tmp_path / "m.npz").evaluate(xt, yt)) == {"accuracy"}
