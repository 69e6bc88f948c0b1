#!/usr/bin/python3
"""Reference values for tests/unit_optimizers.hpp.

Prints, for every optimizer case of the unit test, the weights after each of
the first three updates, as C++ literals, computed two ways:

  1. An independent float64 numpy implementation of the Keras 3 update rules
     (keras/src/optimizers/*.py; tf.keras >= 2.11 has the same rules). These
     are the literals pasted into the test.
  2. A cross-check with torch.optim in float64, for the cases where PyTorch's
     update rule is the same as Keras' once the options are set to match. Where
     the only difference is where epsilon enters the denominator, both sides are
     run with epsilon = 0 (the rest of the rule must then agree exactly) and the
     line says so. Where no PyTorch optimizer has the same rule the case says
     "Keras formulas only" and why.

Run: /usr/bin/python3 tests/reference/optimizers_reference.py
Needs numpy; torch is optional (the cross-check is skipped without it).

The problem: two weight tensors w1 (3 floats) and w2 (2 floats) start at W0;
before every step the gradient is g = 2 * w + C with the current weights
(the gradient of sum((w + C/2)^2)), so it changes with the weights as in real
training.
"""
import math
import sys

import numpy as np

W0 = [np.array([0.5, -1.2, 2.0]), np.array([0.3, -0.7])]
C = [np.array([0.1, -0.3, 0.2]), np.array([-0.5, 0.4])]
STEPS = 3


def grads_of(ws):
    return [2.0 * w + c for w, c in zip(ws, C)]


# --------------------------------------------------------------------------
# 1. Keras 3 update rules, float64 numpy
# --------------------------------------------------------------------------
class KerasOptimizer:
    """Base: gradient clipping, legacy decay, iteration count (Keras 3
    BaseOptimizer.apply: _clip_gradients, weight decay, update_step,
    iterations += 1)."""

    def __init__(self, learning_rate, clipnorm=0.0, clipvalue=0.0, global_clipnorm=0.0, decay=0.0):
        self.lr = learning_rate
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.decay = decay
        self.iterations = 0
        self.state = None

    def clip(self, gs):
        # Keras 3 allows only one of the three to be set; the tests set one.
        if self.clipnorm > 0:  # _clip_by_norm: g * c / max(||g||, c), per tensor
            gs = [g * self.clipnorm / max(np.sqrt(np.sum(g * g)), self.clipnorm) for g in gs]
        if self.global_clipnorm > 0:  # clip_by_global_norm
            norm = np.sqrt(sum(np.sum(g * g) for g in gs))
            gs = [g * self.global_clipnorm / max(norm, self.global_clipnorm) for g in gs]
        if self.clipvalue > 0:
            gs = [np.clip(g, -self.clipvalue, self.clipvalue) for g in gs]
        return gs

    def apply(self, ws, gs):
        if self.state is None:
            self.state = [self.init_state(w) for w in ws]
        gs = self.clip(gs)
        lr = self.lr / (1.0 + self.decay * self.iterations)  # legacy decay, iterations before this step
        self.before_update(ws, lr)
        t = self.iterations + 1
        for w, g, s in zip(ws, gs, self.state):
            self.update(w, g, s, lr, t)
        self.iterations += 1
        self.after_step()

    def init_state(self, w):
        return {}

    def before_update(self, ws, lr):
        pass

    def after_step(self):
        pass


class SGD(KerasOptimizer):
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kw):
        super().__init__(learning_rate, **kw)
        self.momentum, self.nesterov = momentum, nesterov

    def init_state(self, w):
        return {"v": np.zeros_like(w)}

    def update(self, w, g, s, lr, t):
        if self.momentum == 0:
            w -= lr * g
            return
        s["v"][:] = self.momentum * s["v"] - lr * g
        if self.nesterov:
            w += self.momentum * s["v"] - lr * g
        else:
            w += s["v"]


