#!/usr/bin/env python3
"""Reference output and weight gradient of nnlite's Embedding layer, computed
with PyTorch's nn.Embedding (Debian python3-torch, float64).

    /usr/bin/python3 tests/reference/embedding_reference.py [OUT.npz]

writes tests/reference/embedding_reference.npz (committed, so the unit test
runs where PyTorch is absent) holding
    ids   int64 (B, T) token ids, with repeats (the scatter-add is exercised)
    w     float32 (input_dim, output_dim) the table ('embeddings', Keras'
          layout, the same as nn.Embedding.weight)
    dy    float32 (B, T, output_dim) a random upstream gradient
    y     float32 (B, T, output_dim) nn.Embedding(ids)
    gw    float32 (input_dim, output_dim) dL/dw for L = sum(y * dy)
"""
import sys

import numpy as np
import torch

torch.manual_seed(0)
B, T, V, D = 3, 6, 9, 4
emb = torch.nn.Embedding(V, D).double()
with torch.no_grad():
    emb.weight.uniform_(-0.5, 0.5)
ids = torch.randint(0, V, (B, T))
ids[0, :3] = 2  # repeats within a row and across rows
ids[2, -1] = 2
dy = torch.randn(B, T, D, dtype=torch.float64)
y = emb(ids)
(y * dy).sum().backward()
out = sys.argv[1] if len(sys.argv) > 1 else "tests/reference/embedding_reference.npz"
np.savez(out, ids=ids.numpy().astype(np.int64), w=emb.weight.detach().numpy().astype(np.float32),
         dy=dy.numpy().astype(np.float32), y=y.detach().numpy().astype(np.float32),
         gw=emb.weight.grad.numpy().astype(np.float32))
print("wrote", out)
