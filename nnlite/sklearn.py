"""scikit-learn estimators backed by nnlite: NNClassifier and NNRegressor.

They take only hyper-parameters in their constructors, build an nnlite
``Sequential`` MLP inside ``fit`` (kept as ``model_``), and behave as
scikit-learn's own estimators do in pipelines, searches and cross-validation.
Initialisation, shuffling and dropout derive from ``random_state`` alone.
As in scikit-learn's MLP, the network computes in float32 when X is float32
and in float64 otherwise.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import layers, optim
from .core import losses
from .layers.activations import softmax
from .models.sequential import Sequential
from .training import callbacks

ACTIVATIONS = {"relu": layers.ReLU, "leaky_relu": layers.LeakyReLU, "tanh": layers.Tanh,
               "logistic": layers.Sigmoid, "sigmoid": layers.Sigmoid, "gelu": layers.GELU,
               "identity": None}
OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop,
              "sgd": lambda params, lr, weight_decay: optim.SGD(
                  params, lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)}


class _NNEstimator(BaseEstimator):
    """What NNClassifier and NNRegressor share: hyper-parameters, the network, the loop."""

    def __init__(self, hidden_layer_sizes: tuple[int, ...] = (100,), activation: str = "relu",
                 dropout: float = 0.0, optimizer: str = "adam", learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 32, epochs: int = 200,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 patience: int = 10, random_state: Any = None, verbose: bool = False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose

    # -- subclasses define these ---------------------------------------------------------
    _loss: type[losses.Loss]

    def _targets(self, y: np.ndarray, first: bool, classes=None) -> np.ndarray:
        raise NotImplementedError

    # -- the shared machinery -------------------------------------------------------------
    def _check_params(self) -> None:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)
        if any(not isinstance(h, (int, np.integer)) or h <= 0 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        for name, table in (("activation", ACTIVATIONS), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in table:
                raise ValueError(f"{name} must be one of {sorted(table)}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("batch_size", "epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < (0 if name == "patience" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got "
                             f"{self.validation_fraction!r}")
        self._sizes = sizes

    def _build(self, n_in: int, n_out: int, rng: np.random.Generator,
               dtype: np.dtype) -> Sequential:
        act = ACTIVATIONS[self.activation]
        init = "he" if self.activation in ("relu", "leaky_relu", "gelu") else "glorot"
        model, width = Sequential(), n_in
        for h in self._sizes:
            model.append(layers.Linear(width, h, init=init, rng=rng, dtype=dtype))
            if act is not None:
                model.append(act())
            if self.dropout:
                model.append(layers.Dropout(self.dropout))
            width = h
        return model.append(layers.Linear(width, n_out, init="glorot", rng=rng, dtype=dtype))

    def _fit(self, X, y, incremental: bool, classes=None):
        first = not (incremental and hasattr(self, "model_"))
        self._check_params()
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32),
                             multi_output=True, y_numeric=self._loss is not losses.CrossEntropy)
        targets = self._targets(y, first, classes)
        if first:
            rng = check_random_state(self.random_state)
            self._seed = int(rng.randint(2 ** 31 - 1))
            n_out = len(self.classes_) if hasattr(self, "classes_") else targets.shape[1]
            self.model_ = self._build(X.shape[1], n_out, np.random.default_rng(self._seed),
                                      X.dtype)
            self.optimizer_ = OPTIMIZERS[self.optimizer](
                self.model_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
            self.loss_curve_, self.n_iter_ = [], 0
        epochs = 1 if incremental else self.epochs
        fit_kwargs: dict[str, Any] = {}
        if self.early_stopping and not incremental:
            stratify = targets if self._loss is losses.CrossEntropy else None
            try:
                X, X_val, targets, t_val = train_test_split(
                    X, targets, test_size=self.validation_fraction, random_state=self._seed,
                    stratify=stratify)
            except ValueError:  # a class too small to stratify
                X, X_val, targets, t_val = train_test_split(
                    X, targets, test_size=self.validation_fraction, random_state=self._seed)
            fit_kwargs["validation_data"] = (X_val, t_val)
            fit_kwargs["callbacks"] = [callbacks.EarlyStopping(
                "val_loss", patience=self.patience, restore_best_weights=True)]
        history = self.model_.fit(
            X, targets, loss=self._loss(), optimizer=self.optimizer_,
            epochs=self.n_iter_ + epochs, initial_epoch=self.n_iter_,
            batch_size=min(self.batch_size, len(X)), seed=self._seed, verbose=self.verbose,
            **fit_kwargs)
        self.loss_curve_ += history.history.get("loss", [])
        self.n_iter_ += len(history.epoch)
        return self

    def _forward(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self.model_.predict(X).astype(np.float64, copy=False)


class NNClassifier(ClassifierMixin, _NNEstimator):
    """A multi-layer perceptron classifier trained with nnlite (softmax cross-entropy).

    Labels may be any values scikit-learn accepts (integers, strings); ``classes_``
    holds them in sorted order, and ``predict_proba`` columns follow that order.
    """

    _loss = losses.CrossEntropy

    def fit(self, X, y) -> NNClassifier:
        """Train from scratch for ``epochs`` epochs (fewer with ``early_stopping``)."""
        for attr in ("model_", "classes_"):
            self.__dict__.pop(attr, None)
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None) -> NNClassifier:
        """One epoch over (X, y), continuing from the current weights.
        ``classes`` (all labels that will ever appear) is required on the first call."""
        if classes is None and not hasattr(self, "model_"):
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, incremental=True, classes=classes)

    def _targets(self, y, first, classes=None) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes, "
                                 f"but the data contains only 1 class: {self.classes_[0]!r}")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels {unknown.tolist()} not in classes "
                             f"{self.classes_.tolist()}")
        return np.searchsorted(self.classes_, y)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        return softmax(self._forward(X), axis=1)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample."""
        scores = self._forward(X)  # checks that the estimator is fitted
        return self.classes_[np.argmax(scores, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


class NNRegressor(RegressorMixin, _NNEstimator):
    """A multi-layer perceptron regressor trained with nnlite (mean squared error).

    ``y`` may be 1-D or 2-D (multi-output); predictions are float64 in the same shape.
    """

    _loss = losses.MSE

    def fit(self, X, y) -> NNRegressor:
        """Train from scratch for ``epochs`` epochs (fewer with ``early_stopping``)."""
        self.__dict__.pop("model_", None)
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y) -> NNRegressor:
        """One epoch over (X, y), continuing from the current weights."""
        return self._fit(X, y, incremental=True)

    def _targets(self, y, first, classes=None) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if first:
            self._y_1d = y.ndim == 1
        targets = y.reshape(len(y), -1)
        if not first and targets.shape[1] != self.model_[-1].out_features:
            raise ValueError(f"y has {targets.shape[1]} outputs, but this {type(self).__name__} "
                             f"was fitted with {self.model_[-1].out_features}")
        return targets

    def predict(self, X) -> np.ndarray:
        """Predictions as float64, 1-D if the model was fitted on a 1-D ``y``."""
        out = self._forward(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
