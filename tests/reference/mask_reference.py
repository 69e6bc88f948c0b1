#!/usr/bin/python3
"""Masked-LSTM reference fixture for tests/unit_mask.hpp: a right-padded
batch through Masking(0.0) + LSTM against PyTorch's nn.LSTM on the packed
(unpadded) sequences, outputs and every gradient, computed once in float64
and committed so the test needs no PyTorch.

    /usr/bin/python3 tests/reference/mask_reference.py [OUT.npz]

writes tests/reference/mask_reference.npz by default (deterministic).

x (B, T, F) = (3, 6, 4) holds sequences of lengths 6, 4 and 2, padded with
zero steps at the end (what Masking(mask_value=0.0) masks). nnlite runs the
padded batch; PyTorch runs nn.utils.rnn.pack_padded_sequence of it, so the
padding never enters its LSTM. Weights in Keras' layout (kernel (F, 4u),
recurrent_kernel (u, 4u), bias (4u), gates i, f, c, o = PyTorch's i, f, g,
o): weight_ih = kernel^T, weight_hh = recurrent_kernel^T, bias_ih = bias,
bias_hh = 0.
    seq case (return_sequences=True): Keras' output at a padded step is the
        previous step's (the carried h, zero_output_for_mask=False); the
        reference pads pad_packed_sequence's output by repeating each
        sequence's last h, which is the same thing.
    last case (return_sequences=False): y is h at each sequence's last
        real step (PyTorch's h_n).
The objective is L = sum(dy * y); dy is random, also at padded steps of the
seq case (where the gradient reaches the carried h). dx at padded steps is
zero (Masking passes no gradient there).

KEYS (float64): x, w0, w1, w2; per case C in (seq, last): C_dy, C_y, C_dx,
C_g0, C_g1, C_g2 (dL/d kernel, recurrent_kernel, bias in Keras layouts; the
bias's is bias_ih's, which PyTorch adds to the fixed bias_hh = 0).
"""
import sys
import numpy as np
import torch

torch.set_default_dtype(torch.float64)
B, T, F, U = 3, 6, 4, 5
LENGTHS = [6, 4, 2]
rng = np.random.default_rng(20261212)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


x = f32(rng.uniform(-1, 1, size=(B, T, F)))
for b, n in enumerate(LENGTHS):
    x[b, n:, :] = 0.0
w0 = f32(rng.uniform(-0.5, 0.5, size=(F, 4 * U)))
w1 = f32(rng.uniform(-0.5, 0.5, size=(U, 4 * U)))
w2 = f32(rng.uniform(-0.5, 0.5, size=(4 * U,)))
out = {"x": x, "w0": w0, "w1": w1, "w2": w2}

for case in ("seq", "last"):
    lstm = torch.nn.LSTM(F, U, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor(w0.T))
        lstm.weight_hh_l0.copy_(torch.tensor(w1.T))
        lstm.bias_ih_l0.copy_(torch.tensor(w2))
        lstm.bias_hh_l0.zero_()
    xt = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(LENGTHS), batch_first=True,
                                                     enforce_sorted=False)
    po, (hn, cn) = lstm(packed)
    if case == "seq":
        seq, _ = torch.nn.utils.rnn.pad_packed_sequence(po, batch_first=True, total_length=T)
        rows = []
        for b, n in enumerate(LENGTHS):  # padded steps repeat the last real output (Keras)
            rows.append(torch.cat([seq[b, :n], seq[b, n - 1:n].expand(T - n, U)], 0))
        y = torch.stack(rows)
    else:
        y = hn[0]
    dy = f32(rng.uniform(-1, 1, size=tuple(y.shape)))
    (y * torch.tensor(dy)).sum().backward()
    out[case + "_dy"] = dy
    out[case + "_y"] = y.detach().numpy()
    out[case + "_dx"] = xt.grad.numpy()
    out[case + "_g0"] = lstm.weight_ih_l0.grad.numpy().T
    out[case + "_g1"] = lstm.weight_hh_l0.grad.numpy().T
    out[case + "_g2"] = lstm.bias_ih_l0.grad.numpy()  # Keras' one bias (bias_hh's gradient is the same)
    # the padding never reached PyTorch's LSTM: its x gradient there is zero
    assert np.all(out[case + "_dx"][1, 4:] == 0) and np.all(out[case + "_dx"][2, 2:] == 0)

path = sys.argv[1] if len(sys.argv) > 1 else __file__.rsplit("/", 1)[0] + "/mask_reference.npz"
np.savez(path, **out)
print("wrote", path)
