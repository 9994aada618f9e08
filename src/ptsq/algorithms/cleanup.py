"""Graph clean-up before observers go in, so the int8 graph is the one a hand-written model would give.

Steps (each switchable, each reported):
- ``conv-modules``: functional ``F.conv{1,2}d`` / ``F.linear`` on the model's own weights (what tracing
  makes of ``nn.Conv2d`` subclasses such as TF-style "same" padding) become plain modules, so the
  backend's conv kernels, fusions and per-channel observers apply to them.
- ``fold-pad``: a symmetric zero pad feeding a conv becomes the conv's own padding.
- ``fold-bn``: BatchNorm after a conv or linear is folded into its weights.
- ``equalize``: cross-layer equalization of conv/linear pairs joined only by scale-equivariant ops
  (:mod:`ptsq.algorithms.equalization`; never across ReLU6/clamp, which are not).
- ``clamp-ranges`` (after calibration, see :func:`clamp_ranges`): a value that only feeds
  ReLU6 / hardtanh / clamp is quantized over the activation's range, so saturation does the clamp and
  no bits are spent on values the activation throws away.
- ``bias-correction`` (during calibration and before convert, :mod:`ptsq.algorithms.bias_correction`):
  each conv/linear bias absorbs the mean output shift its int8 weights cause on the calibration data.
The fp32 outputs before and after the graph rewrites agree to float rounding (tested).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ptsq.algorithms.keep_float import KeepFloat
from ptsq.algorithms.tracing import LeafTracer
from ptsq.config import CLEANUP_STEPS

STEPS = CLEANUP_STEPS
GRAPH_STEPS = STEPS[:4]
# tensor attributes a forward may read that neither BN folding nor quantization changes
_METADATA = ("ndim", "shape", "dtype", "device")

_CONV_FUNCS = {F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, torch.conv1d: nn.Conv1d, torch.conv2d: nn.Conv2d}
_LINEAR_FUNCS = {F.linear, torch._C._nn.linear}
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _attr(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        obj: Any = gm
        for part in str(node.target).split("."):
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, torch.Tensor) else None
    return None


def _evict_children(gm: fx.GraphModule, owner: str) -> None:
    """Move the children of module ``owner`` beside it and retarget the graph.

    Quantized modules replace float ones wholesale during convert, so a conv must not carry
    children (such as a "same"-padding module) that the graph still calls.
    """
    holder = gm.get_submodule(owner)
    parent_name, _, leaf = owner.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    for child_name, child in list(holder.named_children()):
        new_leaf = f"{leaf}_{child_name}"
        while hasattr(parent, new_leaf):
            new_leaf += "_"
        parent.add_module(new_leaf, child)
        delattr(holder, child_name)
        old_prefix = f"{owner}.{child_name}"
        new_prefix = f"{parent_name}.{new_leaf}" if parent_name else new_leaf
        for node in gm.graph.nodes:
            t = str(node.target)
            if node.op in ("call_module", "get_attr") and (t == old_prefix or t.startswith(old_prefix + ".")):
                node.target = new_prefix + t[len(old_prefix) :]


def _resolves_on(new: nn.Module, path: str) -> bool:
    obj: Any = new
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _holder_still_read(gm: fx.GraphModule, owner: str, new: nn.Module, leaving: set[fx.Node]) -> bool:
    """Whether the graph reads an attribute of ``owner`` that ``new`` does not have (a plain tensor
    attribute ``self.w`` read by the op being replaced is named ``w``, not ``weight``; another op may
    read the same holder). Nodes in ``leaving`` are about to be erased."""
    prefix = owner + "."
    for n in gm.graph.nodes:
        if n in leaving or n.op != "get_attr" or not str(n.target).startswith(prefix):
            continue
        if not _resolves_on(new, str(n.target)[len(prefix) :]):
            return True
    return False


def _place(gm: fx.GraphModule, owner: str, new: nn.Module, leaving: set[fx.Node] = frozenset()) -> str:  # type: ignore[assignment]
    """Install ``new`` at ``owner`` if that is a plain attribute holder nothing else reads, else beside it."""
    old = gm.get_submodule(owner) if owner else None
    if (
        owner
        and old is not None
        and type(old) is nn.Module  # an attribute holder made by GraphModule
        and not _holder_still_read(gm, owner, new, leaving)
    ):
        _evict_children(gm, owner)
        parent, _, leaf = owner.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, new)
        return owner
    i = 0
    while True:
        cand = f"{owner.replace('.', '_') or 'op'}_ptsq{i}"
        if not hasattr(gm, cand):
            gm.add_module(cand, new)
            return cand
        i += 1


def _conv_modules(gm: fx.GraphModule) -> int:
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        is_conv = node.target in _CONV_FUNCS
        if not (is_conv or node.target in _LINEAR_FUNCS):
            continue
        weight = _attr(gm, _arg(node, 1, "weight", None))
        bias_node = _arg(node, 2, "bias", None)
        bias = _attr(gm, bias_node)
        if weight is None or (bias_node is not None and bias is None):
            continue  # weights computed at run time: leave the op alone
        if is_conv:
            spec = ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1), (6, "groups", 1))
            stride, padding, dilation, groups = (_arg(node, i, n, d) for i, n, d in spec)
            if any(isinstance(v, fx.Node) for v in (stride, padding, dilation, groups)):
                continue
            cls = _CONV_FUNCS[node.target]
            mod: nn.Module = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=stride,
                                 padding=padding, dilation=dilation, groups=groups, bias=bias is not None)  # fmt: skip
        else:
            mod = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            mod.weight.copy_(weight)
            if bias is not None:
                mod.bias.copy_(bias)
        w_node = _arg(node, 1, "weight", None)
        owner = str(w_node.target).rpartition(".")[0]
        # the weight/bias reads go with the op unless another op reads them too
        leaving = {a for a in (w_node, bias_node) if isinstance(a, fx.Node) and set(a.users) == {node}}
        name = _place(gm, owner, mod.eval(), leaving)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        for a in leaving:
            gm.graph.erase_node(a)
        count += 1
    return count


def _module(gm: fx.GraphModule, node: Any) -> nn.Module | None:
    if isinstance(node, fx.Node) and node.op == "call_module":
        return gm.get_submodule(str(node.target))
    return None


def _fold_pads(gm: fx.GraphModule) -> int:
    count = 0
    for node in list(gm.graph.nodes):
        pad = _module(gm, node)
        if isinstance(pad, (nn.ZeroPad2d, nn.ConstantPad2d)) and (
            isinstance(pad, nn.ZeroPad2d) or float(pad.value) == 0.0
        ):
            left, right, top, bottom = pad.padding
            users = list(node.users)
            if left != right or top != bottom or len(users) != 1:
                continue
            conv = _module(gm, users[0])
            if type(conv) is not nn.Conv2d or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
                continue
            conv.padding = (conv.padding[0] + top, conv.padding[1] + left)
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            count += 1
    return count


def _replace(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    old = gm.get_submodule(target)
    if isinstance(old, KeepFloat):  # a layer kept fp32 by a skip rule: it stays fp32, BN folded in
        new = KeepFloat(new, old.reason)
    else:
        _evict_children(gm, target)
    parent, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, new)


def _weighted(gm: fx.GraphModule, node: Any) -> nn.Module | None:
    """The module ``node`` calls, or the layer inside it when it is kept fp32 (BN still folds into it,
    exactly; a standalone int8 BatchNorm after it would quantize the pre-BN range)."""
    mod = _module(gm, node)
    return mod.inner if isinstance(mod, KeepFloat) else mod


def _value_users(node: fx.Node) -> int:
    """Users of ``node`` other than reads of its shape/dtype (timm asserts ``x.ndim == 4`` before a BN),
    which folding the BN into the producer leaves valid."""
    return sum(
        not (
            (u.op == "call_function" and u.target is getattr and len(u.args) == 2 and u.args[1] in _METADATA)
            or (u.op == "call_method" and u.target in ("dim", "size"))
        )
        for u in node.users
    )


def _calls(gm: fx.GraphModule, target: str) -> int:
    return sum(n.op == "call_module" and n.target == target for n in gm.graph.nodes)


def _fold_functional_bn(gm: fx.GraphModule, node: fx.Node) -> bool:
    """``F.batch_norm`` on fixed statistics after a conv (timm's BatchNormAct2d traces to this)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    src = node.args[0]
    layer = _weighted(gm, src)
    if type(layer) not in (nn.Conv1d, nn.Conv2d) or _value_users(src) != 1 or _calls(gm, str(src.target)) != 1:
        return False
    if _arg(node, 5, "training", False) is not False:
        return False
    mean, var = _attr(gm, _arg(node, 1, "running_mean", None)), _attr(gm, _arg(node, 2, "running_var", None))
    w_node, b_node = _arg(node, 3, "weight", None), _arg(node, 4, "bias", None)
    weight, bias = _attr(gm, w_node), _attr(gm, b_node)
    eps = _arg(node, 7, "eps", 1e-5)
    if mean is None or var is None or not isinstance(eps, float):
        return False
    if (w_node is not None and weight is None) or (b_node is not None and bias is None):
        return False  # affine parameters computed at run time
    fused = copy.deepcopy(layer)  # the module may be the caller's own: never change it in place
    fused.weight, fused.bias = fuse_conv_bn_weights(layer.weight, layer.bias, mean, var, eps, weight, bias)
    _replace(gm, str(src.target), fused)
    node.replace_all_uses_with(src)
    gm.graph.erase_node(node)
    return True


def _fold_bn(gm: fx.GraphModule) -> int:
    count = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is F.batch_norm:
            count += _fold_functional_bn(gm, node)
            continue
        bn = _module(gm, node)
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) or not bn.track_running_stats:
            continue
        src = node.args[0]
        layer = _weighted(gm, src)
        if layer is None or _value_users(src) != 1:
            continue
        if type(layer) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
        elif type(layer) in _TRANSPOSED:  # the BatchNorm scales the output channels, dim 1 of these weights
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval(), transpose=True)
        elif type(layer) is nn.Linear and isinstance(bn, nn.BatchNorm1d):
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        _replace(gm, str(src.target), fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        count += 1
    return count


def _equalize(gm: fx.GraphModule) -> int:
    from ptsq.algorithms.equalization import equalize

    return equalize(gm)


def _freeze_param_metadata(gm: fx.GraphModule) -> int:
    """``layer.weight.dtype`` / ``.device`` / ``.shape`` read in forward become constants.

    After convert a quantized layer's ``weight`` is a method, so the traced read fails at run time
    ('function' object has no attribute 'device': timm's xcit and edgenext); the values are fixed anyway.
    """
    count = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target is getattr and len(node.args) == 2):
            continue
        src, attr = node.args
        if not (isinstance(src, fx.Node) and src.op == "get_attr" and attr in _METADATA):
            continue
        value = getattr(_attr(gm, src), attr, None)
        if value is None:
            continue
        for user in list(node.users):
            user.args = fx.node.map_arg(user.args, lambda a, n=node, v=value: v if a is n else a)
            user.kwargs = fx.node.map_arg(user.kwargs, lambda a, n=node, v=value: v if a is n else a)
        gm.graph.erase_node(node)
        count += 1
    return count


