#!/usr/bin/python3
"""Bidirectional reference fixture for tests/unit_bidir.hpp: outputs and
every gradient of Keras' Bidirectional(LSTM/GRU) computed once with
PyTorch's nn.LSTM / nn.GRU(bidirectional=True) in float64 and committed, so
the test needs no PyTorch.

    /usr/bin/python3 tests/reference/bidir_reference.py [OUT.npz]

writes tests/reference/bidir_reference.npz (and bidir_mask_reference.npz) by default (Debian python3-torch
and python3-numpy; deterministic: fixed seeds, float64 math).

Each case is one Bidirectional layer on x of shape (B, T, F) = (3, 5, 4)
with 5 units per direction and the objective L = sum(dy * y) for a fixed
random dy. Weights are drawn in float64, rounded to float32, and held in
Keras' get_weights() order and layouts: forward kernel (F, g u),
recurrent_kernel (u, g u), bias (g u) (GRU: (2, 3u), reset_after), then the
backward layer's three. The mapping onto PyTorch is rnn_reference.py's
(LSTM: transposes, bias_ih = bias, bias_hh = 0; GRU: gate blocks z, r, h ->
r, z, n, bias_ih = bias[0], bias_hh = bias[1]), for weight_*_l0 (forward)
and weight_*_l0_reverse (backward).

Keras' semantics, as PyTorch's: the backward layer reads the reversed input
and its sequence is reversed back to time order before the merge (PyTorch's
reverse half of `output` is in time order already). Without
return_sequences, each direction contributes its last state: h_n[0] and
h_n[1] (the backward direction's state after reading x[:, 0]; not
output[:, -1]'s reverse half). merge_mode: concat [fwd, bwd] on the last
axis, sum, mul, ave.

A second file, bidir_mask_reference.npz (float32, a few KB), holds
Bidirectional on right-padded sequences: (B, T, F) = (3, 5, 3), 3 units
per direction, lengths 3, 5, 1, x zero past each length (what Masking(0.0)
masks). PyTorch runs them as pack_padded_sequence; outputs come back
through pad_packed_sequence (zero past each length, as Keras' forced
zero_output_for_mask gives with return_sequences) or, without
return_sequences, as h_n[0] and h_n[1]: the forward state at the last kept
step and the backward state after reading x[:, 0] from the last kept
step, which is Keras' output of a masked Bidirectional. Its keys, kept
few for size: x (3, 5, 3) and len (int32 lengths), shared by every case;
per case C: C_spec, C_w (the six weights in get_weights() order, each
flattened, one after the other), C_dy, C_y, C_dx, C_g (the six gradients
as C_w); masked_cases names the cases.

    /usr/bin/python3 tests/reference/bidir_reference.py [OUT.npz [MASK_OUT.npz]]

KEYS, per case C (float64 unless noted):
    C_spec     uint8 bytes of the nnlite spec string (without input_shape)
    C_x, C_dy  input (B, T, F) and dL/dy
    C_w0..w5   the six weights in get_weights() order
    C_y, C_dx  output and dL/dx
    C_g0..g5   dL/d(each weight), same order and layouts
    cases      uint8: the case names, newline-separated
"""
import sys
import numpy as np
import torch

torch.set_default_dtype(torch.float64)
B, T, F, U = 3, 5, 4, 5
rng = np.random.default_rng(20261203)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def draw(*shape, scale=0.5):
    return f32(rng.uniform(-scale, scale, size=shape))


