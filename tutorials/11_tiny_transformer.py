# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Training a tiny transformer block
#
# Everything so far comes together: embeddings, a positional encoding, multi-head attention,
# layer normalization, a feed-forward network, residual connections, a cross-entropy loss and
# Adam. We train one transformer block on a task that *cannot* be solved without attention,
# watch the loss go down, check the accuracy on sequences it never saw, and look inside the
# attention to see the algorithm it found.
#
# **The task: reverse a sequence of digits.** Input `3 1 4 1 5 9`, target `9 5 1 4 1 3`.
# The output at position $p$ is the input at position $n - 1 - p$, so every position must
# fetch information from another position chosen by *where* it is. A per-position network
# (no attention) can do no better than guessing, about 10% accuracy.

# %%
import inspect
import os
import time

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha import plotting
from tinygrad_mha.layers import Dense, Embedding, LayerNormalization, Model, PositionalEncoding

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")

VOCAB, LENGTH = 10, 6
D_MODEL, HEADS, D_FF = 32, 2, 64
STEPS, BATCH = (200, 32) if SMALL else (600, 32)
tm.set_seed(0)
rng = np.random.default_rng(0)


def make_batch(n, rng):
    """n random digit sequences and their reversals, as int arrays (n, LENGTH)."""
    x = rng.integers(0, VOCAB, size=(n, LENGTH))
    return x, x[:, ::-1].copy()


