"""The pictures show what they claim: lines, markers, heatmaps and titles are checked
against the numbers they draw (Agg backend, no screen)."""
import builtins
import sys

import numpy as np
import pytest
from conftest import require

import nnlite
from nnlite.check import jacobian
from nnlite.layers import Linear, ReLU


@pytest.fixture(scope="module")
def plt():
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


@pytest.fixture
def history():
    h = nnlite.callbacks.History()
    for epoch, (loss, val) in enumerate([(1.0, 0.9), (0.6, 0.5), (0.4, 0.55), (0.3, 0.6)]):
        h.on_epoch_end(epoch, {"loss": loss, "accuracy": 1 - loss,
                               "val_loss": val, "val_accuracy": 1 - val})
    return h


def test_history_lines_are_the_history_and_the_best_epoch_is_marked(plt, history):
    fig = history.plot()
    loss, accuracy = fig.axes[:2]
    assert (loss.get_title(), accuracy.get_title()) == ("loss", "accuracy")
    for panel, metric in ((loss, "loss"), (accuracy, "accuracy")):
        train, val = panel.get_lines()[:2]
        assert list(train.get_xdata()) == [1, 2, 3, 4]
        np.testing.assert_array_equal(train.get_ydata(), history.history[metric])
        np.testing.assert_array_equal(val.get_ydata(), history.history[f"val_{metric}"])
        marker = panel.get_lines()[2]
        assert list(marker.get_xdata()) == [2, 2]  # val_loss is lowest (0.5) at epoch 2
    assert "epoch 2" in loss.get_legend().get_texts()[2].get_text()


def test_history_of_a_resumed_run_counts_its_epochs_and_chosen_metrics(plt):
    h = nnlite.callbacks.History()
    h.on_epoch_end(5, {"loss": 0.5})
    h.on_epoch_end(6, {"loss": 0.4})
    fig = nnlite.plot.plot_history(h, ["loss"])
    assert len(fig.axes) == 1 and list(fig.axes[0].get_lines()[0].get_xdata()) == [6, 7]
    assert len(fig.axes[0].get_lines()) == 1  # no validation, no marker
    with pytest.raises(ValueError, match=r"no \['val_acc'\].*logged \['loss'\]"):
        nnlite.plot.plot_history(h, ["val_acc"])


def test_history_draws_on_given_axes(plt, history):
    fig, axes = plt.subplots(1, 2)
    assert nnlite.plot.plot_history(history.history, ax=axes) is fig
    assert axes[1].get_title() == "accuracy"
    with pytest.raises(ValueError, match="2 panels to draw, but ax holds only 1"):
        nnlite.plot.plot_history(history, ax=axes[0])


def test_every_function_draws_on_the_axes_it_is_given(plt, rng):
    fig, axes = plt.subplots(2, 3)
    layer = Linear(6, 3)
    assert nnlite.plot.plot_jacobian(layer, np.ones(6, np.float32), ax=axes[0, 0]) is fig
    assert nnlite.plot.plot_images(rng.random((2, 2, 3)), ax=axes[0, 1:]) is fig
    assert nnlite.plot.plot_weights(layer, (2, 3), ax=axes[1]) is fig
    assert [len(ax.get_images()) for ax in axes.flat] == [1, 1, 1, 1, 1, 1]


def test_jacobian_heatmap_is_the_jacobian(plt, rng):
    layer = Linear(5, 3)
    x = rng.standard_normal((1, 5)).astype(np.float32)
    fig = nnlite.plot.plot_jacobian(layer, x)
    image = fig.axes[0].get_images()[0]
    np.testing.assert_array_equal(image.get_array(), jacobian(layer, x))
    np.testing.assert_allclose(image.get_array(), layer.weight.data)  # J of Wx + b is W
    low, high = image.get_clim()
    assert low == -high > -np.inf  # centred on zero
    assert image.get_cmap().name == "RdBu_r"
    assert fig.axes[0].get_xlabel() == "input coordinate j"
    assert fig.axes[0].get_ylabel() == "output coordinate i"


