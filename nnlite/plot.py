"""Pictures: training curves (from ``nnlite.training.curves``), Jacobians and sensitivities, images
with their labels, first-layer weights.

Every function draws on the Axes it is given (or on a new figure) and returns the
matplotlib Figure, to show, save or compose. matplotlib is the optional extra ``plot``,
imported when a function is first called. Confusion matrices are scikit-learn's
``sklearn.metrics.ConfusionMatrixDisplay.from_predictions(y, model.predict(x).argmax(1))``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .check import jacobian, lipschitz
from .check.jacobians import in_mode, jacobian_at
from .core.layer import Layer, default_rng
from .training.callbacks import Callback, History, in_notebook
from .training.curves import panels, plot_history, pyplot

#: Wrong predictions are drawn in this colour.
WRONG = "tab:red"


def _heatmap(panel: Any, matrix: np.ndarray, title: str) -> Any:
    """``matrix`` drawn with a diverging colour map whose white is zero."""
    limit = float(np.abs(matrix).max()) or 1.0
    image = panel.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit,
                         interpolation="nearest", aspect="auto")
    panel.set_title(title)
    panel.set_xlabel("input coordinate j")
    panel.set_ylabel("output coordinate i")
    return image


def _one_sample(x: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim < 2 or len(x) != 1:
        raise ValueError(f"plot_jacobian draws the Jacobian at one sample: x has shape "
                         f"{x.shape}; pass a batch of one, such as x[:1]")
    return x


def plot_jacobian(layer: Layer, x: np.ndarray, *, chain: bool = False, ax: Any = None,
                  training: bool = False) -> Any:
    """The Jacobian J[i, j] = ∂yᵢ/∂xⱼ of ``layer`` (or a whole model) at one sample ``x``
    (a batch of one, or one 1-D sample), as ``nnlite.check.jacobian`` returns it: rows are
    output coordinates, columns input coordinates, white is zero.

    With ``chain`` (a Sequential), the layers' Jacobians follow, last layer first, so the
    panels read as the chain rule J = J_L ··· J_2 · J_1; the figure's title says how
    closely the product of the drawn factors equals J. The layers run in eval mode (no
    dropout), or with ``training`` in training mode, the factors' random masks the same as
    the whole's (nnlite's generator is put back before they are drawn again).
    """
    x = _one_sample(x)
    if chain and not getattr(layer, "chain", False):
        raise ValueError(f"plot_jacobian(chain=True) draws a Sequential's layers; "
                         f"{type(layer).__name__} is not one")
    factors = list(layer.layers) if chain else []
    generator = default_rng().bit_generator
    with in_mode(layer, training, "plot_jacobian"):
        drawn = generator.state
        whole = jacobian(layer, x, training=training)
        generator.state, parts, value = drawn, [], x  # the same draws, layer by layer
        for f in factors:
            out = f.forward(value)
            parts.append(jacobian_at(f, value, out))
            value = out
    fig, axes = panels(ax, 1 + len(parts), 4, (3.2, 3.0))
    if parts:
        product = parts[0]
        for j in parts[1:]:
            product = j @ product
        names = " · ".join(f"J_{k}" for k in range(len(parts), 0, -1))
        fig.suptitle(f"the chain rule: J = {names} (the product differs from J by at most "
                     f"{np.abs(product - whole).max():.1e})")
    image = _heatmap(axes[0], whole, f"J: {type(layer).__name__}")
    for panel, k in zip(axes[1:], range(len(parts), 0, -1)):
        _heatmap(panel, parts[k - 1], f"J_{k}: {type(factors[k - 1]).__name__}")
    fig.colorbar(image, ax=axes[0], shrink=0.8)
    return fig


def _as_images(images: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray:
    """(n, H, W) or (n, H, W, 3) arrays from rows, channel-first or channel-last images."""
    images = np.asarray(images)
    if image_shape is not None:
        images = images.reshape(len(images), *image_shape)
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = np.moveaxis(images, 1, -1)  # PyTorch's (C, H, W) to (H, W, C)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4):
        raise ValueError(f"plot_images: images of shape {images.shape} are neither "
                         f"(n, H, W) nor (n, C, H, W); pass image_shape for flat rows")
    return images


def plot_images(images: np.ndarray, labels: Sequence[Any] | None = None,
                predictions: Sequence[Any] | None = None, *, ncols: int = 8,
                class_names: Sequence[str] | None = None,
                image_shape: Sequence[int] | None = None, ax: Any = None) -> Any:
    """A grid of images, each titled with its label and, given ``predictions``, the
    prediction: a wrong one is titled and framed in red.

    ``images`` are (n, H, W), (n, C, H, W) or (n, H, W, C), or flat rows with
    ``image_shape``; ``class_names`` turns class indices into names.
    """
    images = _as_images(images, image_shape)
    n = len(images)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values is not None and len(values) != n:
            raise ValueError(f"plot_images: {n} images but {len(values)} {name}")

    def name(k: Any) -> str:
        return str(class_names[int(k)]) if class_names is not None else str(k)

    fig, axes = panels(ax, n, ncols, (1.2, 1.45))
    for i, panel in enumerate(axes):
        panel.imshow(images[i], cmap="gray_r" if images.ndim == 3 else None)
        panel.set_xticks([])
        panel.set_yticks([])
        parts, colour = [], "black"
        if labels is not None:
            parts.append(name(labels[i]) if predictions is None else f"true {name(labels[i])}")
        if predictions is not None:
            parts.append(f"pred {name(predictions[i])}")
            if labels is not None and predictions[i] != labels[i]:
                colour = WRONG
                for spine in panel.spines.values():
                    spine.set_edgecolor(WRONG)
                    spine.set_linewidth(2)
        panel.set_title("\n".join(parts), color=colour, fontsize="small")
    return fig


def plot_sensitivity(model: Layer, x: np.ndarray, image_shape: Sequence[int] | None = None,
                     *, ax: Any = None, training: bool = False) -> Any:
    """Each sample of ``x`` beside the input direction its output is most sensitive to:
    the top right-singular vector of the model's Jacobian there (red positive, blue
    negative), titled with the local Lipschitz constant ‖J‖₂ (``nnlite.check.lipschitz``,
    in eval mode unless ``training``). ``x`` as ``plot_images`` takes it, with
    ``image_shape`` for flat rows."""
    sigma, vectors = lipschitz(model, x, return_vectors=True, training=training)
    images, directions = _as_images(x, image_shape), _as_images(vectors, image_shape)
    if directions.ndim == 4:  # colour: the direction summed over the channels
        directions = directions.sum(axis=-1)
    fig, axes = panels(ax, 2 * len(images), min(8, 2 * len(images)), (1.2, 1.45))
    for i, (image, direction, s) in enumerate(zip(images, directions, sigma)):
        shown, seen = axes[2 * i], axes[2 * i + 1]
        shown.imshow(image, cmap="gray_r" if image.ndim == 2 else None)
        shown.set_title(f"sample {i}", fontsize="small")
        limit = float(np.abs(direction).max()) or 1.0
        seen.imshow(direction, cmap="RdBu_r", vmin=-limit, vmax=limit)
        seen.set_title(f"‖J‖₂ = {s:.3g}", fontsize="small")
        for panel in (shown, seen):
            panel.set_xticks([])
            panel.set_yticks([])
    return fig


def plot_mistakes(model: Layer, x: np.ndarray, y: np.ndarray, *, max_images: int = 24,
                  **kwargs: Any) -> Any:
    """The first ``max_images`` samples of ``x`` that ``model`` classifies wrongly, with
    their true and predicted labels (``plot_images``, to which ``kwargs`` go)."""
    predictions = model.predict(x).argmax(axis=-1)
    wrong = np.flatnonzero(predictions != np.asarray(y))[:max_images]
    return plot_images(np.asarray(x)[wrong], np.asarray(y)[wrong], predictions[wrong], **kwargs)


def plot_weights(linear: Layer, image_shape: Sequence[int], *, ncols: int = 8,
                 max_units: int = 32, ax: Any = None) -> Any:
    """A first Linear layer's weights, one image per unit (at most ``max_units``): row
    ``weight[k]`` reshaped to ``image_shape``, white at zero, red positive, blue negative
    — the input pattern that unit responds to."""
    weight = getattr(getattr(linear, "weight", None), "data", None)
    if weight is None or weight.ndim != 2:
        raise ValueError(f"plot_weights draws a Linear layer's weight matrix; "
                         f"{type(linear).__name__} has none")
    if int(np.prod(image_shape)) != weight.shape[1]:
        raise ValueError(f"plot_weights: image_shape {tuple(image_shape)} holds "
                         f"{int(np.prod(image_shape))} values, but each unit has "
                         f"{weight.shape[1]} inputs")
    units = weight[:max_units]
    fig, axes = panels(ax, len(units), ncols, (1.2, 1.3))
    for k, (panel, row) in enumerate(zip(axes, units)):
        limit = float(np.abs(row).max()) or 1.0
        panel.imshow(row.reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
        panel.set_xticks([])
        panel.set_yticks([])
        panel.set_title(f"unit {k}", fontsize="small")
    return fig


def save_figures(folder: str | os.PathLike, figures: Mapping[str, Any], dpi: int = 100
                 ) -> list[Path]:
    """Write each figure as ``folder/<name>.png`` (making the folder), close it, and return
    the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        paths.append(folder / f"{name}.png")
        fig.savefig(paths[-1], dpi=dpi)
        pyplot().close(fig)
    return paths


class LivePlot(Callback):
    """Redraws the training curves at the end of every epoch, in a Jupyter notebook.

    ``fit(..., callbacks=[nnlite.plot.LivePlot()])`` shows the curves growing in the
    cell's output. Outside a notebook it draws nothing; ``figure`` is the last drawing.
    """

    def __init__(self, metrics: Sequence[str] | None = None):
        super().__init__()
        pyplot()
        self.metrics = metrics
        self.history = History()
        self.figure: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.history = History()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.history.on_epoch_end(epoch, logs)
        if not in_notebook():
            return
        from IPython.display import clear_output, display
        self.figure = plot_history(self.history, self.metrics)
        clear_output(wait=True)
        display(self.figure)
        pyplot().close(self.figure)  # shown once, not again by the inline backend