def cleanup(model: nn.Module, steps: tuple[str, ...]) -> tuple[nn.Module, list[str]]:
    """Trace ``model`` and apply the graph steps; returns (GraphModule or the model, notes)."""
    wanted = [s for s in GRAPH_STEPS if s in steps]
    if not wanted:
        return model, []
    tracer = LeafTracer()
    tracer.record_stack_traces = True  # the user's line for any op a later step keeps fp32
    gm = fx.GraphModule(model, tracer.trace(model), class_name=type(model).__name__)
    notes = []
    done = {
        "conv-modules": ("functional convs/linears on fixed weights turned into modules", _conv_modules),
        "fold-pad": ("symmetric zero pads folded into the following conv", _fold_pads),
        "fold-bn": ("BatchNorms folded into the preceding conv/linear", _fold_bn),
        "equalize": ("conv/linear pairs equalized across layers", _equalize),
    }
    for step in wanted:
        what, fn = done[step]
        n = fn(gm)
        if n:
            notes.append(f"clean-up: {n} {what}")
    _freeze_param_metadata(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval(), notes


# ----------------------------------------------------------------------------- after calibration
def _activation_range(gm: fx.GraphModule, node: fx.Node) -> tuple[float, float] | None:
    """The fixed output range of a ReLU6 / hardtanh / clamp / relu node, if it is one."""
    mod = _module(gm, node)
    if isinstance(mod, nn.ReLU6):
        return (0.0, 6.0)
    # a ReLU after a layer kept fp32 (speed guard, skip rules) is not fused: without this its input
    # is quantized over the negative values the ReLU drops (Fashion ResNet stem: 33.4 -> 29.5 dB)
    if (
        isinstance(mod, nn.ReLU)
        or (node.op == "call_function" and node.target in (F.relu, torch.relu))
        or (node.op == "call_method" and node.target == "relu")
    ):
        return (0.0, float("inf"))
    if isinstance(mod, nn.Hardtanh):
        return (float(mod.min_val), float(mod.max_val))
    if node.op == "call_function" and node.target in (F.relu6,):
        return (0.0, 6.0)
    if node.op == "call_function" and node.target in (F.hardtanh, torch.clamp, torch.clip):
        lo = _arg(
            node, 1, "min_val" if node.target is F.hardtanh else "min", -1.0 if node.target is F.hardtanh else None
        )
        hi = _arg(
            node, 2, "max_val" if node.target is F.hardtanh else "max", 1.0 if node.target is F.hardtanh else None
        )
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            return (float(lo), float(hi))
    if node.op == "call_method" and node.target in ("clamp", "clip"):
        lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            return (float(lo), float(hi))
    return None


def clamp_ranges(prepared: fx.GraphModule) -> int:
    """Narrow observers whose every user is a bounded activation to that bound; returns how many.

    Quantizing with saturation at [lo, hi] and then clamping to [lo, hi] equals clamping first, so
    this is exact whatever produced the value; it only stops bits going to values the clamp discards.
    """
    from torch.ao.quantization.observer import MinMaxObserver, ObserverBase

    from ptsq.algorithms.observers import chosen_range

    count = 0
    owners: dict[int, list[str]] = {}
    for name, mod in prepared.named_children():
        if isinstance(mod, ObserverBase):
            owners.setdefault(id(mod), []).append(name)
    for node in prepared.graph.nodes:
        obs = _module(prepared, node)
        if not isinstance(obs, ObserverBase) or not hasattr(obs, "min_val") or obs.min_val.numel() != 1:
            continue
        ranges = [_activation_range(prepared, u) for u in node.users]
        if not ranges or any(r is None for r in ranges):
            continue
        lo = min(r[0] for r in ranges)  # type: ignore[index]
        hi = max(r[1] for r in ranges)  # type: ignore[index]
        if float(obs.min_val) >= lo and float(obs.max_val) <= hi:
            continue  # already inside: nothing to gain
        chosen = chosen_range(obs, (lo, hi))  # chosen for the clamped values (histogram/MSE/... clip)
        if chosen is None:
            continue
        # quant_min/max already hold the 7-bit reduction: passing reduce_range too would halve it again
        new = MinMaxObserver(
            dtype=obs.dtype, qscheme=obs.qscheme, reduce_range=False, quant_min=obs.quant_min, quant_max=obs.quant_max
        )
        new.min_val = torch.tensor(max(chosen[0], lo))
        new.max_val = torch.tensor(max(min(chosen[1], hi), float(new.min_val) + 1e-6))
        for attr in owners.get(id(obs), []):
            setattr(prepared, attr, new)
        count += 1
    return count
