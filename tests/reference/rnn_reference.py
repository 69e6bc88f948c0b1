#!/usr/bin/python3
"""Recurrent-layer reference fixture for tests/unit_rnn.hpp: SimpleRNN, LSTM
and GRU outputs and every gradient computed once with PyTorch in float64
and committed, so the test needs no PyTorch.

    /usr/bin/python3 tests/reference/rnn_reference.py [OUT.npz]

writes tests/reference/rnn_reference.npz by default (Debian python3-torch and
python3-numpy; deterministic: fixed seeds, float64 math).

Each case is one layer on x of shape (B, T, F) = (3, 5, 4) with 6 units and
the objective L = sum(dy * y) for a fixed random dy, so dL/dy = dy. Weights
are drawn in float64, rounded to float32 (what nnlite holds), and held in
Keras' layouts:
    kernel (F, g u), recurrent_kernel (u, g u), bias (g u) or GRU's (2, 3u)
    with gates side by side: LSTM i, f, c, o; GRU z, r, h.
They are mapped onto PyTorch's modules (weight_ih (g u, F), weight_hh
(g u, u), bias_ih, bias_hh; LSTM gates i, f, g, o; GRU gates r, z, n):
    SimpleRNN  nn.RNN(tanh): weight_ih = kernel^T, weight_hh =
               recurrent_kernel^T, bias_ih = bias, bias_hh = 0
    LSTM       nn.LSTM: the same transposes (gate order equal),
               bias_ih = bias, bias_hh = 0 (PyTorch adds the two)
    GRU        nn.GRU is Keras' reset_after=True cell
               (n = tanh(W_in x + b_in + r * (W_hn h + b_hn))): gate blocks
               permuted z, r, h -> r, z, n, bias_ih = bias[0], bias_hh =
               bias[1] (permuted the same way)
    GRU reset_after=False has no PyTorch module: it is written out with
               torch ops (h~ = tanh(x W_h + (r * h) U_h + b_h)), and the same
               hand-written cell with reset_after=True is checked against
               nn.GRU here, so the formula is tied to PyTorch's module.
go_backwards: the module runs on the time-reversed input, and the output
sequence stays in processing order (Keras returns the reversed sequence).
return_sequences=False: y is the last step's h.

KEYS, per case C (float64 unless noted):
    C_spec     uint8 bytes of the nnlite spec string (without input_shape)
    C_x        (B, T, F) input
    C_dy       dL/dy, the shape of y
    C_w0..w2   kernel, recurrent_kernel, bias in Keras layouts
    C_y        the output
    C_dx       dL/dx
    C_g0..g2   dL/d(kernel, recurrent_kernel, bias) in Keras layouts
    (cases: rnn, lstm, lstm_back, gru, gru_back, gru_v1, lstm_hs: see CASES)
    cases      uint8: the case names, newline-separated
"""
import sys
import numpy as np
import torch

torch.set_default_dtype(torch.float64)
B, T, F, U = 3, 5, 4, 6
rng = np.random.default_rng(20261202)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def draw(*shape, scale=0.5):
    return f32(rng.uniform(-scale, scale, size=shape))


