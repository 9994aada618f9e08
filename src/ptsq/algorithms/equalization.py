"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) on a traced fp32 graph.

For two layers A -> B where only scale-equivariant ops sit between them (ReLU, LeakyReLU, PReLU,
max/avg pooling, identity), output channel i of A can be divided by s_i > 0 and the matching input
channel of B multiplied by s_i without changing the model's function. Choosing
s_i = sqrt(r_A[i] / r_B[i]) (r = the channel's weight range) gives both layers the same per-channel
weight range, which helps per-tensor and depthwise weights most (depthwise-separable nets).

ReLU6, hardtanh, clamp and anything else with a fixed threshold are NOT scale-equivariant:
relu6(x / s) != relu6(x) / s. Pairs joined by them are left alone, as are values with more than one
user (a residual add would see the rescaled channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

ITERATIONS = 4
MIN_RANGE = 1e-8
MAX_SCALE = 1e4

_EQUIVARIANT_MODULES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                        nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout)  # fmt: skip
_EQUIVARIANT_FUNCS = {F.relu, torch.relu, F.leaky_relu, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d}


def _layer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    mod = gm.get_submodule(str(node.target))
    return mod if type(mod) in (nn.Conv1d, nn.Conv2d, nn.Linear) else None


def _equivariant(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        # PReLU/LeakyReLU: f(x / s) = f(x) / s for s > 0, whatever the (per-channel) slope
        return type(gm.get_submodule(str(node.target))) in _EQUIVARIANT_MODULES
    if node.op == "call_function":
        return node.target in _EQUIVARIANT_FUNCS
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    return False


def find_pairs(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(A, B) module names that can be equalized: A's value reaches only B, through equivariant ops."""
    pairs = []
    for node in gm.graph.nodes:
        a = _layer(gm, node)
        if a is None:
            continue
        cur = node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            b = _layer(gm, nxt)
            if b is not None:
                if nxt.args and nxt.args[0] is cur and len(nxt.args) == 1 and _compatible(a, b):
                    pairs.append((str(node.target), str(nxt.target)))
                break
            if not _equivariant(gm, nxt) or not nxt.args or nxt.args[0] is not cur:
                break
            cur = nxt
    return pairs


def _compatible(a: nn.Module, b: nn.Module) -> bool:
    out_a = a.weight.shape[0]
    in_b = b.weight.shape[1] * (b.groups if isinstance(b, nn.Conv1d | nn.Conv2d) else 1)
    if isinstance(a, nn.Linear) != isinstance(b, nn.Linear):
        return False
    return out_a == in_b


def _b_view(b: nn.Module) -> torch.Tensor:
    """B's weight as (groups, out/groups, in/groups, ...) so input channel i is [i // ipg, :, i % ipg]."""
    w = b.weight
    groups = b.groups if isinstance(b, nn.Conv1d | nn.Conv2d) else 1
    return w.reshape(groups, w.shape[0] // groups, *w.shape[1:])


def _in_ranges(b: nn.Module) -> torch.Tensor:
    v = _b_view(b).abs().transpose(1, 2)  # (groups, ipg, out/groups, ...)
    return v.reshape(v.shape[0] * v.shape[1], -1).amax(1)


def equalize_pair(a: nn.Module, b: nn.Module) -> None:
    with torch.no_grad():
        r_a = a.weight.abs().reshape(a.weight.shape[0], -1).amax(1)  # output channel ranges, any groups
        r_b = _in_ranges(b)
        ok = (r_a > MIN_RANGE) & (r_b > MIN_RANGE)
        s = torch.where(ok, torch.sqrt(r_a / r_b.clamp_min(MIN_RANGE)), torch.ones_like(r_a))
        s = s.clamp(1.0 / MAX_SCALE, MAX_SCALE)
        shape_a = (-1,) + (1,) * (a.weight.dim() - 1)
        a.weight.div_(s.reshape(shape_a))
        if a.bias is not None:
            a.bias.div_(s)
        view = _b_view(b)
        groups, ipg = view.shape[0], view.shape[2]
        sb = s.reshape(groups, 1, ipg, *(1,) * (view.dim() - 3))
        b.weight.copy_((view * sb).reshape(b.weight.shape))


def equalize(gm: fx.GraphModule, iterations: int = ITERATIONS) -> int:
    """Equalize every valid pair in place (a few sweeps so chains settle); returns the number of pairs."""
    pairs = find_pairs(gm)
    for _ in range(iterations):
        for a_name, b_name in pairs:
            equalize_pair(gm.get_submodule(a_name), gm.get_submodule(b_name))
    return len(pairs)
