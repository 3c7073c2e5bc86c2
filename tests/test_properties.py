"""Property-based tests: every layer's forward and backward over random shapes and values."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnlite.check import check_layer

from test_layers import EXAMPLES

FAST = settings(max_examples=20, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
# Layers of float inputs (Embedding's ids are checked in test_layers and test_sequence).
MAKERS = [pytest.param(make, id=f"{name}-{i}") for name, entries in sorted(EXAMPLES.items())
          for i, (make, shapes) in enumerate(entries) if not isinstance(shapes[0], dict)]


def input_shapes(make):
    """The shapes the layer's first example takes (one per input), without the batch axis."""
    for entries in EXAMPLES.values():
        for m, shapes in entries:
            if m is make:
                return [s[1:] for s in shapes[0]] if isinstance(shapes[0], list) \
                    else [shapes[0][1:]]


def listed(make):
    """Whether the layer takes a list of inputs (a merge layer)."""
    return len(input_shapes(make)) > 1


@st.composite
def inputs(draw, make, low, high):
    """A list of one array per input, behind one random batch size."""
    batch = draw(st.integers(2, 5))  # BatchNorm needs two values per channel
    xs = []
    for trailing in input_shapes(make):
        shape = (batch, *trailing)
        magnitude = arrays(np.float64, shape, elements=st.floats(low, high))
        sign = arrays(np.bool_, shape)
        xs.append(np.where(draw(sign), 1, -1) * draw(magnitude))
    return xs


@pytest.mark.parametrize("make", MAKERS)
@FAST
@given(data=st.data())
def test_finite_in_finite_out_and_shapes_kept(make, data):
    xs = [x.astype(np.float32) for x in data.draw(inputs(make, 0.0, 1e4))]
    layer = make()
    y = layer(xs if listed(make) else xs[0])
    assert np.isfinite(y).all() and y.dtype == np.float32 and y.shape[0] == xs[0].shape[0]
    g = data.draw(arrays(np.float32, y.shape, elements=st.floats(-10, 10, width=32)))
    dxs = layer.backward(g) if listed(make) else [layer.backward(g)]
    assert all(dx.shape == x.shape and np.isfinite(dx).all() for dx, x in zip(dxs, xs))
    assert all(np.isfinite(p.grad).all() for p in layer.parameters())


#: TransformerBlock chains LayerNorm into attention and GELU: at the nearly constant rows the
#: tie-breaking below makes (differences of 1e-5), LayerNorm scales them by 1/√ε ≈ 316 and
#: the finite differences' truncation error swamps the check. Its gradients are checked on
#: random inputs in test_layers and against PyTorch's in test_sequence.
GRADIENT_MAKERS = [m for m in MAKERS if not m.id.startswith("TransformerBlock")]


@pytest.mark.parametrize("make", GRADIENT_MAKERS)
@FAST
@given(data=st.data())
def test_gradient_checks_pass(make, data):
    # Values keep 0.01 from zero, where ReLU-like layers have a kink, and differ by at
    # least 1e-5, so that no max-pooling window holds a tie.
    xs = data.draw(inputs(make, 0.01, 3.0))
    xs = [x + 1e-5 * np.argsort(np.argsort(x, axis=None)).reshape(x.shape) for x in xs]
    report = check_layer(make(), xs if listed(make) else xs[0],
                         seed=data.draw(st.integers(0, 2 ** 16)))
    assert report.ok, str(report)