class RMSprop(KerasOptimizer):
    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kw):
        super().__init__(learning_rate, **kw)
        self.rho, self.momentum, self.eps, self.centered = rho, momentum, epsilon, centered

    def init_state(self, w):
        return {"v": np.zeros_like(w), "a": np.zeros_like(w), "mom": np.zeros_like(w)}

    def update(self, w, g, s, lr, t):
        rho = self.rho
        s["v"][:] = rho * s["v"] + (1 - rho) * g * g
        if self.centered:
            s["a"][:] = rho * s["a"] + (1 - rho) * g
            denom = s["v"] - s["a"] ** 2 + self.eps
        else:
            denom = s["v"] + self.eps
        inc = lr * g / np.sqrt(denom)
        if self.momentum > 0:
            s["mom"][:] = self.momentum * s["mom"] + inc
            w -= s["mom"]
        else:
            w -= inc


class Adagrad(KerasOptimizer):
    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kw):
        super().__init__(learning_rate, **kw)
        self.init, self.eps = initial_accumulator_value, epsilon

    def init_state(self, w):
        return {"acc": np.full_like(w, self.init)}

    def update(self, w, g, s, lr, t):
        s["acc"] += g * g
        w -= lr * g / np.sqrt(s["acc"] + self.eps)


class Adadelta(KerasOptimizer):
    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **kw):
        super().__init__(learning_rate, **kw)
        self.rho, self.eps = rho, epsilon

    def init_state(self, w):
        return {"ag": np.zeros_like(w), "ad": np.zeros_like(w)}

    def update(self, w, g, s, lr, t):
        rho, eps = self.rho, self.eps
        s["ag"][:] = rho * s["ag"] + (1 - rho) * g * g
        delta = np.sqrt(s["ad"] + eps) / np.sqrt(s["ag"] + eps) * g
        s["ad"][:] = rho * s["ad"] + (1 - rho) * delta * delta
        w -= lr * delta


class Adam(KerasOptimizer):
    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=0.0, **kw):
        super().__init__(learning_rate, **kw)
        self.b1, self.b2, self.eps, self.amsgrad, self.wd = beta_1, beta_2, epsilon, amsgrad, weight_decay

    def init_state(self, w):
        return {"m": np.zeros_like(w), "v": np.zeros_like(w), "vh": np.zeros_like(w)}

    def before_update(self, ws, lr):
        # AdamW: Keras 3 BaseOptimizer._apply_weight_decay, w -= w * wd * lr, before the update
        if self.wd > 0:
            for w in ws:
                w -= w * self.wd * lr

    def update(self, w, g, s, lr, t):
        b1, b2 = self.b1, self.b2
        alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        s["m"] += (g - s["m"]) * (1 - b1)
        s["v"] += (g * g - s["v"]) * (1 - b2)
        v = s["v"]
        if self.amsgrad:
            s["vh"][:] = np.maximum(s["vh"], s["v"])
            v = s["vh"]
        w -= alpha * s["m"] / (np.sqrt(v) + self.eps)


def AdamW(learning_rate=0.001, weight_decay=0.004, **kw):
    return Adam(learning_rate=learning_rate, weight_decay=weight_decay, **kw)


class Adamax(KerasOptimizer):
    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kw):
        super().__init__(learning_rate, **kw)
        self.b1, self.b2, self.eps = beta_1, beta_2, epsilon

    def init_state(self, w):
        return {"m": np.zeros_like(w), "u": np.zeros_like(w)}

    def update(self, w, g, s, lr, t):
        s["m"] += (g - s["m"]) * (1 - self.b1)
        s["u"][:] = np.maximum(self.b2 * s["u"], np.abs(g))
        w -= lr * s["m"] / ((1 - self.b1 ** t) * (s["u"] + self.eps))


