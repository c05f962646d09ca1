"""MultiHeadAttention with the semantics of ``keras.layers.MultiHeadAttention`` (Keras 3.15).

The computation, for inputs of shape (B, *index_dims, features):

1. project query, key and value with EinsumDense layers to (B, *index_dims, heads, dim);
2. scale the query by 1/sqrt(key_dim) and take dot products over ``dim``, giving scores of
   shape (batch dims, heads, query attention dims, key attention dims), where "batch dims"
   are B and every index axis that is not an attention axis;
3. softmax jointly over the key attention dims, with masked pairs removed;
4. dropout on those probabilities (training only), weigh the values, project to the output.

Masks are combined into one boolean array laid out like the scores (size-1 axes broadcast).
A query position that may see no key at all gets all-zero probabilities, so its output is
just the output bias. Keras gives zeros on its explicit-softmax path but a uniform row on
its fused path; we give zeros on every path.

Two paths compute steps 2-4: the fused dense node (ops/attention.py), which forms the scores,
and, for long sequences or ``flash_attention=True``, the blocked kernel
(kernels/blocked_attention.py), which never does; they agree to float rounding, dropout mask
included. ``flash_attention=None`` picks the blocked one when the probabilities are not
requested and T * S is at least ``AUTO_MIN_SCORES`` (measured); under ``tm.use_kernels(False)``
the dense path always runs.
"""

from __future__ import annotations

import math
import numbers
import string

import numpy as np

from .. import backend, constraints, initializers, regularizers
from ..kernels import blocked_attention, kernels_enabled
from ..ops import attention
from ..tensor import Tensor
from .base import Layer, weight_settings_config
from ._checks import ArgumentTypeError
from .einsum_dense import EinsumDense


def _positive_int(value, name, optional=False):
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        wrong_type = isinstance(value, bool) or not isinstance(value, numbers.Integral)
        raise (ArgumentTypeError if wrong_type else ValueError)(
            f"MultiHeadAttention: {name} must be a positive integer"
            f"{' or None' if optional else ''}, got {name}={value!r}")
    return int(value)


def _clone(init):
    """A fresh initializer from the same config, so each sub-layer draws its own values."""
    return init.clone() if hasattr(init, "clone") else init


def _projection_equation(free: int, bound: int, new: int) -> tuple[str, str]:
    """Einsum for a projection: ``free`` axes kept, ``bound`` contracted, ``new`` created.

    (2, 1, 2) gives ("abc,cde->abde", "de"): (B, T, F) x (F, H, D) -> (B, T, H, D).
    """
    letters = string.ascii_lowercase
    kept, summed = letters[:free], letters[free:free + bound]
    made = letters[free + bound:free + bound + new]
    return f"{kept}{summed},{summed}{made}->{kept}{made}", made