def test_sensitivity_draws_each_sample_beside_its_top_singular_vector(plt, rng):
    model = nnlite.Sequential(Linear(6, 5, dtype=np.float64), ReLU(),
                              Linear(5, 3, dtype=np.float64))
    x = rng.standard_normal((3, 6))
    fig = nnlite.plot.plot_sensitivity(model, x, image_shape=(2, 3))
    sigma, vectors = nnlite.check.lipschitz(model, x, return_vectors=True)
    assert len(fig.axes) == 6
    for i in range(3):
        sample, direction = (fig.axes[2 * i + k].get_images()[0] for k in (0, 1))
        np.testing.assert_array_equal(sample.get_array(), x[i].reshape(2, 3))
        np.testing.assert_array_equal(direction.get_array(), vectors[i].reshape(2, 3))
        assert direction.get_cmap().name == "RdBu_r"
        assert fig.axes[2 * i + 1].get_title() == f"‖J‖₂ = {sigma[i]:.3g}"
        with model.evaluating():
            assert np.isclose(sigma[i], np.linalg.norm(jacobian(model, x[i:i + 1]), 2))


def test_jacobian_chain_draws_the_factors_and_their_product(plt, rng):
    model = nnlite.Sequential(Linear(6, 4), ReLU(), Linear(4, 3))
    x = rng.standard_normal(6).astype(np.float32)  # one sample without its batch axis
    fig = nnlite.plot.plot_jacobian(model, x, chain=True)
    drawn = [np.asarray(ax.get_images()[0].get_array()) for ax in fig.axes if ax.get_images()]
    whole, j3, j2, j1 = drawn
    np.testing.assert_allclose(j3 @ j2 @ j1, whole, atol=1e-6)
    np.testing.assert_array_equal(j1, model.layers[0].weight.data)
    hidden = model.layers[0].forward(x[None])
    np.testing.assert_array_equal(np.diag(j2), (hidden[0] > 0).astype(np.float32))
    assert "J = J_3 · J_2 · J_1" in fig._suptitle.get_text()
    assert model.training  # the mode it was in is restored


def test_the_pictures_of_a_model_with_dropout_are_eval_mode_unless_training_is_asked(plt, rng):
    from nnlite.layers import Dropout

    model = nnlite.Sequential(Linear(6, 8), ReLU(), Dropout(0.5), Linear(8, 3))
    x = rng.standard_normal((2, 6)).astype(np.float32)
    assert model.training  # as fit leaves it
    drawn = lambda fig: [np.asarray(ax.get_images()[0].get_array())  # noqa: E731
                         for ax in fig.axes if ax.get_images()]
    whole = drawn(nnlite.plot.plot_jacobian(model, x[:1]))[0]
    with model.evaluating():
        np.testing.assert_array_equal(whole, jacobian(model, x[:1]))
    nnlite.set_seed(1)
    whole, *factors = drawn(nnlite.plot.plot_jacobian(model, x[:1], chain=True, training=True))
    nnlite.set_seed(1)
    np.testing.assert_allclose(whole, jacobian(model, x[:1], training=True), atol=1e-6)
    product = factors[0]
    for f in factors[1:]:
        product = product @ f
    np.testing.assert_allclose(product, whole, atol=1e-5)  # the factors share the masks
    sigma = nnlite.check.lipschitz(model, x)
    titles = [ax.get_title() for ax in nnlite.plot.plot_sensitivity(model, x, (2, 3)).axes]
    assert titles[1] == f"‖J‖₂ = {sigma[0]:.3g}" and model.training


def test_jacobian_refuses_a_batch_and_a_chain_of_a_single_layer(plt, rng):
    with pytest.raises(ValueError, match=r"one sample: x has shape \(2, 5\)"):
        nnlite.plot.plot_jacobian(Linear(5, 3), np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="Linear is not one"):
        nnlite.plot.plot_jacobian(Linear(5, 3), np.ones(5, np.float32), chain=True)


def test_images_titles_and_wrong_predictions_highlighted(plt, rng):
    images = rng.random((5, 1, 4, 4)).astype(np.float32)   # channel-first, as a CNN takes
    labels, predictions = [0, 1, 2, 3, 4], [0, 7, 2, 3, 9]
    fig = nnlite.plot.plot_images(images, labels, predictions, ncols=3,
                                  class_names=list("abcdefghij"))
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 5
    wrong = [i for i, ax in enumerate(panels) if ax.title.get_color() == nnlite.plot.WRONG]
    assert wrong == [1, 4]
    assert panels[1].get_title() == "true b\npred h"
    assert panels[1].spines["left"].get_linewidth() == 2
    np.testing.assert_array_equal(panels[2].get_images()[0].get_array(), images[2, 0])