x_train, y_train = make_batch(STEPS * BATCH // 4, rng)   # each sequence is seen about 4 times
x_test, y_test = make_batch(1000, np.random.default_rng(1))
print("example:", x_train[0], "->", y_train[0])

# %% [markdown]
# ## 1. The block
#
# With token ids $t_1..t_n$, the model computes (post-norm, as in the original transformer):
#
# $$X_0 = E[t] + PE, \qquad
#   X_1 = \mathrm{LayerNorm}\big(X_0 + \mathrm{MHA}(X_0, X_0)\big), \qquad
#   X_2 = \mathrm{LayerNorm}\big(X_1 + W_2\,\mathrm{relu}(W_1 X_1 + b_1) + b_2\big),$$
# $$\text{logits} = X_2 W_{out} + b_{out}, \qquad
#   L = -\frac{1}{Bn}\sum_{b,p} \log \mathrm{softmax}(\text{logits}_{bp})_{y_{bp}} .$$
#
# * **Positional encoding** $PE_{p,2i} = \sin(p/10000^{2i/d})$, $PE_{p,2i+1} = \cos(\cdot)$:
#   attention alone is blind to order (permuting the keys permutes nothing in the output), so
#   the position is added to each token's vector.
# * **Residual connections** $X + f(X)$ give the gradient a direct path:
#   $\partial (X + f(X))/\partial X = I + \partial f/\partial X$.
# * **Layer normalization** rescales each position's vector to mean 0, variance 1, then
#   applies a learned scale $\gamma$ and shift $\beta$:
#   $\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta$.
#   The library writes it with Tensor ops, so its gradient is the engine's:

# %%
print(inspect.getsource(LayerNormalization.call))


# %% [markdown]
# The model is a `Model` subclass (a `Layer` with `fit`/`predict`/`evaluate`): create the
# sub-layers in `__init__`, write the forward pass in `call`. Sub-layers assigned as
# attributes are tracked, so `model.weights` lists all of them.

# %%
class TinyTransformer(Model):
    def __init__(self, dtype="float32"):
        super().__init__(dtype=dtype)
        self.embed = Embedding(VOCAB, D_MODEL, dtype=dtype)
        self.position = PositionalEncoding(dtype=dtype)
        self.attention = tm.MultiHeadAttention(num_heads=HEADS, key_dim=D_MODEL // HEADS,
                                               dtype=dtype)
        self.norm1 = LayerNormalization(dtype=dtype)
        self.ff1 = Dense(D_FF, activation="relu", dtype=dtype)
        self.ff2 = Dense(D_MODEL, dtype=dtype)
        self.norm2 = LayerNormalization(dtype=dtype)
        self.classifier = Dense(VOCAB, dtype=dtype)

    def call(self, tokens, training=None, return_attention_scores=False):
        x0 = self.position(self.embed(tokens))
        attended, scores = self.attention(x0, x0, training=training, return_attention_scores=True)
        x1 = self.norm1(x0 + attended)
        x2 = self.norm2(x1 + self.ff2(self.ff1(x1)))
        logits = self.classifier(x2)
        return (logits, scores) if return_attention_scores else logits


model = TinyTransformer()
with tm.no_grad():
    model(x_train[:2])                      # build every sub-layer
print(f"{len(model.weights)} weight tensors, {sum(w.size for w in model.weights)} numbers:")
for w in model.weights:
    print(f"  {w.name:28s} {w.shape}")

# %% [markdown]
# ## 2. Gradients first
#
# Before training anything, prove the gradients of the whole model. A float64 copy with the
# same weights goes through `gradcheck` in fast mode (tutorial 07: one random direction per
# weight tensor, so the cost does not grow with the number of weights).

# %%
model64 = TinyTransformer(dtype="float64")
with tm.no_grad():
    model64(x_train[:2])
model64.set_weights(model.get_weights())
tokens = x_train[:3]
model_grads_ok = tm.gradcheck(lambda *weights: model64(tokens), model64.weights, fast=True)
print("gradcheck of all", len(model64.weights), "weight tensors:", model_grads_ok)

# %% [markdown]
# ## 3. Training
#
# `fit` runs the loop of tutorial 10 for us: batch, forward with `training=True`, loss plus
# `model.losses`, `zero_grad`, `backward`, `opt.step()`. The loss is the softmax cross-entropy
# from logits ("sparse": the labels are class ids). Its gradient with respect to the logits is
# the famous $\mathrm{softmax}(\text{logits}) - \text{onehot}(y)$ (divided by $Bn$).

# %%
before = model.evaluate(x_test, y_test, loss="sparse_categorical_crossentropy")
start = time.perf_counter()
history = model.fit(x_train, y_train, loss="sparse_categorical_crossentropy",
                    optimizer=lambda params: tm.optimizers.Adam(params, learning_rate=3e-3),
                    steps=STEPS, batch_size=BATCH, metrics=["accuracy"], seed=0,
                    progress=not SMALL)
train_seconds = time.perf_counter() - start
after = model.evaluate(x_test, y_test, loss="sparse_categorical_crossentropy")
print(f"trained {STEPS} steps in {train_seconds:.1f} s")
print(f"test loss {before['loss']:.3f} -> {after['loss']:.4f}, "
      f"test accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}")
print("example:", x_test[0], "->", model.predict(x_test[:1]).argmax(-1)[0], " target", y_test[0])

# %% [markdown]
# ## 4. What did attention learn?
#
# To reverse, the query at position $p$ should attend to the key at position $n - 1 - p$:
# the *anti-diagonal* of the attention matrix. Averaged over the test set, here is how much
# probability each head puts there (the heads may split the work, so we also take, for each
# query, the larger of the two heads). Uniform attention would put $1/n = 1/6$ there.

# %%
with tm.no_grad():
    _, scores = model(x_test, return_attention_scores=True)
scores = scores.numpy()                                         # (B, heads, T, S)
anti = np.eye(LENGTH)[::-1].astype(bool)
per_head = scores[:, :, anti].mean(axis=(0, 2))
best_head = scores[:, :, anti].max(axis=1).mean()
print("attention mass on the anti-diagonal, per head:", per_head.round(3),
      " best head per query:", round(float(best_head), 3))

# %%
curve = plotting.loss_curve(history, title="tiny transformer: reversing 6 digits")
plotting.show(curve, "loss_curve")
heat = plotting.attention_heatmaps(scores, title="attention of the first test sequence",
                                   queries=x_test[0], keys=x_test[0])
plotting.show(heat, "attention")

# %% [markdown]
# ## 5. Attention is necessary: the same block without it
#
# Drop the attention sub-layer and the remaining network sees each position alone: its
# own digit and its own position. For random digits the target at position $p$, the digit
# at $n - 1 - p$, is independent of both, so no amount of training can beat guessing: 10%.
# (A third of the steps is plenty to show it.)

# %%
class NoAttention(TinyTransformer):
    def call(self, tokens, training=None):
        x0 = self.position(self.embed(tokens))
        x1 = self.norm1(x0)
        return self.classifier(self.norm2(x1 + self.ff2(self.ff1(x1))))


baseline = NoAttention()
with tm.no_grad():
    baseline(x_train[:2])
baseline.fit(x_train, y_train, loss="sparse_categorical_crossentropy",
             optimizer=lambda params: tm.optimizers.Adam(params, learning_rate=3e-3),
             steps=STEPS // 3, batch_size=BATCH, seed=0, progress=False)
baseline_accuracy = baseline.evaluate(x_test, y_test)["accuracy"]
print(f"without attention: test accuracy {baseline_accuracy:.1%}")

# %% [markdown]
# ## Check: what this tutorial taught
#
# The accuracy is measured against the true reversal (`x[:, ::-1]`) of 1000 sequences the
# model never saw; the loss must fall by a large factor; attention must concentrate on the
# anti-diagonal; and without attention the task stays at chance.

# %%
losses = np.array(history["loss"])
assert model_grads_ok
assert losses[-20:].mean() < 0.1 * losses[:5].mean(), "the training loss must fall at least 10x"
assert after["loss"] < 0.1 * before["loss"]
predictions = model.predict(x_test).argmax(-1)
accuracy = float((predictions == x_test[:, ::-1]).mean())
assert abs(accuracy - after["accuracy"]) < 1e-12
assert accuracy >= (0.90 if SMALL else 0.98), f"test accuracy {accuracy:.1%} is too low"
assert best_head > 0.4, "attention should point at position n-1-p (uniform would give 1/6)"
assert baseline_accuracy < 0.2, "without attention the model must stay near chance (10%)"
assert curve.axes and heat.axes  # both figures were drawn
print(f"all checks passed (test accuracy {accuracy:.1%})")