class MultiHeadAttention(Layer):
    """Multi-head scaled dot-product attention, Keras-compatible (weights, shapes, masks)."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_shape=None, attention_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 use_gate=False, sliding_window=None, flash_attention=None, seed=None, name=None,
                 dtype="float32"):
        heads = _positive_int(num_heads, "num_heads")
        kdim = _positive_int(key_dim, "key_dim")
        vdim = _positive_int(value_dim, "value_dim", optional=True)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise ArgumentTypeError("MultiHeadAttention: dropout must be a number in [0, 1), got "
                                    f"dropout={dropout!r}")
        if not 0 <= dropout < 1:
            raise ValueError("MultiHeadAttention: dropout must be a number in [0, 1), got "
                             f"dropout={dropout!r}")
        for flag, value in (("use_bias", use_bias), ("use_gate", use_gate)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"MultiHeadAttention: {flag} must be a bool, got {flag}={value!r}")
        if output_shape is not None:
            if isinstance(output_shape, numbers.Integral) and not isinstance(output_shape, bool):
                output_shape = (output_shape,)
            if not isinstance(output_shape, (tuple, list)) or not output_shape:
                error = ValueError if isinstance(output_shape, (tuple, list)) else ArgumentTypeError
                raise error("MultiHeadAttention: output_shape must be an int, or a non-empty tuple "
                            f"or list of ints, got output_shape={output_shape!r}")
            output_shape = tuple(_positive_int(n, "output_shape entries") for n in output_shape)
        if attention_axes is not None:
            if (isinstance(attention_axes, numbers.Integral)
                    and not isinstance(attention_axes, bool)):
                attention_axes = (attention_axes,)
            if not isinstance(attention_axes, (tuple, list)) or not attention_axes or any(
                    isinstance(a, bool) or not isinstance(a, numbers.Integral)
                    for a in attention_axes):
                empty = isinstance(attention_axes, (tuple, list)) and not attention_axes
                raise (ValueError if empty else ArgumentTypeError)(
                    "MultiHeadAttention: attention_axes must be an int, or a non-empty tuple "
                    f"or list of ints, got attention_axes={attention_axes!r}")
            attention_axes = tuple(int(a) for a in attention_axes)
        sliding_window = _positive_int(sliding_window, "sliding_window", optional=True)
        if flash_attention is not None and not isinstance(flash_attention, (bool, np.bool_)):
            raise ArgumentTypeError("MultiHeadAttention: flash_attention must be None "
                                    "(automatic), True or False, got "
                                    f"flash_attention={flash_attention!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError("MultiHeadAttention: seed must be a non-negative int or None, got "
                             f"seed={seed!r}")
        # Resolve every identifier before touching self, so a bad one leaves nothing half-made.
        resolved = dict(
            kernel_initializer=initializers.get(kernel_initializer),
            bias_initializer=initializers.get(bias_initializer),
            kernel_regularizer=regularizers.get(kernel_regularizer),
            bias_regularizer=regularizers.get(bias_regularizer),
            activity_regularizer=regularizers.get(activity_regularizer),
            kernel_constraint=constraints.get(kernel_constraint),
            bias_constraint=constraints.get(bias_constraint))
        super().__init__(name=name, dtype=dtype)

        self.num_heads, self.key_dim, self.value_dim = heads, kdim, vdim or kdim
        self.dropout = float(dropout)
        self.use_bias, self.use_gate = bool(use_bias), bool(use_gate)
        self.output_shape = output_shape
        self.attention_axes = attention_axes
        self.sliding_window = sliding_window
        self.flash_attention = None if flash_attention is None else bool(flash_attention)
        self.seed = None if seed is None else int(seed)
        self._sub = resolved  # the sub-layers' initializers, regularizers and constraints
        self._dropout_rng = None

    # ------------------------------------------------------------ shapes and axes
    def _normalized_axes(self, rank: int) -> tuple[int, ...]:
        """Attention axes as non-negative input axes, checked against the input rank."""
        if self.attention_axes is None:
            return tuple(range(1, rank - 1))
        axes = []
        for a in self.attention_axes:
            b = a + rank if a < 0 else a  # negative axes count from the input's rank
            if not 0 <= b < rank:
                raise ValueError(f"MultiHeadAttention: attention axis {a} is out of range for "
                                 f"inputs of rank {rank}; valid axes are 1..{rank - 2} (or "
                                 f"{1 - rank}..-2)")
            if b == 0 or b == rank - 1:
                raise ValueError(f"MultiHeadAttention: attention axis {a} is the "
                                 f"{'batch' if b == 0 else 'feature'} axis of inputs of rank "
                                 f"{rank}; attention runs over index axes 1..{rank - 2} only")
            if b in axes:
                raise ValueError(f"MultiHeadAttention: attention_axes={self.attention_axes} names "
                                 f"axis {b} twice")
            axes.append(b)
        return tuple(axes)

    def _check_shapes(self, q_shape, v_shape, k_shape) -> tuple[int, ...]:
        """Validate the three input shapes together; return the attention axes."""
        for name, shape in (("query", q_shape), ("value", v_shape), ("key", k_shape)):
            if len(shape) < 3:
                raise ValueError(f"MultiHeadAttention: {name} must have rank >= 3 "
                                 f"(batch, ..., features), got shape {tuple(shape)}")
        if not len(q_shape) == len(v_shape) == len(k_shape):
            raise ValueError("MultiHeadAttention: query, value and key must have the same rank, "
                             f"got shapes {tuple(q_shape)}, {tuple(v_shape)} and {tuple(k_shape)}")
        if tuple(v_shape[:-1]) != tuple(k_shape[:-1]):
            raise ValueError("MultiHeadAttention: value and key must agree on every axis but the "
                             f"last, got value shape {tuple(v_shape)} and key shape "
                             f"{tuple(k_shape)}")
        axes = self._normalized_axes(len(q_shape))
        for a in range(len(q_shape) - 1):
            if a not in axes and q_shape[a] != v_shape[a]:
                raise ValueError(f"MultiHeadAttention: query and value must agree on axis {a} (a "
                                 f"batch axis, not an attention axis), got shapes {tuple(q_shape)} "
                                 f"and {tuple(v_shape)}")
        return axes

    # ------------------------------------------------------------ build
    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._axes = self._check_shapes(query_shape, value_shape, key_shape)
        rank = len(query_shape)
        sub = self._sub

        def dense(name, n_out, shape, activation=None, bound=1, out=None):
            equation, bias_axes = _projection_equation(rank - 1, bound, len(out or (0, 0)))
            layer = EinsumDense(
                equation, [None] * (rank - 2) + list(out or (self.num_heads, n_out)),
                activation=activation, bias_axes=bias_axes if self.use_bias else None,
                kernel_initializer=_clone(sub["kernel_initializer"]),
                bias_initializer=_clone(sub["bias_initializer"]),
                kernel_regularizer=sub["kernel_regularizer"],
                bias_regularizer=sub["bias_regularizer"],
                activity_regularizer=sub["activity_regularizer"],
                kernel_constraint=sub["kernel_constraint"], bias_constraint=sub["bias_constraint"],
                name=name, dtype=self.dtype)
            layer.device = self.device
            layer.build(tuple(shape))
            return layer

        # Creation order is weight order: query, key, (gate), value, output, as in Keras.
        # All are made before any is attached, so a failing initializer leaves the layer as it was.
        made = {"query_dense": dense("query", self.key_dim, query_shape),
                "key_dense": dense("key", self.key_dim, key_shape)}
        made["gate_dense"] = (dense("gate", self.value_dim, query_shape, "sigmoid")
                              if self.use_gate else None)
        made["value_dense"] = dense("value", self.value_dim, value_shape)
        context_shape = tuple(query_shape[:-1]) + (self.num_heads, self.value_dim)
        made["output_dense"] = dense("attention_output", None, context_shape, bound=2,
                                     out=self.output_shape or (query_shape[-1],))
        for attribute, layer in made.items():
            setattr(self, attribute, layer)
        self._build_equations(rank)
        self.built = True

    def _build_equations(self, rank: int) -> None:
        """The two attention einsums for projected tensors of rank ``rank + 1``.

        Projected query/key/value are (B, *index_dims, H, D). Key attention axes get fresh
        letters; every other axis but D is a batch axis of the scores.
        """
        r = rank + 1
        letters = iter(string.ascii_lowercase)
        target = [next(letters) for _ in range(r)]
        source = [next(letters) if i in self._axes else c for i, c in enumerate(target)]
        batch = [i for i in range(r - 1) if i not in self._axes]  # includes B and the head axis
        scores = "".join([target[i] for i in batch] + [target[i] for i in self._axes]
                         + [source[i] for i in self._axes])
        self._dot_equation = f"{''.join(source)},{''.join(target)}->{scores}"
        self._combine_equation = f"{scores},{''.join(source)}->{''.join(target)}"
        self._softmax_axes = tuple(range(len(scores) - len(self._axes), len(scores)))

    # ------------------------------------------------------------ masks
    def _to_bool_mask(self, mask, name: str):
        if isinstance(mask, Tensor):
            if mask.device != self.device:
                raise ValueError(f"MultiHeadAttention: {name} is on {mask.device!r} but the layer "
                                 f"is on {self.device!r}")
            mask = mask.data
        if not (backend.is_cupy_array(mask) or isinstance(mask, np.ndarray)):
            try:
                mask = np.asarray(mask)
            except ValueError as exc:  # a ragged nested list
                raise ValueError(f"MultiHeadAttention: {name} must be a rectangular array: "
                                 f"{exc}") from exc
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"MultiHeadAttention: {name} must be boolean or 0/1 numbers, got dtype "
                            f"{mask.dtype}")
        if mask.dtype.kind in "if" and mask.size and not bool((mask >= 0).all()):  # NaN fails too
            raise ValueError(f"MultiHeadAttention: {name} must hold True/False or 0/1 (nonzero = "
                             "attend), got negative or NaN values; an additive mask (0 / -inf) "
                             "would be read backwards here: pass (mask == 0) instead")
        mask = backend.to_device(mask, self.device)
        return mask if mask.dtype == bool else mask != 0

    def _attention_mask(self, q_shape, v_shape, axes, attention_mask, query_mask, value_mask,
                        key_mask, use_causal_mask, blocked=False):
        """Every mask ANDed into one boolean array shaped (or broadcastable) like the scores.

        ``blocked``: the list of parts instead, not ANDed (each stays its own small shape) and
        without the causal and sliding-window bands, which the blocked kernel makes per block.
        """
        if (attention_mask is None and query_mask is None and value_mask is None
                and key_mask is None
                and (blocked or (not use_causal_mask and self.sliding_window is None))):
            # the common case, without building the position grids below
            return [] if blocked else None
        rank = len(q_shape)
        batch_axes = [a for a in range(rank - 1) if a not in axes]
        batch_shape = tuple(q_shape[a] for a in batch_axes)
        t_shape = tuple(q_shape[a] for a in axes)
        s_shape = tuple(v_shape[a] for a in axes)
        scores_shape = batch_shape + (self.num_heads,) + t_shape + s_shape
        k, n_batch = len(axes), len(batch_shape)
        xp = backend.xp_for(self.device)
        parts = []

        if attention_mask is not None:
            m = self._to_bool_mask(attention_mask, "attention_mask")
            if not 2 * k <= m.ndim <= len(scores_shape):
                raise ValueError(
                    f"MultiHeadAttention: attention_mask of shape {tuple(m.shape)} must have "
                    f"between {2 * k} and {len(scores_shape)} axes to match the attention scores "
                    f"of shape {scores_shape} (batch dims, heads, query attention dims, key "
                    "attention dims)")
            # Like Keras: missing axes (batch, heads) are inserted before the query block.
            cut = m.ndim - 2 * k
            expanded = m.reshape(m.shape[:cut] + (1,) * (len(scores_shape) - m.ndim)
                                 + m.shape[cut:])
            if any(n not in (1, want) for n, want in zip(expanded.shape, scores_shape)):
                raise ValueError(
                    f"MultiHeadAttention: attention_mask of shape {tuple(m.shape)} does not "
                    f"broadcast to the attention scores of shape {scores_shape} (batch dims, "
                    "heads, query attention dims, key attention dims); e.g. "
                    f"{scores_shape[:n_batch] + t_shape + s_shape} works")
            parts.append(expanded)

        def place(mask, name, shape, is_query):
            m = self._to_bool_mask(mask, name)
            expected = tuple(shape[:-1])
            if m.ndim != len(expected) or any(n not in (1, e) for n, e in zip(m.shape, expected)):
                raise ValueError(f"MultiHeadAttention: {name} must have shape {expected} (the "
                                 f"input's shape without features), got {tuple(m.shape)}")
            m = m.transpose(batch_axes + list(axes))
            head = (1,) if is_query else (1,) * (1 + k)
            tail = (1,) * k if is_query else ()
            return m.reshape(m.shape[:n_batch] + head + m.shape[n_batch:] + tail)

        if query_mask is not None:
            parts.append(place(query_mask, "query_mask", q_shape, True))
        for name, mask in (("value_mask", value_mask), ("key_mask", key_mask)):
            if mask is not None:
                parts.append(place(mask, name, v_shape, False))
        if blocked:
            return parts

        # Causal and sliding-window masks compare flattened (row-major) positions, which for
        # one attention axis is the usual lower-triangular band, aligned top-left.
        t_pos = xp.arange(math.prod(t_shape)).reshape(-1, 1)
        s_pos = xp.arange(math.prod(s_shape)).reshape(1, -1)
        band_shape = (1,) * (n_batch + 1) + t_shape + s_shape
        if use_causal_mask:
            parts.append((t_pos >= s_pos).reshape(band_shape))
        if self.sliding_window is not None:
            parts.append((abs(t_pos - s_pos) < self.sliding_window).reshape(band_shape))

        if not parts:
            return None
        combined = parts[0]
        for p in parts[1:]:
            combined = combined & p
        return combined

    # ------------------------------------------------------------ call
    def __call__(self, query, value, key=None, attention_mask=None, return_attention_scores=False,
                 training=None, use_causal_mask=False, query_mask=None, value_mask=None,
                 key_mask=None):
        return super().__call__(query, value, key=key, attention_mask=attention_mask,
                                return_attention_scores=return_attention_scores, training=training,
                                use_causal_mask=use_causal_mask, query_mask=query_mask,
                                value_mask=value_mask, key_mask=key_mask)

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False,
             training=None, use_causal_mask=False, query_mask=None, value_mask=None,
             key_mask=None):
        if training is not None and not isinstance(training, (bool, np.bool_)):
            raise TypeError("MultiHeadAttention: training must be True, False or None, "
                            f"got {training!r}")
        query = self._as_input(query, "query")
        value = self._as_input(value, "value")
        key = value if key is None else self._as_input(key, "key")
        # Everything is validated before the first call builds the layer. (No shape cache:
        # these checks cost about 3 us, under 0.5% of the small benchmark step.)
        axes = self._check_shapes(query.shape, value.shape, key.shape)
        if self.built:
            self.query_dense.check_input_shape(query.shape, "query")
            # value before key: key defaults to value
            self.value_dense.check_input_shape(value.shape, "value")
            self.key_dense.check_input_shape(key.shape, "key")
        blocked = self._use_blocked(query.shape, value.shape, axes, return_attention_scores)
        mask = self._attention_mask(query.shape, value.shape, axes, attention_mask, query_mask,
                                    value_mask, key_mask, bool(use_causal_mask), blocked)
        if not self.built:
            self.build(query.shape, value.shape, key.shape)

        gate = self.gate_dense(query) if self.use_gate else None
        q = self.query_dense(query)
        k = self.key_dense(key)
        v = self.value_dense(value)
        if blocked:
            context = self._blocked_context(q, k, v, mask, bool(use_causal_mask), training)
        else:
            # One graph node for scores, softmax, dropout and context (see ops/attention.py); the
            # 1/sqrt(key_dim) scale goes onto the (B, T, H, D) query, not the larger scores.
            context = attention(q, k, v, self._dot_equation, self._combine_equation,
                                axis=self._softmax_axes, scale=1.0 / math.sqrt(self.key_dim),
                                mask=mask,
                                dropout_rate=self.dropout if training else 0.0,
                                seed=self._generator() if training and self.dropout > 0 else None,
                                return_probs=bool(return_attention_scores))
        if return_attention_scores:
            context, probs = context
        if gate is not None:
            context = context * gate
        out = self.output_dense(context)
        return (out, probs) if return_attention_scores else out

    def _use_blocked(self, q_shape, v_shape, axes, return_attention_scores) -> bool:
        """Whether this call runs the blocked (flash) kernel; see ``flash_attention``."""
        if self.flash_attention and return_attention_scores:
            raise ValueError("MultiHeadAttention: return_attention_scores=True needs the attention "
                             "probabilities, which flash_attention=True never forms; use "
                             "flash_attention=None or False to get them")
        if return_attention_scores or self.flash_attention is False or not kernels_enabled():
            return False
        if self.flash_attention:
            return True
        scores = math.prod(q_shape[a] for a in axes) * math.prod(v_shape[a] for a in axes)
        return scores >= blocked_attention.AUTO_MIN_SCORES

    def _blocked_context(self, q, k, v, masks, causal, training):
        """The context from the blocked kernel: projected (B, *index, H, D) in and out."""
        r = q.ndim
        batch = [i for i in range(r - 1) if i not in self._axes]  # B, other index axes, heads
        perm = tuple(batch + list(self._axes) + [r - 1])
        layout = (perm, perm, perm, tuple(q.shape[i] for i in batch),
                  tuple(q.shape[i] for i in self._axes), tuple(k.shape[i] for i in self._axes))
        rate = self.dropout if training else 0.0
        # one key per call from the same stream as the dense path, so both draw the same mask
        key = backend.random_key(self._generator()) if rate > 0 else None
        return blocked_attention.blocked_attention(
            q, k, v, layout, scale=1.0 / math.sqrt(self.key_dim), masks=masks, causal=causal,
            window=self.sliding_window, rate=rate, random_key=key)

    def _generator(self):
        """The layer's own dropout stream when seeded (advancing each call, as Keras'), else
        shared."""
        if self.seed is None:
            return None
        if self._dropout_rng is None:
            # a host stream: each call draws one key from it, so masks match across devices
            self._dropout_rng = backend.make_generator(self.seed)
        return self._dropout_rng

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        self._check_shapes(query_shape, value_shape,
                           value_shape if key_shape is None else key_shape)
        return tuple(query_shape[:-1]) + (self.output_shape or (query_shape[-1],))

    # ------------------------------------------------------------ config
    def get_config(self) -> dict:
        sub = self._sub
        return {
            "name": self.name, "dtype": str(self.dtype),
            "num_heads": self.num_heads, "key_dim": self.key_dim, "value_dim": self.value_dim,
            "dropout": self.dropout, "use_bias": self.use_bias, "use_gate": self.use_gate,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "attention_axes": None if self.attention_axes is None else list(self.attention_axes),
            "sliding_window": self.sliding_window,
            "flash_attention": self.flash_attention,
            **weight_settings_config(sub, "kernel", "bias"),
            "activity_regularizer": regularizers.serialize(sub["activity_regularizer"]),
            "seed": self.seed,
        }
