"""What each exercise must do and how it is checked, one ``_grade_<name>`` function each.

Every check draws its inputs from the ``rng`` it is given and compares the learner's answer
with an independent reference computed here and now:

* gradients against central finite differences of ``sum(f(inputs) * g)`` (``numerical_vjp``);
* forward values against a plain NumPy formula (``_softmax``, ``_masked_softmax``, ...);
* Tensor-building exercises additionally through ``tm.gradcheck``.

A check raises ``ExerciseFailure`` with a message naming the case (the inputs), the output,
the worst element, the expected and the received value; ``NotImplementedYet`` when the stub
is still untouched. Each grader returns the number of cases it checked.

Typical mistakes are recognised, never by stored answers: on a failure, the answer is compared
with what the same NumPy formula gives *with that mistake made* (the global instead of the
per-slice max, ddof=1, no 1/(1 - rate), a missing transpose...), and a match names it in the
hint. Where numerical stability matters, one case holds slices of wildly different scale
(near +1000, 0 and -1000 in one array): a shift by the global max fails only there.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..gradcheck import GradcheckError, gradcheck
from ..ops import nn as _nn
from ..ops import dropout as _tm_dropout
from ..tensor import Tensor


class ExerciseFailure(AssertionError):
    """The learner's function returned something wrong; the message says what and where.

    ``hint`` names the mistake when the grader recognised it (else the exercise's hint is shown).
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class NotImplementedYet(Exception):
    """The learner's function still raises NotImplementedError."""

    def __init__(self, function: str):
        super().__init__(function)
        self.function = function


@dataclass(frozen=True)
class Exercise:
    name: str
    tutorial: str     # the tutorial that teaches what the exercise needs
    summary: str      # one line for `list`
    grade: Callable   # (module, rng) -> number of cases checked
    hint: str = ""    # printed under a failure


# ---------------------------------------------------------------- references (NumPy only)
def _softmax(x, axis):
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _masked_softmax(x, mask, axis):
    """Softmax over the kept entries only; a slice with nothing kept is all zeros."""
    keep = np.broadcast_to(mask, x.shape)
    shift = np.where(keep, x, -np.inf).max(axis=axis, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    e = np.where(keep, np.exp(np.where(keep, x - shift, 0.0)), 0.0)
    total = e.sum(axis=axis, keepdims=True)
    return e / np.where(total == 0, 1.0, total)


def _logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(x - m).sum(axis=axis))


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # an identity that never overflows


def _layernorm(x, gamma, beta, epsilon):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + epsilon) + beta


def _attention_scores(q, k, axes, scale=None, joint=True):
    """Loop-free reference: move (batch..., heads, attention axes..., dim), flatten, matmul.

    ``scale`` (default 1/sqrt(key_dim)) and ``joint=False`` (softmax over the last key axis
    only) exist to recognise mistakes.
    """
    r = q.ndim
    batch = [a for a in range(r - 2) if a not in axes]  # includes axis 0
    order = batch + [r - 2] + list(axes) + [r - 1]
    qp, kp = q.transpose(order), k.transpose(order)
    lead = qp.shape[:len(batch) + 1]
    t_shape, s_shape = qp.shape[len(batch) + 1:-1], kp.shape[len(batch) + 1:-1]
    d = q.shape[-1]
    logits = qp.reshape(lead + (-1, d)) @ np.swapaxes(kp.reshape(lead + (-1, d)), -1, -2)
    logits = logits * (1 / math.sqrt(d) if scale is None else scale)
    if not joint:
        return _softmax(logits.reshape(lead + t_shape + s_shape), -1)
    return _softmax(logits, -1).reshape(lead + t_shape + s_shape)


def numerical_vjp(f, inputs, g, wrt=None, eps=1e-6):
    """Central differences of ``sum(f(*inputs) * g)`` with respect to each input in ``wrt``.

    The inputs are copied to float64 first, so the caller's arrays are never touched.
    """
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    grads = []
    for i in (range(len(inputs)) if wrt is None else wrt):
        x = inputs[i]
        grad = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            original = x[j]
            x[j] = original + eps
            plus = float(np.sum(f(*inputs) * g))
            x[j] = original - eps
            minus = float(np.sum(f(*inputs) * g))
            x[j] = original
            grad[j] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads


# ---------------------------------------------------------------- calling and comparing
def _fail(message: str, hint: str | None = None):
    raise ExerciseFailure(message, hint)


def _function(module, name: str):
    fn = getattr(module, name, None)
    if not callable(fn):
        _fail(f"{module.__file__} defines no function {name}(); keep the stub's name and signature")
    return fn