class Nadam(KerasOptimizer):
    """Keras 3 (and tf.keras >= 2.11) Nadam: u_t = b1 * (1 - 0.5 * 0.96^t).
    schedule=0.004 gives the older tf.keras <= 2.10 / PyTorch schedule
    0.96^(0.004 t) instead (not what Keras 3 does; printed for comparison)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, schedule=1.0, **kw):
        super().__init__(learning_rate, **kw)
        self.b1, self.b2, self.eps, self.schedule = beta_1, beta_2, epsilon, schedule
        self.u_product = 1.0

    def u(self, t):
        return self.b1 * (1.0 - 0.5 * 0.96 ** (self.schedule * t))

    def before_update(self, ws, lr):
        # Keras 3 Nadam._backend_update_step: u_product *= u_t once per step
        self.u_product *= self.u(self.iterations + 1)

    def update(self, w, g, s, lr, t):
        u_t, u_t1 = self.u(t), self.u(t + 1)
        u_prod_t = self.u_product
        u_prod_t1 = u_prod_t * u_t1
        s["m"] += (g - s["m"]) * (1 - self.b1)
        s["v"] += (g * g - s["v"]) * (1 - self.b2)
        m_hat = u_t1 * s["m"] / (1 - u_prod_t1) + (1 - u_t) * g / (1 - u_prod_t)
        v_hat = s["v"] / (1 - self.b2 ** t)
        w -= lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def init_state(self, w):
        return {"m": np.zeros_like(w), "v": np.zeros_like(w)}


def run_keras(make):
    opt = make()
    ws = [w.copy() for w in W0]
    out = []
    for _ in range(STEPS):
        opt.apply(ws, grads_of(ws))
        out.append(np.concatenate(ws))
    return np.array(out)


# --------------------------------------------------------------------------
# 2. PyTorch cross-check (float64)
# --------------------------------------------------------------------------
try:
    import torch

    torch.set_default_dtype(torch.float64)  # also makes NAdam's mu_product and step counters float64
except ImportError:  # pragma: no cover
    torch = None


def run_torch(make, lr_at=None, clip=None):
    """make(params) -> torch optimizer. lr_at(iterations) sets the group lr
    before a step (legacy decay). clip(params) edits .grad before the step."""
    ps = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in W0]
    opt = make(ps)
    out = []
    for it in range(STEPS):
        with torch.no_grad():
            for p, c in zip(ps, C):
                p.grad = 2.0 * p.detach().clone() + torch.tensor(c)
        if clip is not None:
            clip(ps)
        if lr_at is not None:
            for grp in opt.param_groups:
                grp["lr"] = lr_at(it)
        opt.step()
        out.append(np.concatenate([p.detach().numpy().copy() for p in ps]))
    return np.array(out)


# --------------------------------------------------------------------------
# Cases: (name, nnlite spec, Keras-formula factory, torch check or reason)
# A torch check is (note, torch factory, keras factory to compare against,
# run_torch keyword arguments).
# --------------------------------------------------------------------------
T = torch.optim if torch is not None else None
EPS0 = "epsilon differs in placement (PyTorch: outside the sqrt / added to |g|); both run with eps=0"

CASES = [
    ("sgd", "SGD(learning_rate=0.1)",
     lambda: SGD(learning_rate=0.1),
     ("torch.optim.SGD(lr=0.1): same rule", lambda ps: T.SGD(ps, lr=0.1), None, {})),
    ("sgd_momentum", "SGD(learning_rate=0.1, momentum=0.9)",
     lambda: SGD(learning_rate=0.1, momentum=0.9),
     ("torch.optim.SGD(lr=0.1, momentum=0.9): buf = m*buf + g, w -= lr*buf; Keras' v = -lr*buf for constant lr",
      lambda ps: T.SGD(ps, lr=0.1, momentum=0.9), None, {})),
    ("sgd_nesterov", "SGD(learning_rate=0.1, momentum=0.9, nesterov=True)",
     lambda: SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
     ("torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True): w -= lr*(g + m*buf), same for constant lr",
      lambda ps: T.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), None, {})),
    ("sgd_decay", "SGD(learning_rate=0.1, decay=0.5)",
     lambda: SGD(learning_rate=0.1, decay=0.5),
     ("torch.optim.SGD with the group lr set to 0.1/(1+0.5*iterations) before each step",
      lambda ps: T.SGD(ps, lr=0.1), None, {"lr_at": lambda it: 0.1 / (1 + 0.5 * it)})),
    ("sgd_momentum_decay", "SGD(learning_rate=0.1, momentum=0.5, decay=0.5)",
     lambda: SGD(learning_rate=0.1, momentum=0.5, decay=0.5),
     "Keras formulas only: with a changing lr Keras' velocity (which carries lr) and PyTorch's buffer "
     "(which does not) differ"),
    ("rmsprop", "RMSprop",
     lambda: RMSprop(),
     ("torch.optim.RMSprop(lr=0.001, alpha=0.9, eps=0); " + EPS0,
      lambda ps: T.RMSprop(ps, lr=0.001, alpha=0.9, eps=0.0), lambda: RMSprop(epsilon=0.0), {})),
    ("rmsprop_centered_momentum", "RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, epsilon=1e-4, centered=True)",
     lambda: RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, epsilon=1e-4, centered=True),
     ("torch.optim.RMSprop(lr=0.01, alpha=0.8, momentum=0.5, centered=True, eps=0); PyTorch's buf "
      "(no lr) times lr is Keras' momentum slot for constant lr; " + EPS0,
      lambda ps: T.RMSprop(ps, lr=0.01, alpha=0.8, momentum=0.5, centered=True, eps=0.0),
      lambda: RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, centered=True, epsilon=0.0), {})),
    ("adagrad", "Adagrad(learning_rate=0.1)",
     lambda: Adagrad(learning_rate=0.1),
     ("torch.optim.Adagrad(lr=0.1, initial_accumulator_value=0.1, eps=0); " + EPS0,
      lambda ps: T.Adagrad(ps, lr=0.1, initial_accumulator_value=0.1, eps=0.0),
      lambda: Adagrad(learning_rate=0.1, epsilon=0.0), {})),
    ("adagrad_init", "Adagrad(learning_rate=0.2, initial_accumulator_value=0.5, epsilon=0.01)",
     lambda: Adagrad(learning_rate=0.2, initial_accumulator_value=0.5, epsilon=0.01),
     ("torch.optim.Adagrad(lr=0.2, initial_accumulator_value=0.5, eps=0); " + EPS0,
      lambda ps: T.Adagrad(ps, lr=0.2, initial_accumulator_value=0.5, eps=0.0),
      lambda: Adagrad(learning_rate=0.2, initial_accumulator_value=0.5, epsilon=0.0), {})),
    ("adadelta", "Adadelta(learning_rate=1.0)",
     lambda: Adadelta(learning_rate=1.0),
     ("torch.optim.Adadelta(lr=1.0, rho=0.95, eps=1e-7): same rule, eps in the same places",
      lambda ps: T.Adadelta(ps, lr=1.0, rho=0.95, eps=1e-7), None, {})),
    ("adam", "Adam",
     lambda: Adam(),
     ("torch.optim.Adam(lr=0.001, eps=0); PyTorch divides by sqrt(v)/sqrt(1-b2^t) + eps, "
      "Keras by sqrt(v) + eps; both run with eps=0",
      lambda ps: T.Adam(ps, lr=0.001, eps=0.0), lambda: Adam(epsilon=0.0), {})),
    ("adam_b1", "Adam(learning_rate=0.01, beta_1=0.8, epsilon=1e-3)",
     lambda: Adam(learning_rate=0.01, beta_1=0.8, epsilon=1e-3),
     ("torch.optim.Adam(lr=0.01, betas=(0.8, 0.999), eps=0); eps placement differs, both eps=0",
      lambda ps: T.Adam(ps, lr=0.01, betas=(0.8, 0.999), eps=0.0),
      lambda: Adam(learning_rate=0.01, beta_1=0.8, epsilon=0.0), {})),
    ("adam_amsgrad", "Adam(learning_rate=0.3, beta_2=0.5, amsgrad=True)",
     lambda: Adam(learning_rate=0.3, beta_2=0.5, amsgrad=True),
     ("torch.optim.Adam(lr=0.3, betas=(0.9, 0.5), amsgrad=True, eps=0); eps placement differs, both eps=0",
      lambda ps: T.Adam(ps, lr=0.3, betas=(0.9, 0.5), amsgrad=True, eps=0.0),
      lambda: Adam(learning_rate=0.3, beta_2=0.5, amsgrad=True, epsilon=0.0), {})),
    ("adamw", "AdamW(learning_rate=0.01, weight_decay=0.1, beta_1=0.8)",
     lambda: AdamW(learning_rate=0.01, weight_decay=0.1, beta_1=0.8),
     ("torch.optim.AdamW(lr=0.01, weight_decay=0.1, betas=(0.8, 0.999), eps=0): w *= 1 - lr*wd first, "
      "then Adam; eps placement differs, both eps=0",
      lambda ps: T.AdamW(ps, lr=0.01, weight_decay=0.1, betas=(0.8, 0.999), eps=0.0),
      lambda: AdamW(learning_rate=0.01, weight_decay=0.1, beta_1=0.8, epsilon=0.0), {})),
    ("adamw_default_wd", "AdamW(learning_rate=0.05)",
     lambda: AdamW(learning_rate=0.05),
     ("torch.optim.AdamW(lr=0.05, weight_decay=0.004, eps=0); eps placement differs, both eps=0",
      lambda ps: T.AdamW(ps, lr=0.05, weight_decay=0.004, eps=0.0),
      lambda: AdamW(learning_rate=0.05, epsilon=0.0), {})),
    ("adamax", "Adamax(learning_rate=0.1)",
     lambda: Adamax(learning_rate=0.1),
     ("torch.optim.Adamax(lr=0.1, eps=0); PyTorch uses max(b2*u, |g|+eps) and divides by u, Keras "
      "max(b2*u, |g|) and u+eps; both run with eps=0",
      lambda ps: T.Adamax(ps, lr=0.1, eps=0.0), lambda: Adamax(learning_rate=0.1, epsilon=0.0), {})),
    ("nadam", "Nadam(learning_rate=0.01)",
     lambda: Nadam(learning_rate=0.01),
     ("torch.optim.NAdam(lr=0.01, eps=1e-7, momentum_decay=1.0, foreach=True): PyTorch's "
      "mu_t = b1*(1-0.5*0.96^(t*momentum_decay)); momentum_decay=1 is Keras 3's schedule; eps placement "
      "is the same (foreach=True: torch 1.13's single-tensor path multiplies mu twice into mu_product_next)",
      lambda ps: T.NAdam(ps, lr=0.01, eps=1e-7, momentum_decay=1.0, foreach=True), None, {})),
    ("nadam_betas", "Nadam(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3)",
     lambda: Nadam(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3),
     ("torch.optim.NAdam(lr=0.02, betas=(0.8, 0.99), eps=1e-3, momentum_decay=1.0, foreach=True): same rule, eps in the same place",
      lambda ps: T.NAdam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-3, momentum_decay=1.0, foreach=True), None, {})),
    ("clipnorm", "SGD(learning_rate=0.1, clipnorm=2.0)",
     lambda: SGD(learning_rate=0.1, clipnorm=2.0),
     ("torch.nn.utils.clip_grad_norm_ on each tensor, then SGD; PyTorch divides by (norm + 1e-6), so "
      "agreement is only to ~1e-7 (not exact)",
      lambda ps: T.SGD(ps, lr=0.1), None,
      {"clip": lambda ps: [torch.nn.utils.clip_grad_norm_([p], 2.0) for p in ps]})),
    ("clipvalue", "SGD(learning_rate=0.1, clipvalue=1.5)",
     lambda: SGD(learning_rate=0.1, clipvalue=1.5),
     ("torch.nn.utils.clip_grad_value_(1.5), then SGD: same rule",
      lambda ps: T.SGD(ps, lr=0.1), None, {"clip": lambda ps: torch.nn.utils.clip_grad_value_(ps, 1.5)})),
    ("global_clipnorm", "SGD(learning_rate=0.1, global_clipnorm=3.0)",
     lambda: SGD(learning_rate=0.1, global_clipnorm=3.0),
     ("torch.nn.utils.clip_grad_norm_ over both tensors, then SGD; PyTorch divides by (norm + 1e-6), so "
      "agreement is only to ~1e-7 (not exact)",
      lambda ps: T.SGD(ps, lr=0.1), None, {"clip": lambda ps: torch.nn.utils.clip_grad_norm_(ps, 3.0)})),
]


def sanity_checks():
    """The cases must exercise what they are named after, with margins."""
    ok = True

    def need(cond, what):
        nonlocal ok
        print(("  ok    " if cond else "  FAIL  ") + what)
        ok = ok and cond

    print("// Sanity checks of the chosen hyperparameters:")
    # amsgrad must change the result (v decreases somewhere at step 2 or 3)
    d = np.max(np.abs(run_keras(lambda: Adam(learning_rate=0.3, beta_2=0.5, amsgrad=True))
                      - run_keras(lambda: Adam(learning_rate=0.3, beta_2=0.5))))
    need(d > 1e-3, "amsgrad changes the weights by %.3g" % d)
    # clipping: report norms / values at each step and their margin to the threshold
    for name, kind, c in (("clipnorm", "norm", 2.0), ("clipvalue", "value", 1.5), ("global_clipnorm", "global", 3.0)):
        opt = SGD(learning_rate=0.1, **{name: c})
        ws = [w.copy() for w in W0]
        clipped_any = False
        for step in range(STEPS):
            gs = grads_of(ws)
            if kind == "norm":
                xs = [np.sqrt(np.sum(g * g)) for g in gs]
            elif kind == "global":
                xs = [np.sqrt(sum(np.sum(g * g) for g in gs))]
            else:
                xs = list(np.abs(np.concatenate(gs)))
            margin = min(abs(x - c) / c for x in xs)
            clipped_any = clipped_any or any(x > c for x in xs)
            need(margin > 0.02, "%s step %d: %s vs %g (closest %.1f%% away)"
                 % (name, step + 1, " ".join("%.4f" % x for x in xs), c, 100 * margin))
            opt.apply(ws, gs)
        need(clipped_any, name + " clips something")
    # Adamax: the max must pick b2*u somewhere (|g| shrinks)
    opt = Adamax(learning_rate=0.1)
    ws = [w.copy() for w in W0]
    picked = False
    for step in range(STEPS):
        gs = grads_of(ws)
        if opt.state is not None:
            picked = picked or any(np.any(opt.b2 * s["u"] > np.abs(g)) for s, g in zip(opt.state, gs))
        opt.apply(ws, gs)
    need(picked, "Adamax: max(b2*u, |g|) takes b2*u for some weight")
    return ok


def cxx(a):
    rows = ["    {" + ", ".join("%.10g" % x for x in row) + "}" for row in a]
    return "{\n" + ",\n".join(rows) + "}"


def main():
    ok = sanity_checks()
    print()
    for name, spec, make, check in CASES:
        ref = run_keras(make)
        print("// %s: \"%s\"" % (name, spec))
        print("static const double EXPECT_%s[3][5] = %s;" % (name.upper(), cxx(ref)))
        if isinstance(check, str):
            print("//   PyTorch: n/a. " + check)
        elif torch is None:
            print("//   PyTorch: not installed, cross-check skipped")
        else:
            note, tmake, kmake, kw = check
            got = run_torch(tmake, **kw)
            other = run_keras(kmake) if kmake is not None else ref
            diff = np.max(np.abs(got - other))
            tol = 1e-6 if name in ("clipnorm", "global_clipnorm") else 1e-12
            status = "agrees" if diff < tol else "DISAGREES"
            ok = ok and diff < tol
            print("//   PyTorch: %s, max |diff| = %.2g. %s" % (status, diff, note))
            if kmake is not None:
                print("//   (this case's epsilon vs eps=0 in the Keras formulas moves the weights by at most %.2g)"
                      % np.max(np.abs(ref - other)))
        print()
    # Nadam with the older 0.96^(0.004 t) schedule, for comparison only
    for lr, kw in ((0.01, {}), (0.02, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3})):
        legacy = run_keras(lambda: Nadam(learning_rate=lr, schedule=0.004, **kw))
        print("// NOT Keras 3: Nadam(learning_rate=%g, %s) with the tf.keras <= 2.10 / PyTorch default "
              "schedule u_t = b1*(1-0.5*0.96^(0.004 t))" % (lr, kw))
        print("//   %s" % cxx(legacy).replace("\n", "\n//   "))
        if torch is not None:
            got = run_torch(lambda ps: T.NAdam(ps, lr=lr, betas=(kw.get("beta_1", 0.9), kw.get("beta_2", 0.999)),
                                              eps=kw.get("epsilon", 1e-7), momentum_decay=0.004, foreach=True))
            print("//   PyTorch NAdam(momentum_decay=0.004, foreach=True): max |diff| = %.2g"
                  % np.max(np.abs(got - legacy)))
        print()
    print("// all checks passed" if ok else "// SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
