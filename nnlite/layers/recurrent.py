"""Recurrent layers: LSTM and GRU, batch-first, with PyTorch's parameters and equations.

A recurrent layer applies one step T times, h_t = step(x_t, h_{t−1}), from h₀ = 0. Its
VJP is backpropagation through time: the steps run backwards, each handing dL/dh_{t−1}
to the one before, and every step's parameter gradient adds up. Its JVP runs the steps
forwards, each passing the tangent dh_t (and the LSTM's dc_t) on. The input projections of
all steps are one matrix product before the loop (and their gradients one after it); the
loop over time is the only Python loop, each step whole-batch products.
"""
from __future__ import annotations

import math

from typing import Any

import numpy as np

from ..core.door import check_flag, check_number, new_array
from ..core.layer import Layer, default_rng
from ..core.losses import sigmoid
from ..core.parameter import Parameter, resolve_dtype


#: What one time step costs the load-time probe beyond its arrays (its Python work), in values.
STEP = 1 << 9


class _Recurrent(Layer):
    """Shared by LSTM and GRU: parameters, shapes, and the products outside the loop."""

    skips_input_grad = True
    _n_gates = 1

    def __init__(self, input_size: int, hidden_size: int, return_sequences: bool = True, *,
                 dtype: Any = None, rng: np.random.Generator | None = None):
        super().__init__()
        name = type(self).__name__
        self.input_size = check_number(name, "input_size", input_size, integer=True, low=1)
        self.hidden_size = check_number(name, "hidden_size", hidden_size, integer=True, low=1)
        self.return_sequences = check_flag(name, "return_sequences", return_sequences)
        self.dtype = resolve_dtype(dtype)
        rng = rng or default_rng()
        limit = 1 / np.sqrt(self.hidden_size)   # torch: U(±1/√H) for every parameter
        gh = self._n_gates * self.hidden_size
        for attr, shape in (("weight_ih", (gh, self.input_size)),
                            ("weight_hh", (gh, self.hidden_size)),
                            ("bias_ih", (gh,)), ("bias_hh", (gh,))):
            w = new_array(shape, self.dtype)
            w[...] = rng.uniform(-limit, limit, shape)
            setattr(self, attr, Parameter(w, self.dtype))

    def cost(self, shapes: list[tuple[int, ...]]) -> int:
        """The load-time probe's charge beyond a call: T steps, each a few vectors of the
        hidden size per sample, and ``STEP`` for its Python work."""
        if len(shapes[0]) != 3:
            return 4 * math.prod(shapes[0])
        n, t, _ = shapes[0]
        return math.prod(shapes[0]) + t * (STEP + 8 * n * self.hidden_size)

    def _projections(self, x: np.ndarray, hidden_bias: bool) -> np.ndarray:
        """x W_ihᵀ + b_ih (+ b_hh) for every step at once, as (T, N, G·H)."""
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{self!r} expects sequences of shape (N, T, {self.input_size}), "
                             f"got {x.shape}")
        pre = x @ self.weight_ih.data.T
        pre += self.bias_ih.data
        if hidden_bias:
            pre += self.bias_hh.data
        return pre.transpose(1, 0, 2)

    def _output(self, hs: np.ndarray) -> np.ndarray:
        """All hidden states (N, T, H), or the last one (N, H)."""
        return hs[:, 1:].copy() if self.return_sequences else hs[:, -1].copy()

    def _input_tangents(self, tangent: np.ndarray) -> np.ndarray:
        """v W_ihᵀ for every step at once, as (T, N, G·H): the input parts' tangents."""
        return (tangent @ self.weight_ih.data.T).transpose(1, 0, 2)

    def _step_grads(self, grad: np.ndarray, n: int, t: int) -> np.ndarray:
        """dL/dh_t from the output, for every step: (T, N, H), zero where not returned."""
        dh = np.zeros((t, n, self.hidden_size), grad.dtype)
        if self.return_sequences:
            dh[...] = grad.transpose(1, 0, 2)
        else:
            dh[-1] = grad
        return dh

    def _finish(self, x: np.ndarray, d_in: np.ndarray, d_hidden: np.ndarray,
                hs_prev: np.ndarray) -> np.ndarray | None:
        """Parameter gradients from every step's pre-activation gradients (T, N, G·H), and
        dL/dx, each one product over all steps."""
        n, t, _ = x.shape
        rows_in = d_in.transpose(1, 0, 2).reshape(n * t, -1)
        rows_hidden = d_hidden.transpose(1, 0, 2).reshape(n * t, -1)
        if self._trainable:  # dL/dθ only for a layer fit may change
            ones = self._filled((n * t,), rows_in.dtype, 1)
            self.weight_ih.add_matmul(rows_in.T, x.reshape(n * t, -1))
            self.weight_hh.add_matmul(rows_hidden.T, hs_prev.reshape(n * t, -1))
            self.bias_ih.add_matmul(ones, rows_in)
            self.bias_hh.add_matmul(ones, rows_hidden)
        if not self.input_grad:
            return None
        return (rows_in @ self.weight_ih.data).reshape(x.shape)

    def get_config(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "return_sequences": self.return_sequences, "dtype": self.dtype.name}


