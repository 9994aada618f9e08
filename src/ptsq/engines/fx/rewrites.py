"""Rewrites that stop FX quantization from changing what the model computes, before observers go in.

* **In-place ops whose result is unused.** ``out.mul_(0.5)`` on a line of its own traces to a
  ``call_method`` node nobody uses. FX treats method calls as pure, so the dead-code elimination in
  ``prepare_fx`` (and in the clean-up) drops it, and the int8 model silently computes something else
  (measured: output SQNR ~0 dB against fp32, the plain torch.ao recipe included). Such an op becomes
  its out-of-place twin (``mul``) and every later use of the tensor it mutated reads the op's result:
  what the mutation meant, in a form that survives dead-code elimination. Only the unambiguous case is
  rewritten: the mutated tensor is not a model input and no view of it was taken before the mutation.
* **Shape arithmetic.** ``x.size()[:-1] + (heads, dim)`` (how hand-written attention reshapes) traces to
  ``operator.add`` on a ``torch.Size``; ``prepare_fx`` takes it for a tensor add and puts an observer on
  a ``torch.Size`` (``AttributeError: 'torch.Size' object has no attribute 'detach'``, plain torch.ao
  included). Such a node becomes an opaque leaf (what ``prepare_fx`` leaves alone), computed as written.
* **Integer tensors.** Index and mask arithmetic on integer inputs (``attention_mask.unsqueeze(-1)``,
  ``index.expand(...)``) gets observers too, and histogram observers cannot take integers
  (``"histogram_cpu" not implemented for 'Long'``, plain torch.ao included). Ops that compute integer or
  bool tensors from integer/bool tensors alone (known from one run on the example) become opaque leaves.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

# call_function in-place ops and their out-of-place twins
_FUNCTIONS = {torch.relu_: torch.relu, torch.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh}
_VIEWS = {
    "view", "view_as", "reshape", "permute", "transpose", "t", "expand", "expand_as", "flatten", "squeeze",
    "unsqueeze", "narrow", "select", "chunk", "split", "unbind", "as_strided", "detach", "unflatten", "movedim",
    "swapaxes", "diagonal", "getitem", "unfold", "T", "mT",
}  # fmt: skip


def _name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _inplace_twin(gm: fx.GraphModule, node: fx.Node) -> tuple[str, object] | None:
    """("method"/"function"/"module", out-of-place target) when ``node`` mutates its first argument."""
    if node.op == "call_method" and isinstance(node.target, str):
        t = node.target
        if t.endswith("_") and not t.startswith("_") and hasattr(torch.Tensor, t[:-1]):
            return "method", t[:-1]
    if node.op == "call_function":
        if node.target in _FUNCTIONS:
            return "function", _FUNCTIONS[node.target]
        if node.kwargs.get("inplace") is True:
            return "function", node.target
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if getattr(mod, "inplace", False) is True:
            return "module", mod
    return None


def functionalize_inplace(gm: fx.GraphModule) -> tuple[int, list[str]]:
    """Rewrite unused in-place ops of ``gm`` (in place); returns (how many, notes on the ones left alone)."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    count, left = 0, []
    for node in list(gm.graph.nodes):
        if node.users or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        twin = _inplace_twin(gm, node)
        if twin is None:
            continue
        target = node.args[0]
        earlier_views = [
            u for u in target.users if order.get(u, 0) < order[node] and _name(u).lstrip("_").rstrip("_") in _VIEWS
        ]
        if target.op == "placeholder" or earlier_views:
            why = "mutates a model input" if target.op == "placeholder" else "a view of its tensor was taken before"
            left.append(f"in-place '{node.name}' left as written ({why}); FX may drop it")
            continue
        kind, new = twin
        if kind == "method":
            node.target = new
        elif kind == "function":
            node.target = new
            if "inplace" in node.kwargs:
                node.kwargs = {**node.kwargs, "inplace": False}
        # a module (nn.ReLU(inplace=True)) still returns the updated tensor: only the later reads move
        later = [u for u in list(target.users) if u is not node and order.get(u, -1) > order[node]]
        for user in later:
            user.replace_input_with(target, node)
        count += 1
    if count:
        gm.recompile()
    return count, left