def _show(value) -> str:
    if isinstance(value, Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        if value.dtype == bool and value.size <= 64:  # masks in full: which slice keeps nothing
            body = np.array2string(value.astype(int), separator=", ").replace("\n", "")
            return f"{body} (bool, 1 = True, shape {value.shape})"
        if value.size <= 20:
            body = np.array2string(value, precision=4, separator=", ",
                                   max_line_width=10 ** 6).replace("\n", "")
            return f"{body} (shape {value.shape})" if value.ndim > 1 else body
        return f"<{value.dtype} array of shape {value.shape}>"
    return repr(value)


def _case(fn_name: str, **inputs) -> str:
    return f"{fn_name}({', '.join(f'{k}={_show(v)}' for k, v in inputs.items())})"


def _call(fn, case: str, *args, **kwargs):
    """Call the learner's function; NotImplementedError means 'not started'."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedYet(fn.__name__) from None
    except (ExerciseFailure, NotImplementedYet):
        raise
    except Exception as exc:
        where = ([f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename == fn.__code__.co_filename]
                 or traceback.extract_tb(exc.__traceback__)[-1:])
        _fail(f"{case} raised {type(exc).__name__}: {exc}\n"
              + "".join(traceback.format_list(where)).rstrip())


def _as_array(value, what: str, case: str, shape) -> np.ndarray:
    if value is None:
        _fail(f"{case} returned None for {what}; did you forget `return`?")
    if isinstance(value, Tensor):
        value = value.numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(f"{what} must be a NumPy array, got {type(value).__name__} from {case}")
    if array.shape != tuple(shape):
        _fail(f"{what} has shape {array.shape} but must have shape {tuple(shape)} "
              f"(the shape of the input it is the gradient of) in {case}",
              _shape_hint(array.shape, tuple(shape)))
    return array


def _shape_hint(got: tuple, want: tuple) -> str | None:
    """Name the usual reason for a gradient of the wrong shape."""
    try:
        broadcast = np.broadcast_shapes(got, want) == got
    except ValueError:
        broadcast = False
    if broadcast and math.prod(got) > math.prod(want):
        return ("broadcast axes not summed: the input was broadcast to the shape you returned, so "
                "sum the gradient over the broadcast axes (leading axes away; keepdims=True where "
                "the input has a 1), as sum_to does")
    if len(got) >= 2 and got[:-2] + got[-2:][::-1] == want or got[::-1] == want:
        return "the gradient looks transposed: swap the last two axes of one matmul operand"
    return None


def _unpack(value, names: tuple, case: str):
    if not isinstance(value, (tuple, list)) or len(value) != len(names):
        got = f"a {type(value).__name__}" + (f" of length {len(value)}"
                                             if isinstance(value, (tuple, list)) else "")
        _fail(f"{case} must return a tuple of {len(names)} arrays ({', '.join(names)}), got {got}")
    return value


def _close(got, expected, atol, rtol) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.abs(got - expected) <= atol + rtol * np.abs(expected)


def _recognise(got, mistakes, atol, rtol, hint=None):
    """The label of the first mistake whose answer matches ``got`` (NaN matches NaN), else ``hint``.

    ``mistakes``: ``(label, fn)`` pairs; ``fn()`` returns what that mistake gives (or None).
    """
    for label, fn in mistakes or ():
        try:
            with np.errstate(all="ignore"):
                candidate = fn()
            if candidate is None:
                continue
            candidate = np.asarray(candidate, dtype=np.float64)
        except Exception:
            continue
        if candidate.shape == got.shape and np.all(
                _close(got, candidate, atol, rtol) | (np.isnan(got) & np.isnan(candidate))
                | (np.isinf(got) & (got == candidate))):
            return label
    return hint


def _compare(got, expected, what: str, case: str, reference: str, atol=1e-6, rtol=1e-4,
             mistakes=None, hint=None):
    """Raise unless ``|got - expected| <= atol + rtol |expected|`` everywhere (NaN never passes).

    On a failure, ``mistakes`` (see ``_recognise``) name what went wrong, else ``hint`` does.
    """
    error = np.abs(got - expected)
    allowed = atol + rtol * np.abs(expected)
    bad = ~(error <= allowed)
    if not bad.any():
        return
    score = np.where(np.isnan(error), np.inf, error - allowed)
    worst = np.unravel_index(int(np.argmax(score)), score.shape)
    where = str(tuple(int(i) for i in worst)) if got.ndim else "() (the only element)"
    lines = [f"wrong {what} from {case}",
             f"  at element {where}: expected {expected[worst]:.10g} ({reference}), got "
             f"{got[worst]:.10g}"]
    finite = np.isfinite(got)
    if finite.all():
        lines.append(f"  {int(bad.sum())} of {bad.size} elements are off; the largest absolute "
                     f"error is {float(error.max()):.3g} (allowed: {atol} + {rtol} * |expected|)")
    else:
        lines.append(f"  {int((~finite).sum())} of {bad.size} elements are inf or nan: an exp() "
                     "that overflowed, or 0/0? (tutorial 05 shows the max-shift that keeps "
                     "exponentials finite)")
    _fail("\n".join(lines), _recognise(got, mistakes, atol, rtol, hint))


def _check_vjp(fn, forward, inputs: dict, g, wrt: tuple, outputs: tuple, extra=None, atol=1e-6,
               rtol=1e-4, mistakes=None, hint=None):
    """Grade a backward function ``fn(*inputs, g, **extra)`` against finite differences of
    ``forward``.

    ``mistakes``: ``(label, fn)`` pairs, ``fn(*inputs, g, **extra)`` giving that mistake's answer
    (a tuple, one per output, for several outputs); ``hint`` names a mistake this case is
    built to catch (used when none of ``mistakes`` matches).
    """
    extra = extra or {}
    case = _case(fn.__name__, **inputs, g=g, **extra)
    args = [np.array(v, copy=True) for v in inputs.values()]
    got = _call(fn, case, *args, np.array(g, copy=True), **extra)
    if len(outputs) > 1:
        got = _unpack(got, outputs, case)
    else:
        got = (got,)
    arrays = list(inputs.values())
    expected = numerical_vjp(lambda *xs: forward(*xs, **extra), arrays, g, wrt=wrt)
    names = list(inputs)
    for k, (i, value, want) in enumerate(zip(wrt, got, expected)):
        label = f"gradient with respect to {names[i]}"
        if len(outputs) > 1:
            label += f" (returned value {k}, {outputs[k]})"
        array = _as_array(value, label, case, arrays[i].shape)
        named = [(text, _output_of(wrong, arrays, g, extra, k, len(outputs)))
                 for text, wrong in mistakes or ()]
        _compare(array, want, label, case, "central finite difference", atol=atol, rtol=rtol,
                 mistakes=named, hint=hint)


def _output_of(wrong, arrays, g, extra, k, n):
    """A thunk: output ``k`` of the mistaken formula ``wrong`` on copies of the inputs."""
    def thunk():
        value = wrong(*[np.array(a, copy=True) for a in arrays], np.array(g, copy=True), **extra)
        return value[k] if n > 1 else value
    return thunk


def _wild(rng, shape, axis) -> np.ndarray:
    """Logits whose slices along ``axis`` sit near +1000, 0 and -1000 in turn (one array).

    A shift by each slice's own max keeps every exponential finite; a shift by the global max
    underflows the slices near 0 and -1000 to all zeros (0/0 = NaN, log 0 = -inf).
    """
    axis = axis % len(shape)
    others = [n for i, n in enumerate(shape) if i != axis]
    levels = np.resize(np.array([1000.0, 0.0, -1000.0]), math.prod(others)).reshape(others)
    return rng.standard_normal(shape) + np.expand_dims(levels, axis)


GLOBAL_MAX = ("shifted by the global maximum (x.max()) instead of each slice's own: a slice near "
              "0 or -1000 next to one near +1000 then underflows to all zeros (0/0 = NaN). Shift "
              "by x.max(axis=axis, keepdims=True), so every slice keeps its largest exp() at "
              "exactly 1")


class _forbid_softmax:
    """Make ``tm.softmax``/``tm.log_softmax`` raise while an exercise builds its own."""

    def __init__(self, exercise: str):
        self.exercise = exercise

    def __enter__(self):
        # Function.apply is inherited: remember what each class itself defined (usually nothing).
        self.saved = {cls: cls.__dict__.get("apply") for cls in (_nn.Softmax, _nn.LogSoftmax)}
        exercise = self.exercise

        def forbidden(cls, *args, **kwargs):
            raise ExerciseFailure(f"{exercise} must be built from tm ops such as exp, sum, max and "
                                  "tm.where, not from tm.softmax or tm.log_softmax (that is the "
                                  "point of the exercise)")
        _nn.Softmax.apply = classmethod(forbidden)
        _nn.LogSoftmax.apply = classmethod(forbidden)
        return self

    def __exit__(self, *exc):
        for cls, own in self.saved.items():
            if own is None:
                del cls.apply  # back to the inherited Function.apply
            else:
                cls.apply = own
        return False


def _tensor_output(out, case: str, shape) -> Tensor:
    if not isinstance(out, Tensor):
        _fail(f"{case} must return a tinygrad_mha Tensor (built with tm ops, so gradients flow), "
              f"got {type(out).__name__}")
    if out.shape != tuple(shape):
        _fail(f"{case} returned shape {out.shape}, expected {tuple(shape)}")
    if not out.requires_grad:
        _fail(f"the result of {case} is not connected to its inputs in the graph (requires_grad is "
              "False): compute it with Tensor operations, not on .data or NumPy arrays")
    return out


def _gradcheck(fn, inputs, case: str, rng):
    try:
        gradcheck(fn, inputs, seed=int(rng.integers(2 ** 31)))
    except GradcheckError as exc:
        _fail(f"the gradient of your {case} disagrees with finite differences:\n  {exc}")


# ---------------------------------------------------------------- the exercises
def _grade_sigmoid_backward(module, rng):
    fn = _function(module, "sigmoid_backward")
    shapes = [(5,), (3, 4), (2, 3, 2)]
    for shape in shapes:
        x, g = 2 * rng.standard_normal(shape), rng.standard_normal(shape)
        _check_vjp(fn, _sigmoid, {"x": x}, g, (0,), ("gx",), mistakes=[
            ("the derivative is s (1 - s) with s = sigmoid(x), not x (1 - x)",
             lambda x, g: g * x * (1 - x))])
    x = np.array([-800.0, -30.0, -5.0, 0.0, 5.0, 30.0, 800.0])  # the tails must stay finite
    g = rng.standard_normal(x.shape)
    case = _case("sigmoid_backward", x=x, g=g)
    got = _as_array(_call(fn, case, x.copy(), g.copy()), "gradient with respect to x", case,
                    x.shape)
    s = _sigmoid(x)
    _compare(got, g * s * (1 - s), "gradient with respect to x", case,
             "NumPy: g * s * (1 - s) with a stable sigmoid", atol=1e-12, rtol=1e-6)
    return len(shapes) + 1


def _grade_tanh_backward(module, rng):
    fn = _function(module, "tanh_backward")
    shapes = [(5,), (3, 4), (2, 3, 2)]
    for shape in shapes:
        x, g = 1.5 * rng.standard_normal(shape), rng.standard_normal(shape)
        _check_vjp(fn, np.tanh, {"x": x}, g, (0,), ("gx",), mistakes=[
            ("the derivative is 1 - tanh(x)^2, not 1 - x^2", lambda x, g: g * (1 - x ** 2))])
    x = np.array([-800.0, -20.0, -1.0, 0.0, 1.0, 20.0, 800.0])
    g = rng.standard_normal(x.shape)
    case = _case("tanh_backward", x=x, g=g)
    got = _as_array(_call(fn, case, x.copy(), g.copy()), "gradient with respect to x", case,
                    x.shape)
    _compare(got, g * (1 - np.tanh(x) ** 2), "gradient with respect to x", case,
             "NumPy: g * (1 - tanh(x)^2)", atol=1e-12, rtol=1e-6)
    return len(shapes) + 1


def _grade_sum_to(module, rng):
    fn = _function(module, "sum_to")
    cases = [((2, 3, 4), (3, 1)), ((2, 3, 4), (4,)), ((2, 3, 4), ()), ((2, 3, 4), (2, 1, 4)),
             ((2, 3, 4), (1, 3, 1)), ((3, 4), (3, 4)), ((4, 1, 5), (1, 1))]
    for big, small in cases:
        g = rng.standard_normal(big)
        case = _case("sum_to", g=g, shape=small)
        got = _as_array(_call(fn, case, g.copy(), small), "result", case, small)
        # sum_to is the gradient of broadcast_to: d/dx sum(broadcast_to(x, big) * g).
        (expected,) = numerical_vjp(lambda x: np.broadcast_to(x, big), [np.zeros(small)], g)
        _compare(got, expected, "result", case,
                 "finite differences of x -> sum(broadcast_to(x, g.shape) * g)")
    return len(cases)


def _grade_matmul_backward(module, rng):
    fn = _function(module, "matmul_backward")
    # the square case first: a missing transpose then has the right shape and wrong values
    cases = [((3, 3), (3, 3)), ((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
             ((1, 3, 4), (5, 4, 2))]
    t = lambda m: np.swapaxes(m, -1, -2)  # noqa: E731
    transposed = ("transposed matmul gradient: ga = g @ b^T and gb = a^T @ g, with ^T swapping the "
                  "last two axes (check the shapes: ga must have a's shape, gb b's)")
    mistakes = [(transposed, lambda a, b, g: (g @ b, a @ g)),
                (transposed, lambda a, b, g: (t(b) @ g, g @ t(a))),
                (transposed, lambda a, b, g: (t(g @ t(b)), t(t(a) @ g))),
                (transposed, lambda a, b, g: (g @ t(b), t(g) @ a))]
    for sa, sb in cases:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        g = rng.standard_normal(np.broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1]))
        _check_vjp(fn, np.matmul, {"a": a, "b": b}, g, (0, 1), ("ga", "gb"), mistakes=mistakes)
    return len(cases)


def _grade_einsum_backward(module, rng):
    count = 0
    fn = _function(module, "matmul_einsum_backward")
    for sa, sb in [((3, 4), (4, 2)), ((1, 5), (5, 3))]:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        g = rng.standard_normal((sa[0], sb[1]))
        _check_vjp(fn, lambda a, b: np.einsum("ij,jk->ik", a, b), {"a": a, "b": b}, g, (0, 1),
                   ("ga", "gb"))
        count += 1
    fn = _function(module, "attention_einsum_backward")
    for b_, t, s, h, d in [(2, 3, 4, 2, 3), (1, 2, 5, 3, 2)]:
        q, k = rng.standard_normal((b_, t, h, d)), rng.standard_normal((b_, s, h, d))
        g = rng.standard_normal((b_, h, t, s))
        _check_vjp(fn, lambda q, k: np.einsum("bqhd,bkhd->bhqk", q, k), {"q": q, "k": k}, g, (0, 1),
                   ("gq", "gk"))
        count += 1
    fn = _function(module, "diagonal_einsum_backward")
    for n in (3, 5):
        a, g = rng.standard_normal((n, n)), rng.standard_normal(n)
        _check_vjp(fn, lambda a: np.einsum("ii->i", a), {"a": a}, g, (0,), ("ga",))
        count += 1
    return count


def _grade_softmax_backward(module, rng):
    fn = _function(module, "softmax_backward")
    cases = [((4,), -1, 0.0), ((3, 5), -1, 0.0), ((3, 5), 0, 0.0), ((2, 3, 4), 1, 0.0),
             ((2, 6), -1, 1000.0),  # logits near 1000: a naive exp overflows
             # slices near +-1000, 0
             ((3, 4), -1, "wild"), ((4, 3), 0, "wild"), ((3, 2, 4), 1, "wild")]
    for shape, axis, offset in cases:
        g = rng.standard_normal(shape)
        x = _wild(rng, shape, axis) if offset == "wild" else rng.standard_normal(shape) + offset
        _check_vjp(fn, _softmax, {"x": x}, g, (0,), ("gx",), extra={"axis": axis},
                   mistakes=_SOFTMAX_MISTAKES, hint=GLOBAL_MAX if offset == "wild" else None)
    return len(cases)


def _softmax_global_max(x, axis):
    z = np.exp(x - x.max())
    return z / z.sum(axis=axis, keepdims=True)


_SOFTMAX_MISTAKES = [
    ("only the diagonal of the Jacobian (g * y * (1 - y)): dy_j/dx_i = y_j (delta_ij - y_i) "
     "couples every entry of a slice, so dL/dx = y * (g - sum(g * y, axis, keepdims=True))",
     lambda x, g, axis: g * _softmax(x, axis) * (1 - _softmax(x, axis))),
    (GLOBAL_MAX, lambda x, g, axis: _softmax_global_max(x, axis) * (
        g - (g * _softmax_global_max(x, axis)).sum(axis=axis, keepdims=True))),
    ("summed g * y over every axis: sum only along `axis` (keepdims=True)",
     lambda x, g, axis: _softmax(x, axis) * (g - (g * _softmax(x, axis)).sum())),
]


def _grade_logsumexp_backward(module, rng):
    fn = _function(module, "logsumexp_backward")
    cases = [((5,), -1, 0.0), ((3, 4), 1, 0.0), ((3, 4), 0, 0.0), ((2, 3, 4), -2, 0.0),
             ((2, 5), -1, 1000.0), ((2, 5), -1, -1000.0),
             # slices near +-1000, 0
             ((3, 4), -1, "wild"), ((4, 3), 0, "wild"), ((3, 2, 4), 1, "wild")]
    mistakes = [
        (GLOBAL_MAX, lambda x, g, axis: _softmax_global_max(x, axis) * np.expand_dims(g, axis)),
        ("the result must be multiplied by g "
         "(put the reduced axis back first: np.expand_dims(g, axis))",
         lambda x, g, axis: _softmax(x, axis)),
    ]
    for shape, axis, offset in cases:
        x = _wild(rng, shape, axis) if offset == "wild" else rng.standard_normal(shape) + offset
        g = rng.standard_normal(np.sum(np.zeros(shape), axis=axis).shape)
        _check_vjp(fn, _logsumexp, {"x": x}, g, (0,), ("gx",), extra={"axis": axis},
                   mistakes=mistakes, hint=GLOBAL_MAX if offset == "wild" else None)
    return len(cases)


def _grade_masked_softmax(module, rng):
    fn = _function(module, "masked_softmax")
    m1 = rng.random((3, 5)) < 0.6
    m1[1] = False                      # a row with nothing kept
    m1[0, 0] = m1[2, 4] = True
    m2 = rng.random((1, 3, 4)) < 0.6   # broadcasts over the first axis
    m2[0, :, 2] = False                # a slice along axis 1 with nothing kept
    m2[0, 0, [0, 1, 3]] = True
    m4 = np.array([True, True, False, True, False])
    m5 = rng.random((3, 5)) < 0.7      # every row keeps something: rows near +1000, 0, -1000
    m5[:, 1] = True
    m6 = rng.random((5, 3)) < 0.7      # the same along axis 0
    m6[2] = True
    cases = [((3, 5), m1, -1, "normal"), ((2, 3, 4), m2, 1, "normal"),
             ((4,), np.ones(4, dtype=bool), 0, "normal"),
             ((2, 5), m4, -1, "large"),  # kept logits near 1000, masked ones near 10000
             ((3, 5), m5, -1, "wild"), ((5, 3), m6, 0, "wild")]
    with _forbid_softmax("masked_softmax"):
        for shape, mask, axis, kind in cases:
            x = _wild(rng, shape, axis) if kind == "wild" else rng.standard_normal(shape)
            if kind == "large":
                x = np.where(np.broadcast_to(mask, shape), x + 1000.0, x + 10000.0)
            case = _case("masked_softmax", x=x, mask=mask, axis=axis)
            xt = Tensor(x.copy(), requires_grad=True)
            out = _tensor_output(_call(fn, case, xt, mask.copy(), axis=axis), case, shape)
            got, expected = out.numpy().astype(np.float64), _masked_softmax(x, mask, axis)
            keep = np.broadcast_to(mask, shape)
            empty = np.broadcast_to(~keep.any(axis=axis, keepdims=True), shape)
            if np.any(empty & (got != 0)):
                where = tuple(int(i) for i in np.argwhere(empty & (got != 0))[0])
                _fail(f"wrong output from {case}\n  element {where} lies in a slice along axis "
                      f"{axis} where the mask keeps nothing: that whole slice must be exactly 0, "
                      f"got {float(got[where]):.6g}", _EMPTY_SLICE)
            _compare(got, expected, "output", case, "NumPy masked softmax", atol=1e-10, rtol=1e-8,
                     mistakes=[(GLOBAL_MAX, lambda: _masked_softmax_global_max(x, mask, axis)),
                               (_EMPTY_SLICE, lambda: _softmax(np.where(keep, x, -1e9), axis))],
                     hint=GLOBAL_MAX if kind == "wild" else None)
            dropped = ~keep
            if np.any(got[dropped] != 0):
                where = tuple(int(i) for i in np.argwhere(dropped & (got != 0))[0])
                _fail(f"masked entries must be exactly 0, but element {where} of {case} is "
                      f"{got[where]!r}")
            if kind == "large":  # softmax does not change when a constant is added: same gradient
                g = rng.standard_normal(shape)
                out.backward(g)
                y = expected
                want = y * (g - (g * y).sum(axis=axis, keepdims=True))
                _compare(np.asarray(xt.grad, dtype=np.float64), want, "gradient with respect to x",
                         case, "NumPy: y * (g - sum(g * y)) on the kept entries")
            else:
                _gradcheck(lambda t: _call(fn, case, t, mask, axis=axis),
                           (Tensor(x, requires_grad=True),), case, rng)
    return len(cases)


_EMPTY_SLICE = ("masked logits set to -1e9 (or another large negative number) instead of exact "
                "zeros: a slice where the mask keeps nothing then comes out uniform (1/n each) "
                "instead of all zeros. Put exp() only where mask is True "
                "(tm.where(mask, x - shift, -inf).exp()) and divide by a total that is never 0 "
                "(tm.where(total.data == 0, 1.0, total))")


def _masked_softmax_global_max(x, mask, axis):
    keep = np.broadcast_to(mask, x.shape)
    e = np.where(keep, np.exp(x - np.max(np.where(keep, x, -np.inf))), 0.0)
    return e / e.sum(axis=axis, keepdims=True)


def _grade_dropout_backward(module, rng):
    fn = _function(module, "dropout_backward")
    cases = [((3, 4), 0.5), ((2, 3, 4), 0.1), ((5,), 0.0), ((4, 4), 0.9)]
    for shape, rate in cases:
        keep = rng.random(shape) >= rate
        x, g = rng.standard_normal(shape), rng.standard_normal(shape)
        case = _case("dropout_backward", g=g, keep=keep, rate=rate)
        got = _as_array(_call(fn, case, g.copy(), keep.copy(), rate), "gradient with respect to x",
                        case, shape)
        (expected,) = numerical_vjp(lambda x: x * keep / (1 - rate), [x], g)
        _compare(got, expected, "gradient with respect to x", case,
                 "finite differences of x -> x * keep / (1 - rate)", mistakes=[
                     ("the missing 1/(1 - rate): the forward scaled the kept entries "
                      "by 1/(1 - rate), so the gradient is g * keep / (1 - rate)",
                      lambda: g * keep),
                     ("multiplied by (1 - rate) where the forward divided: the gradient is "
                      "g * keep / (1 - rate)", lambda: g * keep * (1 - rate)),
                     ("the mask is missing: dropped entries (keep False) get no gradient",
                      lambda: g / (1 - rate)),
                     ("the mask is inverted: keep is True for the entries that were *kept*",
                      lambda: g * ~keep / (1 - rate))])
    # The same rule must reproduce the engine's gradient of tm.dropout for its own mask.
    shape, rate = (6, 5), 0.3
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    y = _tm_dropout(x, rate, seed=int(rng.integers(2 ** 31)))
    g = rng.standard_normal(shape)
    y.backward(g)
    keep = y.numpy() != 0
    case = _case("dropout_backward", g=g, keep=keep, rate=rate) + " with the mask of tm.dropout"
    got = _as_array(_call(fn, case, g.copy(), keep.copy(), rate), "gradient with respect to x",
                    case, shape)
    _compare(got, np.asarray(x.grad), "gradient with respect to x", case, "x.grad from tm.dropout")
    return len(cases) + 1


def _grade_layernorm_backward(module, rng):
    fn = _function(module, "layernorm_backward")
    cases = [((4, 6), 1.0, 0.0, 1e-3), ((2, 3, 5), 1.0, 0.0, 1e-3), ((1, 8), 10.0, 5.0, 1e-5)]
    for shape, scale, offset, epsilon in cases:
        x = scale * rng.standard_normal(shape) + offset
        gamma, beta = 1 + 0.5 * rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
        g = rng.standard_normal(shape)
        _check_vjp(fn, _layernorm, {"x": x, "gamma": gamma, "beta": beta}, g, (0, 1, 2),
                   ("gx", "ggamma", "gbeta"), extra={"epsilon": epsilon},
                   mistakes=_LAYERNORM_MISTAKES)
    return len(cases)


def _layernorm_ddof1(x, gamma, beta, epsilon):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1)
    return gamma * (x - mu) / np.sqrt(var + epsilon) + beta


def _layernorm_constant_stats(x, gamma, beta, g, epsilon):
    """The gradients when mu and var are (wrongly) treated as constants."""
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + epsilon)
    lead = tuple(range(x.ndim - 1))
    return g * gamma * inv_std, (g * (x - mu) * inv_std).sum(axis=lead), g.sum(axis=lead)


_LAYERNORM_MISTAKES = [
    ("the sample variance (ddof=1, dividing by n - 1): layer normalization uses the population "
     "variance, var = mean((x - mu)^2) (np.var's default ddof=0)",
     lambda x, gamma, beta, g, epsilon: tuple(numerical_vjp(
         lambda *a: _layernorm_ddof1(*a, epsilon), [x, gamma, beta], g))),
    ("mu and var treated as constants: they depend on every x in the row, so dL/dx has two more "
     "terms, -mean(g * gamma) and -xhat * mean(g * gamma * xhat), both times 1/sqrt(var + epsilon)",
     _layernorm_constant_stats),
]


def _grade_attention_scores(module, rng):
    fn = _function(module, "attention_scores")
    cases = [((2, 3, 2, 4), (2, 5, 2, 4), (1,)),          # (B, T, H, D): the usual 1-D case
             ((2, 3, 4, 2, 3), (2, 3, 5, 2, 3), (2,)),    # axis 1 is a batch axis
             ((1, 2, 3, 2, 2), (1, 3, 2, 2, 2), (1, 2)),  # 2-D attention (an image)
             ((2, 4, 3, 1, 2), (2, 5, 3, 1, 2), (1,))]    # axis 2 is a batch axis
    for sq, sk, axes in cases:
        q, k = rng.standard_normal(sq), rng.standard_normal(sk)
        case = _case("attention_scores", query=q, key=k, attention_axes=axes)
        expected = _attention_scores(q, k, axes)
        out = _call(fn, case, Tensor(q.copy(), requires_grad=True),
                    Tensor(k.copy(), requires_grad=True), axes)
        if isinstance(out, Tensor) and out.shape != expected.shape:
            _fail(f"{case} returned shape {out.shape}, expected {expected.shape}: (batch axes, "
                  "i.e. axis 0 and every index axis not in attention_axes, in order; heads; the "
                  "query's attention axes; the key's attention axes)")
        out = _tensor_output(out, case, expected.shape)
        _compare(out.numpy().astype(np.float64), expected, "scores", case,
                 "NumPy: softmax(q k^T / sqrt(key_dim)) over the flattened key attention axes",
                 atol=1e-10, rtol=1e-8, mistakes=[
                     ("no 1/sqrt(key_dim) scale on the dot products",
                      lambda: _attention_scores(q, k, axes, scale=1.0)),
                     ("scaled by 1/key_dim: the scale is 1/sqrt(key_dim)",
                      lambda: _attention_scores(q, k, axes, scale=1.0 / q.shape[-1])),
                     ("softmax over the last key axis only: with several attention axes it must "
                      "run jointly over all of the key's (tm.softmax(x, axis=(-2, -1)) for two)",
                      lambda: (_attention_scores(q, k, axes, joint=False) if len(axes) > 1
                               else None))])
        _gradcheck(lambda a, b: _call(fn, case, a, b, axes),
                   (Tensor(q, requires_grad=True), Tensor(k, requires_grad=True)), case, rng)
    return len(cases)


NO_RESCALE = ("when a block raised a row's running maximum m, the sums l and acc kept their old "
              "shift: multiply both by exp(m_old - m_new) before adding the new block")


def _online_no_rescale(scores, values, block):
    """The sweep with the rescaling step forgotten: each block's exponentials are shifted by the
    running max of their time, but what was summed before is never brought to the new shift."""
    T, S = scores.shape
    m, l, acc = np.full((T, 1), -np.inf), np.zeros((T, 1)), np.zeros((T, values.shape[1]))
    for j0 in range(0, S, block):
        s = scores[:, j0:j0 + block]
        m = np.maximum(m, s.max(axis=1, keepdims=True))
        p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        l, acc = l + p.sum(axis=1, keepdims=True), acc + p @ values[j0:j0 + block]
    return acc / np.where(l == 0, 1.0, l)


def _grade_online_softmax(module, rng):
    fn = _function(module, "online_softmax")
    T, S, D = 6, 11, 3
    checked = 0
    for block in (1, 3, 4, 11, 16):  # 4 does not divide 11; 16 is more than S
        scores = rng.standard_normal((T, S)) * 3
        scores[0] += 1000.0                       # rows on wildly different scales
        scores[1] -= 1000.0
        scores[2] = np.sort(scores[2]) * 50       # the maximum arrives in the last block
        scores[3, rng.random(S) < 0.5] = -np.inf  # masked keys
        scores[3, 0] = 1.0
        scores[4] = -np.inf                       # a row with no key at all
        scores[5, :-1] = -np.inf                  # only the last key
        values = rng.standard_normal((S, D))
        case = _case("online_softmax", scores=scores, values=values, block=block)
        calls = []

        def score_block(j0, j1, scores=scores, block=block, case=case, calls=calls):
            j0, j1 = int(j0), int(j1)
            if not 0 <= j0 < j1 <= S:
                _fail(f"score_block({j0}, {j1}) is outside the {S} key positions in {case}")
            if j1 - j0 > block:
                _fail(f"score_block({j0}, {j1}) asked for {j1 - j0} columns, more than "
                      f"block={block}, in {case}: the point is never to hold more than one block")
            calls.append((j0, j1))
            return scores[:, j0:j1].copy()

        out, lse = _unpack(_call(fn, case, score_block, values.copy(), block), ("out", "lse"), case)
        covered = sorted(j for j0, j1 in calls for j in range(j0, j1))
        if covered != list(range(S)):
            _fail(f"{case} asked score_block for the key positions {covered}; each of 0..{S - 1} "
                  "must be read exactly once")
        out = _as_array(out, "out", case, (T, D))
        lse = _as_array(lse, "lse", case, (T,))
        kept = np.isfinite(scores)
        expected_lse = np.full(T, -np.inf)
        expected_out = np.zeros((T, D))
        for t in range(T):
            if kept[t].any():
                m = scores[t][kept[t]].max()
                w = np.exp(scores[t] - m)
                expected_lse[t] = m + np.log(w.sum())
                expected_out[t] = (w / w.sum()) @ values
        _compare(out, expected_out, "out", case, "NumPy: softmax(scores) @ values, row by row",
                 atol=1e-10, rtol=1e-9, mistakes=[(NO_RESCALE, lambda: _online_no_rescale(
                     scores, values, block))])
        if not np.array_equal(np.isneginf(lse), ~kept.any(axis=1)):
            _fail(f"lse from {case} must be -inf exactly for the rows with no finite score "
                  f"(rows {np.flatnonzero(~kept.any(axis=1)).tolist()}), got {_show(lse)}")
        finite = kept.any(axis=1)
        _compare(lse[finite], expected_lse[finite], "lse", case, "NumPy: m + log(sum(exp(s - m)))",
                 atol=1e-10, rtol=1e-12)
        checked += 1
    return checked


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("sigmoid_backward", "02", "the derivative of the logistic sigmoid, s(x)(1 - s(x))",
             _grade_sigmoid_backward,
             "write it with the forward value s = sigmoid(x); it must stay finite for |x| = 800"),
    Exercise("tanh_backward", "02", "the derivative of tanh, 1 - tanh(x)^2", _grade_tanh_backward),
    Exercise("sum_to", "03", "undo broadcasting: sum a gradient down to an input's shape",
             _grade_sum_to,
             "sum away the extra leading axes, then (keepdims=True) every axis where shape has a 1 "
             "but the gradient does not"),
    Exercise("matmul_backward", "03", "the gradients of a @ b, with broadcast batch axes",
             _grade_matmul_backward,
             "ga = g @ b^T and gb = a^T @ g (transpose the last two axes; not g @ b or a @ g), "
             "then sum_to each input's shape: a batch axis that was broadcast must be summed"),
    Exercise("einsum_backward", "04",
             "gradients of 'ij,jk->ik', 'bqhd,bkhd->bhqk' and 'ii->i' as einsums",
             _grade_einsum_backward,
             "the gradient for an operand is an einsum of g with the other operand(s), whose "
             "output letters are that operand's letters; a repeated letter (ii) puts it on a "
             "diagonal"),
    Exercise("softmax_backward", "05", "the vector-Jacobian product of softmax along an axis",
             _grade_softmax_backward,
             "the Jacobian is diag(y) - y y^T, so the off-diagonal terms matter; sum only along "
             "`axis` (keepdims=True); compute y with each slice's own max subtracted "
             "(x.max(axis=axis, keepdims=True)), not the global x.max()"),
    Exercise("logsumexp_backward", "05", "the gradient of log(sum(exp(x))) along an axis",
             _grade_logsumexp_backward,
             "g has the reduced shape: put the axis back (np.expand_dims) before multiplying; "
             "d logsumexp / dx is softmax(x), computed with each slice's own max subtracted "
             "(x.max(axis=axis, keepdims=True)), not the global x.max()"),
    Exercise("masked_softmax", "05", "a numerically stable masked softmax from Tensor ops",
             _grade_masked_softmax,
             "shift each slice by its own largest *kept* logit (max along `axis`, keepdims=True; "
             "not the global max; a constant: no gradient is needed through it), put exp() only "
             "where mask is True (tm.where: masked entries exactly 0, not -1e9), and divide by a "
             "total that is never 0"),
    Exercise("dropout_backward", "06", "the gradient of inverted dropout for a given mask",
             _grade_dropout_backward,
             "the forward was y = x * keep / (1 - rate): its gradient is the same mask and the "
             "same scale, g * keep / (1 - rate) (the 1/(1 - rate) is easy to forget)"),
    Exercise("layernorm_backward", "03 and 05",
             "the gradients of layer normalization (x, gamma, beta)",
             _grade_layernorm_backward,
             "gamma and beta were broadcast over every leading axis, so their gradients sum over "
             "them; the variance is the population one (ddof=0, mean((x - mu)^2), not ddof=1); "
             "for x, the mean and the variance depend on every x in the row"),
    Exercise("attention_scores", "04 and 09",
             "attention probabilities with Keras' attention_axes layout",
             _grade_attention_scores,
             "scale by 1/sqrt(key_dim), take dot products over the last axis, and softmax jointly "
             "over all of the key's attention axes (tm.softmax accepts a tuple of axes)"),
    Exercise("online_softmax", "13",
             "softmax(scores) @ values in one sweep over key blocks (FlashAttention)",
             _grade_online_softmax,
             "per row keep m (max so far), l (sum of exp(s - m)) and acc (sum of exp(s - m) * v); "
             "when m grows, multiply l and acc by exp(m_old - m_new); shift a row whose m is still "
             "-inf by 0, and divide by l only where l > 0"),
]}