def perm_gru(a, axis):
    """Keras z, r, h blocks -> PyTorch r, z, n along axis"""
    z, r, h = np.split(a, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


def unperm_gru(a, axis):
    r, z, h = np.split(a, 3, axis=axis)
    return np.concatenate([z, r, h], axis=axis)


def run_module(kind, x, W, Uk, b, go_backwards, return_sequences, reset_after=True):
    """y, dx, grads (Keras layouts) for L = sum(dy * y) (dy given later)"""
    xt = torch.tensor(x[:, ::-1].copy() if go_backwards else x, requires_grad=True)
    if kind == "SimpleRNN":
        m = torch.nn.RNN(F, U, batch_first=True, nonlinearity="tanh")
        wi, wh, bi, bh = W.T, Uk.T, b, np.zeros_like(b)
    elif kind == "LSTM":
        m = torch.nn.LSTM(F, U, batch_first=True)
        wi, wh, bi, bh = W.T, Uk.T, b, np.zeros_like(b)
    else:
        m = torch.nn.GRU(F, U, batch_first=True)
        wi, wh = perm_gru(W, 1).T, perm_gru(Uk, 1).T
        bi, bh = perm_gru(b[0], 0), perm_gru(b[1], 0)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.tensor(wi))
        m.weight_hh_l0.copy_(torch.tensor(wh))
        m.bias_ih_l0.copy_(torch.tensor(bi))
        m.bias_hh_l0.copy_(torch.tensor(bh))
    out, _ = m(xt)
    y = out if return_sequences else out[:, -1]

    def grads():
        gi, gh = m.weight_ih_l0.grad.numpy(), m.weight_hh_l0.grad.numpy()
        gbi, gbh = m.bias_ih_l0.grad.numpy(), m.bias_hh_l0.grad.numpy()
        if kind == "GRU":
            return [unperm_gru(gi.T, 1), unperm_gru(gh.T, 1), np.stack([unperm_gru(gbi, 0), unperm_gru(gbh, 0)])]
        return [gi.T.copy(), gh.T.copy(), gbi.copy()]  # bias_hh's gradient equals bias_ih's

    return xt, y, grads


def gru_by_hand(x, W, Uk, b, go_backwards, return_sequences, reset_after):
    """Keras' GRU cell with torch ops; autograd gives every gradient"""
    xs = torch.tensor(x[:, ::-1].copy() if go_backwards else x, requires_grad=True)
    Wt, Ut, bt = (torch.tensor(a, requires_grad=True) for a in (W, Uk, b))
    h = torch.zeros(B, U)
    outs = []
    for s in range(T):
        xp = xs[:, s] @ Wt + (bt[0] if reset_after else bt)
        if reset_after:
            rp = h @ Ut + bt[1]
            z = torch.sigmoid(xp[:, :U] + rp[:, :U])
            r = torch.sigmoid(xp[:, U:2 * U] + rp[:, U:2 * U])
            hh = torch.tanh(xp[:, 2 * U:] + r * rp[:, 2 * U:])
        else:
            z = torch.sigmoid(xp[:, :U] + h @ Ut[:, :U])
            r = torch.sigmoid(xp[:, U:2 * U] + h @ Ut[:, U:2 * U])
            hh = torch.tanh(xp[:, 2 * U:] + (r * h) @ Ut[:, 2 * U:])
        h = z * h + (1 - z) * hh
        outs.append(h)
    y = torch.stack(outs, 1) if return_sequences else h
    return xs, y, lambda: [Wt.grad.numpy().copy(), Ut.grad.numpy().copy(), bt.grad.numpy().copy()]


