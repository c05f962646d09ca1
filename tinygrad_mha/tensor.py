"""Tensor, the graph it records, and the reverse-mode engine that walks that graph.

A Tensor wraps one backend array (``numpy.ndarray`` or ``cupy.ndarray``). Every differentiable
operation is a ``Function``: ``forward`` works on plain arrays, ``backward`` receives the
gradient of the output as a Tensor and returns one gradient per input, written with Tensor ops.
Because backward uses the library's own ops, recording it (``create_graph=True``) gives
second derivatives with no extra code.

The engine (``_backprop``) is the only place where the gradients a tensor gets from its
consumers are summed and where broadcasting is undone, so each op states its derivative as if
shapes always matched. (A kernel may return a gradient already summed to its input's shape,
as ``kernels/tensordot.py`` does for a bias; the engine then has nothing left to undo.)
"""

from __future__ import annotations

import contextlib
import itertools
import math
import weakref

import numpy as np

from . import backend

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------- grad mode
class _GradMode:
    enabled = True


def is_grad_enabled() -> bool:
    return _GradMode.enabled


class no_grad(contextlib.ContextDecorator):
    """Turn graph recording off inside a ``with`` block or a decorated function.

    Ops run as usual but remember nothing for backward, so inference allocates no graph.
    """

    _mode = False  # the grad mode inside the block

    def __enter__(self):
        # A stack, not one saved value: a decorated function that calls itself re-enters
        # this same object before the outer call has exited.
        self.__dict__.setdefault("_previous", []).append(_GradMode.enabled)
        _GradMode.enabled = self._mode
        return self

    def __exit__(self, *exc):
        _GradMode.enabled = self._previous.pop()  # restored even when the block raised
        return False


class enable_grad(no_grad):
    """The opposite of ``no_grad``: record the graph even inside a ``no_grad`` block."""

    _mode = True


# ---------------------------------------------------------------- dtype and data handling
def _canonical_dtype(dtype):
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a NumPy dtype or its name, got {dtype!r}") from exc
    if dt.kind not in "fiub":
        raise TypeError(f"dtype must be float16, float32, float64, an integer or bool dtype, "
                        f"got {dt}")
    if dt.kind == "f" and dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float16, float32 or float64, got {dt}")
    return dt