def test_images_from_flat_rows_and_bad_lengths(plt, rng):
    rows = rng.random((3, 12))
    fig = nnlite.plot.plot_images(rows, labels=[1, 2, 3], image_shape=(3, 4))
    assert fig.axes[0].get_images()[0].get_array().shape == (3, 4)
    assert fig.axes[0].get_title() == "1"
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        nnlite.plot.plot_images(rows, [1, 2], image_shape=(3, 4))
    with pytest.raises(ValueError, match="pass image_shape"):
        nnlite.plot.plot_images(rows)


def test_weights_are_one_image_per_unit(plt):
    layer = Linear(12, 5)
    fig = nnlite.plot.plot_weights(layer, (3, 4), max_units=4)
    images = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    assert len(images) == 4
    for k, image in enumerate(images):
        np.testing.assert_array_equal(image, layer.weight.data[k].reshape(3, 4))
    with pytest.raises(ValueError, match=r"\(5, 5\) holds 25 values, but each unit has 12"):
        nnlite.plot.plot_weights(layer, (5, 5))
    with pytest.raises(ValueError, match="ReLU has none"):
        nnlite.plot.plot_weights(ReLU(), (3, 4))


def test_saved_png_decodes_to_the_stated_size(plt, history, tmp_path):
    fig = history.plot()
    fig.set_size_inches(6, 2.5)
    fig.savefig(tmp_path / "h.png", dpi=50)
    image = plt.imread(tmp_path / "h.png")
    assert image.shape[:2] == (125, 300)
    assert image.std() > 0.05  # something is drawn, not a blank canvas


def test_live_plot_redraws_each_epoch_in_a_notebook(plt, monkeypatch):
    shown = []
    display = pytest.importorskip("IPython.display")
    monkeypatch.setattr(nnlite.plot, "in_notebook", lambda: True)
    monkeypatch.setattr(display, "display", lambda fig: shown.append(
        [list(line.get_ydata()) for line in fig.axes[0].get_lines()[:1]]))
    monkeypatch.setattr(display, "clear_output", lambda wait=False: shown.append("clear"))
    model = nnlite.Sequential(Linear(2, 1))
    x = np.ones((8, 2), np.float32)
    h = model.fit(x, x[:, :1], loss=nnlite.losses.MSE(), epochs=3, verbose=False,
                  optimizer=nnlite.optim.SGD(model.parameters(), lr=0.1),
                  callbacks=[nnlite.plot.LivePlot()], seed=0)
    curves = [s for s in shown if s != "clear"]
    assert shown.count("clear") == 3 and len(curves) == 3
    assert curves[-1] == [h.history["loss"]]
    assert [len(c[0]) for c in curves] == [1, 2, 3]


def test_live_plot_outside_a_notebook_draws_nothing(plt):
    live = nnlite.plot.LivePlot()
    model = nnlite.Sequential(Linear(2, 1))
    x = np.ones((8, 2), np.float32)
    model.fit(x, x[:, :1], loss=nnlite.losses.MSE(), epochs=2, verbose=False,
              optimizer=nnlite.optim.SGD(model.parameters(), lr=0.1), callbacks=[live])
    assert live.figure is None and len(live.history.history["loss"]) == 2


def test_without_matplotlib_every_function_names_the_extra(monkeypatch, history):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    calls = [lambda: history.plot(),
             lambda: nnlite.plot.plot_jacobian(Linear(2, 2), np.ones(2, np.float32)),
             lambda: nnlite.plot.plot_images(np.ones((1, 2, 2))),
             lambda: nnlite.plot.plot_weights(Linear(4, 2), (2, 2)),
             lambda: nnlite.plot.plot_sensitivity(Linear(4, 2), np.ones((1, 4)), (2, 2)),
             lambda: nnlite.plot.LivePlot()]
    for call in calls:
        with pytest.raises(ImportError, match=r'pip install "nnlite\[plot\]"'):
            call()