def lstm_by_hand(x, W, Uk, b, go_backwards, return_sequences, ract):
    """Keras' LSTM cell with torch ops and a given recurrent activation"""
    xs = torch.tensor(x[:, ::-1].copy() if go_backwards else x, requires_grad=True)
    Wt, Ut, bt = (torch.tensor(a, requires_grad=True) for a in (W, Uk, b))
    h, c = torch.zeros(B, U), torch.zeros(B, U)
    outs = []
    for s in range(T):
        z = xs[:, s] @ Wt + h @ Ut + bt
        i, f, g, o = ract(z[:, :U]), ract(z[:, U:2 * U]), torch.tanh(z[:, 2 * U:3 * U]), ract(z[:, 3 * U:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        outs.append(h)
    y = torch.stack(outs, 1) if return_sequences else h
    return xs, y, lambda: [Wt.grad.numpy().copy(), Ut.grad.numpy().copy(), bt.grad.numpy().copy()]


def hard_sigmoid(v):
    """Keras 2's hard_sigmoid, nnlite's: clip(0.2 v + 0.5, 0, 1)"""
    return torch.clamp(0.2 * v + 0.5, 0.0, 1.0)


CASES = [
    # name, kind, spec, go_backwards, return_sequences, reset_after
    ("rnn", "SimpleRNN", "SimpleRNN(6, return_sequences=True)", False, True, True),
    ("lstm", "LSTM", "LSTM(6, return_sequences=True)", False, True, True),
    ("lstm_back", "LSTM", "LSTM(6, go_backwards=True)", True, False, True),
    ("gru", "GRU", "GRU(6, return_sequences=True)", False, True, True),
    ("gru_back", "GRU", "GRU(6, go_backwards=True)", True, False, True),
    ("gru_v1", "GRU", "GRU(6, reset_after=False, return_sequences=True)", False, True, False),
    # Keras 2's LSTM default recurrent_activation; the hand-written cell
    # (checked against nn.LSTM with sigmoid below), autograd's exact
    # gradient of the piecewise-linear gate instead of finite differences
    ("lstm_hs", "LSTM", "LSTM(6, recurrent_activation='hard_sigmoid', return_sequences=True)", False, True, True),
]

out = {}
for name, kind, spec, back, seq, ra in CASES:
    g = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    x = draw(B, T, F, scale=1.5)
    W, Uk = draw(F, g * U), draw(U, g * U)
    b = draw(2, g * U) if kind == "GRU" and ra else draw(g * U)
    if name == "lstm_hs":  # larger weights: some gates saturate, so both sides of the kinks count
        W, Uk = f32(3 * W), f32(3 * Uk)
    if name == "lstm_hs":
        _, y1, _ = lstm_by_hand(x, W, Uk, b, back, seq, torch.sigmoid)
        _, y2, _ = run_module(kind, x, W, Uk, b, back, seq)
        assert torch.allclose(y1, y2, rtol=0, atol=1e-12), name
        xt, y, grads = lstm_by_hand(x, W, Uk, b, back, seq, hard_sigmoid)
        gates = []
        lstm_by_hand(x, W, Uk, b, back, seq, lambda v: gates.append(v.detach()) or hard_sigmoid(v))
        g = torch.cat([v.flatten() for v in gates])
        saturated = int((g.abs() > 2.5).sum())
        assert saturated > 0.05 * g.numel(), saturated  # 25 of 270 gate values
        assert float((g.abs() - 2.5).abs().min()) > 1e-3  # no value on a kink itself
    elif kind == "GRU" and not ra:
        xt, y, grads = gru_by_hand(x, W, Uk, b, back, seq, False)
    else:
        xt, y, grads = run_module(kind, x, W, Uk, b, back, seq, ra)
    if kind == "GRU" and ra:  # the hand-written cell agrees with nn.GRU
        _, y2, _ = gru_by_hand(x, W, Uk, b, back, seq, True)
        assert torch.allclose(y, y2, rtol=0, atol=1e-12), name
    dy = draw(*y.shape, scale=1.0)
    (y * torch.tensor(dy)).sum().backward()
    dx = xt.grad.numpy()
    if back:
        dx = dx[:, ::-1]
    gs = grads()
    out[name + "_spec"] = np.frombuffer(spec.encode(), dtype=np.uint8)
    out[name + "_x"], out[name + "_dy"] = x, dy
    for i, w in enumerate((W, Uk, b)):
        out["%s_w%d" % (name, i)] = w
    out[name + "_y"], out[name + "_dx"] = y.detach().numpy(), np.ascontiguousarray(dx)
    for i, gr in enumerate(gs):
        out["%s_g%d" % (name, i)] = gr
out["cases"] = np.frombuffer("\n".join(c[0] for c in CASES).encode(), dtype=np.uint8)
path = sys.argv[1] if len(sys.argv) > 1 else __file__.rsplit("/", 1)[0] + "/rnn_reference.npz"
np.savez(path, **out)
print("wrote", path)