_SEQUENCE_SOURCES = {"size", "shape"}


def _is_sequence(node: object, seqs: set[fx.Node]) -> bool:
    return isinstance(node, (tuple, list)) or (isinstance(node, fx.Node) and node in seqs)


def concat_shapes(gm: fx.GraphModule) -> int:
    """Make ``torch.Size``/tuple additions opaque leaves; returns how many (see the module doc)."""
    from ptsq.engines.fx.recover import keep_node_fp32

    seqs: set[fx.Node] = set()
    found: list[fx.Node] = []
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "size" and len(node.args) == 1 and not node.kwargs:
            seqs.add(node)  # x.size(): a torch.Size (x.size(i) is an int)
        elif node.op == "call_function" and node.target is getattr and len(node.args) == 2:
            if node.args[1] in _SEQUENCE_SOURCES:
                seqs.add(node)
        elif node.op == "call_function" and node.target is operator.getitem and len(node.args) == 2:
            if node.args[0] in seqs and isinstance(node.args[1], slice):
                seqs.add(node)  # a slice of a size is a size
        elif node.op == "call_function" and node.target is operator.add and len(node.args) == 2:
            a, b = node.args
            if _is_sequence(a, seqs) and _is_sequence(b, seqs) and (a in seqs or b in seqs):
                seqs.add(node)
                found.append(node)
    for node in found:  # the leaf stands in for the node: later sequence arithmetic reads the leaf
        keep_node_fp32(gm, node, "shape arithmetic (a torch.Size extended with a tuple), computed as written")
    return len(found)


def _integer(value: object) -> bool:
    return isinstance(value, torch.Tensor) and not value.is_floating_point() and not value.is_complex()


def keep_integer_ops(gm: fx.GraphModule, example_args: tuple[object, ...]) -> int:
    """Make ops computing integer tensors from integer tensors opaque leaves; returns how many."""
    from ptsq.engines.fx.recover import keep_node_fp32

    values: dict[fx.Node, object] = {}

    class Record(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            out = super().run_node(n)
            values[n] = out
            return out

    try:
        with torch.no_grad():
            Record(gm).run(*example_args)
    except Exception:  # the example does not run here: leave the graph to the rehearsal
        return 0
    found = []
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method") or not _integer(values.get(node)):
            continue
        tensors = [values.get(a) for a in node.all_input_nodes if isinstance(values.get(a), torch.Tensor)]
        if tensors and all(_integer(t) for t in tensors):
            found.append(node)
    for node in found:
        keep_node_fp32(gm, node, "integer arithmetic (indices, masks), computed as written")
    return len(found)


def functionalize(model: nn.Module, example_args: tuple[object, ...] | None = None) -> tuple[nn.Module, list[str]]:
    """``model`` traced with the rewrites above applied, or as it was when none applies."""
    from ptsq.engines.fx.recover import as_graph

    try:
        gm = as_graph(model)
    except Exception:  # untraceable here: the capture step has reported it already
        return model, []
    notes: list[str] = []
    n, left = functionalize_inplace(gm)
    notes.extend(left)
    if n:
        notes.append(f"{n} in-place op(s) whose result was unused made out of place (FX would drop them)")
    shapes = concat_shapes(gm)
    if shapes:
        notes.append(f"{shapes} shape computation(s) (torch.Size + tuple) kept out of quantization")
    ints = keep_integer_ops(gm, example_args) if example_args is not None else 0
    if ints:
        notes.append(f"{ints} op(s) on integer tensors (indices, masks) kept out of quantization")
    return (gm if n or shapes or ints else model), notes


__all__ = ["concat_shapes", "functionalize", "functionalize_inplace", "keep_integer_ops"]