def perm_gru(a, axis):
    """Keras z, r, h blocks -> PyTorch r, z, n along axis"""
    z, r, h = np.split(a, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


unperm_gru = perm_gru  # swapping the first two blocks is its own inverse


CASES = [
    # name, kind, merge_mode, return_sequences
    ("lstm_concat_seq", "LSTM", "concat", True),
    ("lstm_sum", "LSTM", "sum", False),
    ("lstm_mul_seq", "LSTM", "mul", True),
    ("gru_ave_seq", "GRU", "ave", True),
    ("gru_concat", "GRU", "concat", False),
    ("gru_mul", "GRU", "mul", False),
]

out = {}
for name, kind, mode, seq in CASES:
    g = 4 if kind == "LSTM" else 3
    x = draw(B, T, F, scale=1.5)
    ws = []
    for _ in range(2):
        ws += [draw(F, g * U), draw(U, g * U), draw(2, g * U) if kind == "GRU" else draw(g * U)]
    m = (torch.nn.LSTM if kind == "LSTM" else torch.nn.GRU)(F, U, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for d, sfx in enumerate(("", "_reverse")):
            W, Uk, b = ws[3 * d:3 * d + 3]
            if kind == "LSTM":
                wi, wh, bi, bh = W.T, Uk.T, b, np.zeros_like(b)
            else:
                wi, wh, bi, bh = perm_gru(W, 1).T, perm_gru(Uk, 1).T, perm_gru(b[0], 0), perm_gru(b[1], 0)
            for k, v in (("weight_ih", wi), ("weight_hh", wh), ("bias_ih", bi), ("bias_hh", bh)):
                getattr(m, k + "_l0" + sfx).copy_(torch.tensor(np.ascontiguousarray(v)))
    xt = torch.tensor(x, requires_grad=True)
    o, hn = m(xt)
    if kind == "LSTM":
        hn = hn[0]
    if seq:
        yf, yb = o[..., :U], o[..., U:]
    else:
        yf, yb = hn[0], hn[1]
        assert torch.allclose(yf, o[:, -1, :U], rtol=0, atol=0)
        assert torch.allclose(yb, o[:, 0, U:], rtol=0, atol=0)
    y = {"concat": lambda: torch.cat([yf, yb], -1), "sum": lambda: yf + yb, "mul": lambda: yf * yb,
         "ave": lambda: (yf + yb) / 2}[mode]()
    dy = draw(*y.shape, scale=1.0)
    (y * torch.tensor(dy)).sum().backward()
    gs = []
    for sfx in ("", "_reverse"):
        gi, gh = getattr(m, "weight_ih_l0" + sfx).grad.numpy(), getattr(m, "weight_hh_l0" + sfx).grad.numpy()
        gbi, gbh = getattr(m, "bias_ih_l0" + sfx).grad.numpy(), getattr(m, "bias_hh_l0" + sfx).grad.numpy()
        if kind == "LSTM":
            gs += [gi.T.copy(), gh.T.copy(), gbi.copy()]  # bias_hh's gradient equals bias_ih's
        else:
            gs += [unperm_gru(gi.T, 1), unperm_gru(gh.T, 1), np.stack([unperm_gru(gbi, 0), unperm_gru(gbh, 0)])]
    spec = "Bidirectional(%s(%d%s), merge_mode='%s')" % (kind, U, ", return_sequences=True" if seq else "", mode)
    out[name + "_spec"] = np.frombuffer(spec.encode(), dtype=np.uint8)
    out[name + "_x"], out[name + "_dy"] = x, dy
    for i, w in enumerate(ws):
        out["%s_w%d" % (name, i)] = w
    out[name + "_y"], out[name + "_dx"] = y.detach().numpy(), xt.grad.numpy().copy()
    for i, gr in enumerate(gs):
        out["%s_g%d" % (name, i)] = np.ascontiguousarray(gr)
out["cases"] = np.frombuffer("\n".join(c[0] for c in CASES).encode(), dtype=np.uint8)
here = __file__.rsplit("/", 1)[0]
path = sys.argv[1] if len(sys.argv) > 1 else here + "/bidir_reference.npz"
np.savez(path, **out)
print("wrote", path)

# ---- masked (right-padded) sequences: pack_padded_sequence -------------------
MB, MT, MF, MU = 3, 5, 3, 3
LENGTHS = [3, 5, 1]  # not sorted: enforce_sorted=False, h_n comes back in batch order
MASKED_CASES = [
    ("lstm_concat_seq", "LSTM", "concat", True),
    ("lstm_sum", "LSTM", "sum", False),
    ("gru_concat", "GRU", "concat", False),
]
rng = np.random.default_rng(20261204)
pack, unpack = torch.nn.utils.rnn.pack_padded_sequence, torch.nn.utils.rnn.pad_packed_sequence
x = draw(MB, MT, MF, scale=1.5)
for b, n in enumerate(LENGTHS):
    x[b, n:] = 0.0
mout = {"x": x.astype(np.float32), "len": np.array(LENGTHS, dtype=np.int32)}
for name, kind, mode, seq in MASKED_CASES:
    g = 4 if kind == "LSTM" else 3
    ws = []
    for _ in range(2):
        ws += [draw(MF, g * MU), draw(MU, g * MU), draw(2, g * MU) if kind == "GRU" else draw(g * MU)]
    m = (torch.nn.LSTM if kind == "LSTM" else torch.nn.GRU)(MF, MU, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for d, sfx in enumerate(("", "_reverse")):
            W, Uk, b = ws[3 * d:3 * d + 3]
            if kind == "LSTM":
                wi, wh, bi, bh = W.T, Uk.T, b, np.zeros_like(b)
            else:
                wi, wh, bi, bh = perm_gru(W, 1).T, perm_gru(Uk, 1).T, perm_gru(b[0], 0), perm_gru(b[1], 0)
            for k, v in (("weight_ih", wi), ("weight_hh", wh), ("bias_ih", bi), ("bias_hh", bh)):
                getattr(m, k + "_l0" + sfx).copy_(torch.tensor(np.ascontiguousarray(v)))
    xt = torch.tensor(x, requires_grad=True)
    op, hn = m(pack(xt, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False))
    o, _ = unpack(op, batch_first=True, total_length=MT)
    if kind == "LSTM":
        hn = hn[0]
    if seq:
        yf, yb = o[..., :MU], o[..., MU:]
    else:
        yf, yb = hn[0], hn[1]
        for b, n in enumerate(LENGTHS):  # the last kept step's forward half, the first step's backward half
            assert torch.equal(yf[b], o[b, n - 1, :MU]) and torch.equal(yb[b], o[b, 0, MU:])
    y = {"concat": lambda: torch.cat([yf, yb], -1), "sum": lambda: yf + yb, "mul": lambda: yf * yb,
         "ave": lambda: (yf + yb) / 2}[mode]()
    dy = draw(*y.shape, scale=1.0)
    (y * torch.tensor(dy)).sum().backward()
    gs = []
    for sfx in ("", "_reverse"):
        gi, gh = getattr(m, "weight_ih_l0" + sfx).grad.numpy(), getattr(m, "weight_hh_l0" + sfx).grad.numpy()
        gbi, gbh = getattr(m, "bias_ih_l0" + sfx).grad.numpy(), getattr(m, "bias_hh_l0" + sfx).grad.numpy()
        if kind == "LSTM":
            gs += [gi.T.copy(), gh.T.copy(), gbi.copy()]
        else:
            gs += [unperm_gru(gi.T, 1), unperm_gru(gh.T, 1), np.stack([unperm_gru(gbi, 0), unperm_gru(gbh, 0)])]
    spec = "Bidirectional(%s(%d%s), merge_mode='%s')" % (kind, MU, ", return_sequences=True" if seq else "", mode)
    flat = lambda arrays: np.concatenate([np.ravel(a) for a in arrays])
    arrays = {"spec": np.frombuffer(spec.encode(), dtype=np.uint8), "w": flat(ws), "dy": dy,
              "y": y.detach().numpy(), "dx": xt.grad.numpy(), "g": flat(gs)}
    for k, v in arrays.items():
        mout[name + "_" + k] = v if v.dtype != np.float64 else np.ascontiguousarray(v, dtype=np.float32)
mout["masked_cases"] = np.frombuffer("\n".join(c[0] for c in MASKED_CASES).encode(), dtype=np.uint8)
mpath = sys.argv[2] if len(sys.argv) > 2 else here + "/bidir_mask_reference.npz"
np.savez(mpath, **mout)
print("wrote", mpath)