class LSTM(_Recurrent):
    """Long short-term memory, batch-first: (N, T, I) → (N, T, H), or (N, H) with
    ``return_sequences=False``; as ``torch.nn.LSTM(I, H, batch_first=True)``.

    With gates in torch's order i, f, g, o from W_ih x_t + b_ih + W_hh h_{t−1} + b_hh:
    i, f, o = σ(·), g = tanh(·);  c_t = f ⊙ c_{t−1} + i ⊙ g;  h_t = o ⊙ tanh(c_t).
    VJP of one step, from dh and dc (what comes from the output and from step t+1):
    do = dh ⊙ tanh(c_t);  dc ← dc + dh ⊙ o ⊙ (1 − tanh²c_t);  di = dc ⊙ g;  dg = dc ⊙ i;
    df = dc ⊙ c_{t−1};  dc_{t−1} = dc ⊙ f; each gate's pre-activation gradient is its
    derivative times that (σ' = σ(1 − σ), tanh' = 1 − tanh²), call it da, and
    dh_{t−1} = da W_hh;  dL/dW_ih += Σ_t daᵀ x_t;  dL/dW_hh += Σ_t daᵀ h_{t−1}.
    JVP of one step, from the tangents of x_t, h_{t−1} and c_{t−1}: each gate's tangent is
    its derivative times v_t W_ihᵀ + dh_{t−1} W_hhᵀ;  dc_t = df ⊙ c_{t−1} + f ⊙ dc_{t−1} +
    di ⊙ g + i ⊙ dg;  dh_t = do ⊙ tanh(c_t) + o ⊙ (1 − tanh²c_t) ⊙ dc_t.
    """

    _n_gates = 4

    def forward(self, x: np.ndarray) -> np.ndarray:
        pre = self._projections(x, hidden_bias=True)    # (T, N, 4H), a step at a time
        n, t, _ = x.shape
        hsz = self.hidden_size
        hs = np.zeros((n, t + 1, hsz), x.dtype)          # h_0 … h_T
        cs = np.zeros((t + 1, n, hsz), x.dtype)
        acts = np.empty((t, n, 4 * hsz), x.dtype)        # i, f, g, o after their functions
        w_hh = self.weight_hh.data.T
        for s in range(t):
            a = acts[s]
            np.matmul(hs[:, s], w_hh, out=a)
            a += pre[s]
            a[:, 2 * hsz:3 * hsz] = np.tanh(a[:, 2 * hsz:3 * hsz])
            for lo, hi in ((0, 2 * hsz), (3 * hsz, 4 * hsz)):
                a[:, lo:hi] = sigmoid(a[:, lo:hi])
            i, f, g, o = (a[:, k * hsz:(k + 1) * hsz] for k in range(4))
            np.multiply(f, cs[s], out=cs[s + 1])
            cs[s + 1] += i * g
            np.multiply(o, np.tanh(cs[s + 1]), out=hs[:, s + 1])
        self._x, self._hs, self._cs, self._acts = x, hs, cs, acts
        return self._output(hs)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        x, hs, cs, acts = (self._cached(k) for k in ("_x", "_hs", "_cs", "_acts"))
        n, t, _ = x.shape
        hsz = self.hidden_size
        dh_out = self._step_grads(grad, n, t)
        da = np.empty_like(acts)
        dh = np.zeros((n, hsz), grad.dtype)
        dc = np.zeros((n, hsz), grad.dtype)
        w_hh = self.weight_hh.data
        for s in range(t - 1, -1, -1):
            dh += dh_out[s]
            i, f, g, o = (acts[s][:, k * hsz:(k + 1) * hsz] for k in range(4))
            tc = np.tanh(cs[s + 1])
            d = da[s]
            np.multiply(dh, tc, out=d[:, 3 * hsz:])               # do
            dc += dh * o * (1 - tc * tc)
            np.multiply(dc, g, out=d[:, :hsz])                    # di
            np.multiply(dc, cs[s], out=d[:, hsz:2 * hsz])         # df
            np.multiply(dc, i, out=d[:, 2 * hsz:3 * hsz])         # dg
            dc *= f
            sig = np.concatenate([i, f], axis=1)
            d[:, :2 * hsz] *= sig * (1 - sig)
            d[:, 2 * hsz:3 * hsz] *= 1 - g * g
            d[:, 3 * hsz:] *= o * (1 - o)
            np.matmul(d, w_hh, out=dh)
        return self._finish(x, da, da, hs[:, :-1])

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        hs, cs, acts = (self._cached(k) for k in ("_hs", "_cs", "_acts"))
        hsz = self.hidden_size
        dpre = self._input_tangents(tangent)
        dhs = np.zeros(hs.shape, dpre.dtype)
        dc = np.zeros(cs.shape[1:], dpre.dtype)
        w_hh = self.weight_hh.data.T
        for s in range(len(acts)):
            da = dpre[s] + dhs[:, s] @ w_hh
            i, f, g, o = (acts[s][:, k * hsz:(k + 1) * hsz] for k in range(4))
            di, df, dg, do = (da[:, k * hsz:(k + 1) * hsz] for k in range(4))
            di *= i * (1 - i)
            df *= f * (1 - f)
            dg *= 1 - g * g
            do *= o * (1 - o)
            dc = df * cs[s] + f * dc + di * g + i * dg
            tc = np.tanh(cs[s + 1])
            dhs[:, s + 1] = do * tc + o * (1 - tc * tc) * dc
        return self._output(dhs)