def _as_array(data, dtype, device):
    """Turn user data into a backend array on ``device`` (copying only when needed)."""
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_cupy_array(data):
        target = backend.check_device(device) if device is not None else "cuda"
        array = backend.to_device(data, target)
    else:
        if isinstance(data, (str, bytes)) or data is None:
            raise TypeError(f"Tensor data must be a number, a (nested) list or an array, "
                            f"got {type(data).__name__}")
        try:
            array = np.asarray(data)
        except ValueError as exc:  # a ragged nested list
            raise ValueError(f"Tensor data must be a rectangular (nested) list or an array: "
                             f"{exc}") from exc
        if array.dtype.kind not in "fiub":
            raise TypeError(f"Tensor data must be numeric or bool, got an array of dtype "
                            f"{array.dtype}")
        if device is not None and backend.check_device(device) != "cpu":
            array = backend.to_device(array, device)
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    elif array.dtype.kind == "f" and array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"Tensor data must be float16, float32 or float64, got {array.dtype}")
    return array


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    ``requires_grad=True`` marks a leaf whose gradient ``backward`` should fill in ``.grad``.
    """

    __slots__ = ("data", "requires_grad", "_ctx", "_grad", "_retains_grad", "name", "__weakref__")
    __array_ufunc__ = None  # make ``ndarray + Tensor`` call Tensor.__radd__ instead of NumPy

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None):
        self.data = _as_array(data, _canonical_dtype(dtype), device)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"requires_grad=True needs a floating point tensor, got dtype {self.data.dtype}; "
                "integer and bool tensors are for indices and masks only")
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._grad = None
        self._retains_grad = False
        self.name = None

    @classmethod
    def _wrap(cls, array, requires_grad=False, ctx=None):
        """Fast internal constructor: ``array`` is already a backend array."""
        t = cls.__new__(cls)
        t.data = array
        t.requires_grad = requires_grad
        t._ctx = ctx
        t._grad = None
        t._retains_grad = False
        t.name = None
        return t

    # ------------------------------------------------------------ properties
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    @property
    def xp(self):
        """numpy or cupy: the module that owns this tensor's data."""
        return backend.array_module(self.data)

    @property
    def grad(self):
        """The accumulated gradient as a backend array, or None before any backward."""
        return None if self._grad is None else self._grad.data

    @grad.setter
    def grad(self, value):
        if value is None:
            self._grad = None
            return
        value = _as_array(value, None, self.device)
        if value.shape != self.shape:
            raise ValueError(f"grad must have the tensor's shape {self.shape}, got {value.shape}")
        self._grad = Tensor._wrap(value)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{dev}{extra})"

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.data)

    __hash__ = object.__hash__  # comparisons return tensors, so hashing must stay by identity

    # ------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """A host NumPy copy-or-view of the data (always a NumPy array, also on "cuda")."""
        return backend.to_numpy(self.data)

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data)

    def to(self, device) -> "Tensor":
        """Move to "cpu" or "cuda"; differentiable (the gradient moves back)."""
        from .ops.elementwise import ToDevice
        device = backend.check_device(device)
        backend.xp_for(device)  # raise the clear "cupy missing" error before anything else
        return self if device == self.device else ToDevice.apply(self, device=device)

    def astype(self, dtype) -> "Tensor":
        """Cast; differentiable between float dtypes (the gradient is cast back)."""
        from .ops.elementwise import Cast
        dtype = _canonical_dtype(dtype)
        if dtype == self.dtype:
            return self
        if dtype.kind != "f":  # ints and bools carry no gradient: the result leaves the graph
            return Tensor._wrap(self.data.astype(dtype))
        return Cast.apply(self, dtype=dtype)

    def zero_grad(self) -> None:
        self._grad = None

    def retain_grad(self) -> "Tensor":
        """Ask backward to also store this non-leaf tensor's gradient in ``.grad``."""
        self._retains_grad = True
        return self

    # ------------------------------------------------------------ operators and methods
    # Each one forwards to ``tinygrad_mha.ops``, where the op and its gradient live together.
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __pow__(self, other): return _ops.pow(self, other)
    def __rpow__(self, other): return _ops.pow(other, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __neg__(self): return _ops.neg(self)
    def __abs__(self): return _ops.abs(self)
    def __getitem__(self, index): return _ops.getitem(self, index)
    def __lt__(self, other): return _ops.compare("lt", self, other)
    def __le__(self, other): return _ops.compare("le", self, other)
    def __gt__(self, other): return _ops.compare("gt", self, other)
    def __ge__(self, other): return _ops.compare("ge", self, other)
    def __eq__(self, other): return _ops.compare("eq", self, other)  # noqa: E704
    def __ne__(self, other): return _ops.compare("ne", self, other)

    def abs(self): return _ops.abs(self)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def tanh(self): return _ops.tanh(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def relu(self): return _ops.relu(self)
    def sum(self, axis=None, keepdims=False): return _ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _ops.min(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return _ops.var(self, axis, keepdims, ddof)
    def reshape(self, *shape): return _ops.reshape(self, *shape)
    def transpose(self, *axes): return _ops.transpose(self, *axes)
    def swapaxes(self, axis1, axis2): return _ops.swapaxes(self, axis1, axis2)
    def expand_dims(self, axis): return _ops.expand_dims(self, axis)
    def squeeze(self, axis=None): return _ops.squeeze(self, axis)
    def broadcast_to(self, shape): return _ops.broadcast_to(self, shape)
    T = property(lambda self: _ops.transpose(self))

    # ------------------------------------------------------------ autograd entry points
    def backward(self, grad=None, retain_graph: bool | None = None,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``grad`` is the upstream gradient; it may be left out only for a one-element tensor.
        ``retain_graph`` defaults to ``create_graph`` (as in PyTorch): the recorded gradients
        point into the forward graph, so differentiating them again needs it kept.
        """
        retain_graph = create_graph if retain_graph is None else retain_graph
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad "
                               "(no input of its computation has requires_grad=True)")
        grad = _seed_grad(self, grad, "grad")
        _backprop([self], [grad], retain_graph=retain_graph, create_graph=create_graph)


def _seed_grad(output: Tensor, grad, what: str) -> Tensor:
    """Check or make the gradient that starts a backward pass from ``output``."""
    if grad is None:
        if output.size != 1:
            raise ValueError(f"{what} can be left out only for a single-element output, but the "
                             f"output has shape {output.shape}; pass a gradient of that shape")
        return Tensor._wrap(output.xp.ones(output.shape, dtype=output.dtype))
    grad = grad if isinstance(grad, Tensor) else Tensor(grad, device=output.device)
    if grad.shape != output.shape:
        raise ValueError(f"{what} must have the output's shape {output.shape}, got {grad.shape}")
    if grad.device != output.device:
        raise ValueError(f"{what} is on {grad.device} but the output is on {output.device}")
    if grad.dtype != output.dtype:  # e.g. np.ones(shape) for a float32 output: stay in float32
        grad = grad.astype(output.dtype)
    return grad


# ---------------------------------------------------------------- graph nodes
_recorded = itertools.count()  # numbers the recorded nodes in creation order


class Function:
    """One differentiable primitive.

    Subclasses implement ``forward(*arrays, **params) -> array`` (plain backend arrays; keep
    on ``self`` what backward needs) and ``backward(grad) -> gradient per input`` (Tensors or
    None). ``apply`` records the node only when some input requires a gradient and grad mode
    is on; otherwise the Function object, and whatever forward kept, is dropped at once.

    Two class attributes say what backward reads, so that the node keeps nothing else alive
    (the defaults keep everything, which is always correct). An attention step's largest
    arrays are its (B, H, T, S) scores: keeping the softmax input alive for a backward that
    never reads it cost a fifth of the step's peak memory.

    * ``uses_inputs``: "all"; "none" (only shapes and dtypes); or "others", as in a product:
      an input's values serve only the *other* inputs' gradients, so they are kept only when
      one of those needs a gradient.
    * ``uses_output``: whether backward reads ``self.output``.

    An input whose values are not kept is replaced in ``inputs`` by a ``_StandIn``.
    """

    inputs: tuple = ()
    uses_inputs = "all"
    uses_output = True

    @classmethod
    def apply(cls, *inputs, **params) -> Tensor:
        fn = cls()
        out = fn.forward(*[t.data for t in inputs], **params)
        if not _GradMode.enabled:
            return Tensor._wrap(out)
        for t in inputs:
            if t.requires_grad:
                break
        else:
            return Tensor._wrap(out)
        fn.inputs = inputs if cls.uses_inputs == "all" else _keep_needed(inputs, cls.uses_inputs)
        fn.seq = next(_recorded)  # creation order: see _graph_nodes
        result = Tensor._wrap(out, True, fn)
        fn._output = weakref.ref(result)  # weak: the output owns the node, not vice versa
        if cls.uses_output:
            fn._output_data = out  # the array only (a Tensor here would be a reference cycle)
        return result

    @property
    def output(self) -> Tensor:
        """The Tensor this node produced; once that is gone, a new Tensor on the same node
        and data."""
        out = self._output()
        if out is None:
            if "_output_data" not in self.__dict__:
                raise RuntimeError(f"{type(self).__name__}.backward reads self.output, so the "
                                   "class must not set uses_output = False")
            out = Tensor._wrap(self._output_data, True, self)
        return out

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad: Tensor):
        raise NotImplementedError

    def release(self) -> None:
        """Drop everything saved for backward; a later backward through here will fail loudly."""
        self.__dict__.clear()
        self.inputs = None

    def __repr__(self):
        return f"<{type(self).__name__}>"


class _StandIn(Tensor):
    """Takes a computed input's place in a node whose backward reads only its shape and dtype.

    It points at the input's node (``_ctx``), so gradients still flow there, but not at its
    data, which is freed as soon as nothing else needs it. ``data`` is None: a backward that
    reads it after all fails loudly.
    """

    __slots__ = ("_shape", "_dtype", "_device")
    shape = property(lambda self: self._shape)
    ndim = property(lambda self: len(self._shape))
    size = property(lambda self: math.prod(self._shape))
    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._device)
    xp = property(lambda self: backend.xp_for(self._device))

    @classmethod
    def of(cls, t: Tensor) -> "_StandIn":
        s = cls._wrap(None, t.requires_grad, t._ctx)
        data = t.data
        if data is None:  # a stand-in of a stand-in
            s._shape, s._dtype, s._device = t.shape, t.dtype, t.device
        else:
            s._shape, s._dtype = data.shape, data.dtype
            s._device = "cpu" if type(data) is np.ndarray else backend.device_of(data)
        return s


def _keep_needed(inputs, rule: str) -> tuple:
    """``inputs`` with a stand-in for each computed input whose values backward does not read.

    Leaves stay: their owner keeps them alive anyway, and ``.grad`` must land on them.
    """
    wanting = sum([t.requires_grad for t in inputs]) if rule == "others" else 0
    # for "others", t is needed when some input besides t wants a gradient
    return tuple([t if t._ctx is None or wanting - t.requires_grad > 0 else _StandIn.of(t)
                  for t in inputs])


# ---------------------------------------------------------------- the engine
def _grad_key(t: Tensor):
    """Who a gradient belongs to: a computed tensor's node (shared with its stand-ins), or a
    leaf."""
    return t._ctx if t._ctx is not None else t


def _graph_nodes(roots) -> list:
    """The nodes (Functions) that ``roots`` were computed through, newest first.

    Newest first is an order in which every node comes before the nodes that made its
    inputs: an op can only take tensors that existed when it was recorded, so it always
    has a higher sequence number (``Function.seq``) than their nodes. (PyTorch's engine
    orders its work the same way.) The walk is iterative: a chain of 100,000 ops must not
    hit Python's recursion limit.
    """
    nodes, seen = [], set()
    stack = [root._ctx for root in roots if root._ctx is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.inputs is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time: the values saved for "
                "backward were freed by the first call. Pass retain_graph=True to the first "
                "backward() if you need to go through the graph again.")
        nodes.append(node)
        for parent in node.inputs:
            if parent._ctx is not None:  # (a computed tensor always requires a gradient)
                stack.append(parent._ctx)
    nodes.sort(key=_by_sequence, reverse=True)
    return nodes


def _by_sequence(node) -> int:
    return node.seq


def _sum_to_shape(grad: Tensor, shape) -> Tensor:
    """Undo broadcasting: sum ``grad`` down to ``shape`` (the one place the reference ops'
    gradients are reduced; see the module docstring for the one kernel that does it itself)."""
    return grad if grad.shape == shape else _ops.sum_to(grad, shape)  # recorded under create_graph


def _backprop(roots, root_grads, retain_graph=False, create_graph=False, capture=None):
    """Propagate ``root_grads`` from ``roots`` back through the graph.

    Leaves (and tensors that asked to ``retain_grad``) get their gradients added to ``.grad``
    unless ``capture`` is given: then the gradients of the tensors in ``capture`` are returned
    instead (as ``tm.grad`` does) and no ``.grad`` is touched.
    """
    nodes = _graph_nodes(roots)  # raises before anything changes if the graph was freed
    sums = _GradientSums(create_graph)
    for root, g in zip(roots, root_grads):
        sums.add(_grad_key(root), g)
    wanted = None if capture is None else {_grad_key(t) for t in capture}
    captured: dict = {}
    previous = _GradMode.enabled
    _GradMode.enabled = create_graph  # record the backward ops only when asked to
    try:
        for node in nodes:
            g = sums.grads.pop(node, None)
            if g is None:  # the roots do not depend on this node after all
                continue
            _hand_out(node, g, wanted, captured)
            input_grads = node.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(node.inputs, input_grads):
                if pg is not None and parent.requires_grad:
                    sums.add(_grad_key(parent), _fit(pg, parent))
            if not retain_graph:
                node.release()
        # Every node has taken its own gradient out: what is left belongs to leaves.
        for leaf, g in sums.grads.items():
            if wanted is None:
                leaf._grad = g if leaf._grad is None else leaf._grad + g
            elif leaf in wanted:
                captured[leaf] = g
    finally:
        _GradMode.enabled = previous
    return captured


def _hand_out(node, g: Tensor, wanted, captured: dict) -> None:
    """Give a node's finished gradient to whoever asked for it: ``tm.grad`` (``wanted``), or
    the tensor itself when it asked to ``retain_grad`` (not a stand-in of it)."""
    if wanted is not None:
        if node in wanted:
            captured[node] = g
        return
    real = node._output()
    if real is not None and real._retains_grad:
        real._grad = g if real._grad is None else real._grad + g


def _fit(pg: Tensor, parent: Tensor) -> Tensor:
    """An op's gradient for ``parent`` in the parent's shape (broadcasting undone) and dtype."""
    # the parent's array answers .shape and .dtype fastest; a stand-in keeps none
    want = parent.data if parent.data is not None else parent
    if pg.data.shape != want.shape:
        pg = _sum_to_shape(pg, want.shape)
    if pg.data.dtype != want.dtype:
        pg = pg.astype(want.dtype)
    return pg


class _GradientSums:
    """The gradients flowing back, by ``_grad_key``, each the sum of its contributions."""

    def __init__(self, create_graph: bool):
        self.grads: dict = {}
        self.create_graph = create_graph
        self.summed = set()  # keys whose gradient is a sum made here: nobody else holds it

    def add(self, key, g: Tensor) -> None:
        grads = self.grads
        if key not in grads:
            grads[key] = g
        elif self.create_graph:  # the sum is recorded, so it must be a new tensor
            grads[key] = grads[key] + g
        elif key in self.summed:
            # Add in place (a third contribution and on): this array is one we made by
            # summing, so no op and no caller holds it. (x in self-attention gets three:
            # from the query, key and value projections.)
            grads[key].data += g.data
        else:
            grads[key] = Tensor._wrap(grads[key].data + g.data)
            self.summed.add(key)


def grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None):
    """Gradients of ``outputs`` with respect to ``inputs``, returned instead of stored.

    Inputs that the outputs do not depend on get zeros. With ``create_graph=True`` the
    returned Tensors carry their own graph and can be differentiated again.
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad_outputs has {len(grad_outputs)} entries for {len(outputs)} outputs")
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise ValueError(f"inputs[{i}] must be a Tensor with requires_grad=True")
    roots, seeds = [], []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not isinstance(out, Tensor):
            raise TypeError(f"outputs[{i}] must be a Tensor, got {type(out).__name__}")
        if out.requires_grad:
            roots.append(out)
            seeds.append(_seed_grad(out, g, f"grad_outputs[{i}]"))
    retain = create_graph if retain_graph is None else retain_graph
    captured = _backprop(roots, seeds, retain_graph=retain, create_graph=create_graph,
                         capture=inputs) if roots else {}
    return [captured[_grad_key(t)] if _grad_key(t) in captured
            else Tensor._wrap(t.xp.zeros_like(t.data)) for t in inputs]


# The ops need Tensor and Function, so they are imported last (the methods above look
# ``_ops`` up only when called).
from . import ops as _ops  # noqa: E402
