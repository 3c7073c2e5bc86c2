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
MAKERS = [pytest.param(make, id=f"{name}-{i}") for name, entries in sorted(EXAMPLES.items())
          for i, (make, _) in enumerate(entries)]


def input_shape(make):
    """A shape the layer accepts: its example's trailing axes behind a random batch size."""
    for entries in EXAMPLES.values():
        for m, shapes in entries:
            if m is make:
                return shapes[0][1:]


@st.composite
def inputs(draw, make, low, high):
    batch = draw(st.integers(2, 5))  # BatchNorm needs two values per channel
    shape = (batch, *input_shape(make))
    magnitude = arrays(np.float64, shape, elements=st.floats(low, high))
    sign = arrays(np.bool_, shape)
    return np.where(draw(sign), 1, -1) * draw(magnitude)


@pytest.mark.parametrize("make", MAKERS)
@FAST
@given(data=st.data())
def test_finite_in_finite_out_and_shapes_kept(make, data):
    x = data.draw(inputs(make, 0.0, 1e4)).astype(np.float32)
    layer = make()
    y = layer(x)
    assert np.isfinite(y).all() and y.dtype == np.float32 and y.shape[0] == x.shape[0]
    g = data.draw(arrays(np.float32, y.shape, elements=st.floats(-10, 10, width=32)))
    dx = layer.backward(g)
    assert dx.shape == x.shape and np.isfinite(dx).all()
    assert all(np.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("make", MAKERS)
@FAST
@given(data=st.data())
def test_gradient_checks_pass(make, data):
    # Values keep 0.01 from zero, where ReLU-like layers have a kink, and differ by at
    # least 1e-5, so that no max-pooling window holds a tie.
    x = data.draw(inputs(make, 0.01, 3.0))
    ranks = np.argsort(np.argsort(x, axis=None)).reshape(x.shape)
    x = x + 1e-5 * ranks
    report = check_layer(make(), x, seed=data.draw(st.integers(0, 2 ** 16)))
    assert report.ok, str(report)