class GRU(_Recurrent):
    """Gated recurrent unit, batch-first: (N, T, I) → (N, T, H), or (N, H) with
    ``return_sequences=False``; as ``torch.nn.GRU(I, H, batch_first=True)``.

    With gates in torch's order r, z, n, input parts a = W_ih x_t + b_ih and hidden parts
    b = W_hh h_{t−1} + b_hh:  r = σ(a_r + b_r);  z = σ(a_z + b_z);  n = tanh(a_n + r ⊙ b_n);
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}.
    VJP of one step, from dh: dn = dh ⊙ (1 − z) ⊙ (1 − n²);  dz = dh ⊙ (h_{t−1} − n) ⊙
    z(1 − z);  dr = dn ⊙ b_n ⊙ r(1 − r); the input parts get (dr, dz, dn), the hidden
    parts (dr, dz, dn ⊙ r), and dh_{t−1} = dh ⊙ z + (hidden parts) W_hh.
    JVP of one step, with da = v_t W_ihᵀ and db = dh_{t−1} W_hhᵀ: dr = r(1 − r)(da_r + db_r);
    dz = z(1 − z)(da_z + db_z);  dn = (1 − n²)(da_n + dr ⊙ b_n + r ⊙ db_n);
    dh_t = (1 − z) ⊙ dn + z ⊙ dh_{t−1} + dz ⊙ (h_{t−1} − n).
    """

    _n_gates = 3

    def forward(self, x: np.ndarray) -> np.ndarray:
        pre = self._projections(x, hidden_bias=False)    # (T, N, 3H); b_hn stays inside r ⊙ ·
        n, t, _ = x.shape
        hsz = self.hidden_size
        hs = np.zeros((n, t + 1, hsz), x.dtype)
        gates = np.empty((t, n, 3 * hsz), x.dtype)        # r, z, n
        hidden_n = np.empty((t, n, hsz), x.dtype)         # b_n, for backward
        w_hh, b_hh = self.weight_hh.data.T, self.bias_hh.data
        for s in range(t):
            b = hs[:, s] @ w_hh
            b += b_hh
            g = gates[s]
            np.add(pre[s][:, :2 * hsz], b[:, :2 * hsz], out=g[:, :2 * hsz])
            g[:, :2 * hsz] = sigmoid(g[:, :2 * hsz])
            r, z = g[:, :hsz], g[:, hsz:2 * hsz]
            hidden_n[s] = b[:, 2 * hsz:]
            np.tanh(pre[s][:, 2 * hsz:] + r * hidden_n[s], out=g[:, 2 * hsz:])
            new = g[:, 2 * hsz:]
            np.subtract(hs[:, s], new, out=hs[:, s + 1])
            hs[:, s + 1] *= z
            hs[:, s + 1] += new
        self._x, self._hs, self._gates_t, self._hidden_n = x, hs, gates, hidden_n
        return self._output(hs)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        x, hs, gates, hidden_n = (self._cached(k) for k in ("_x", "_hs", "_gates_t",
                                                            "_hidden_n"))
        n, t, _ = x.shape
        hsz = self.hidden_size
        dh_out = self._step_grads(grad, n, t)
        d_in = np.empty_like(gates)
        d_hidden = np.empty_like(gates)
        dh = np.zeros((n, hsz), grad.dtype)
        w_hh = self.weight_hh.data
        for s in range(t - 1, -1, -1):
            dh += dh_out[s]
            r, z, new = (gates[s][:, k * hsz:(k + 1) * hsz] for k in range(3))
            di, dhid = d_in[s], d_hidden[s]
            dn = di[:, 2 * hsz:]
            np.multiply(dh, 1 - z, out=dn)
            dn *= 1 - new * new
            np.multiply(dh, hs[:, s] - new, out=di[:, hsz:2 * hsz])
            di[:, hsz:2 * hsz] *= z * (1 - z)
            np.multiply(dn, hidden_n[s], out=di[:, :hsz])
            di[:, :hsz] *= r * (1 - r)
            dhid[:, :2 * hsz] = di[:, :2 * hsz]
            np.multiply(dn, r, out=dhid[:, 2 * hsz:])
            dh *= z
            dh += dhid @ w_hh
        return self._finish(x, d_in, d_hidden, hs[:, :-1])

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        hs, gates, hidden_n = (self._cached(k) for k in ("_hs", "_gates_t", "_hidden_n"))
        hsz = self.hidden_size
        da = self._input_tangents(tangent)
        dhs = np.zeros(hs.shape, da.dtype)
        w_hh = self.weight_hh.data.T
        for s in range(len(gates)):
            db = dhs[:, s] @ w_hh
            r, z, new = (gates[s][:, k * hsz:(k + 1) * hsz] for k in range(3))
            dr = (da[s][:, :hsz] + db[:, :hsz]) * r * (1 - r)
            dz = (da[s][:, hsz:2 * hsz] + db[:, hsz:2 * hsz]) * z * (1 - z)
            dn = (da[s][:, 2 * hsz:] + dr * hidden_n[s] + r * db[:, 2 * hsz:]) * (1 - new * new)
            dhs[:, s + 1] = (1 - z) * dn + z * dhs[:, s] + dz * (hs[:, s] - new)
        return self._output(dhs)
