"""A replay module for gradient matching: the same function as the victim model in eval mode, with
backward passes built for being differentiated again (opt-in: attacks.objective.FastGradientMatcher)."""
from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from fedleak.threat_models.gradient_tape import (BatchNormGradient, BiasGradient, ConvWeightGradient, LinearGradient,
                                         active_tape, batchnorm_weight_gradient, stand_in)

# Matching a trial gradient differentiates a gradient (double backward). Profiling IG on a CPU showed
# costs that are not the convolutions' arithmetic itself: (1) eval-mode BatchNorm's generic double
# backward, (2) PyTorch's double backward of conv2d, which computes the input-gradient term with a
# batch<->channel transposed convolution (a 32x32 "kernel" over one channel: ~3x a forward
# convolution, plus layout copies), and (3) weight gradients for the replayed parameters, which the
# attack's outer backward never uses. The replay module below removes them without changing the
# function: BN is folded into the preceding convolution or replaced by a lean custom function, and
# every convolution's backward is written with ordinary convolutions that skip unused gradients.
# docs/performance.md has the measurements.


def _output_padding(input_hw, output_hw, weight_hw, stride, padding, dilation) -> list[int]:
    """What conv_transpose2d needs to give back exactly the input size (strided convs drop rows)."""
    return [i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for i, o, k, s, p, d in zip(input_hw, output_hw, weight_hw, stride, padding, dilation)]


def _needed(ctx, index: int) -> bool:
    """Whether this backward pass will use the gradient for input `index`. ctx.needs_input_grad only
    says the input requires grad; the attack's outer backward (inputs=[x]) never uses the weight
    gradient, and computing it anyway would cost one weight-gradient convolution per layer."""
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    if node is None:
        return False
    try:
        return torch._C._will_engine_execute_node(node)
    except (AttributeError, RuntimeError):  # private API gone, or a leaf under autograd.grad: be safe
        return True


class _Conv2dWeightGrad(torch.autograd.Function):
    """d<go, conv(x, W)>/dW as a differentiable function of (x, go). Its own backward is two plain
    convolutions (<ggW, corr(x, go)> = <conv(x, ggW), go>), which is the term PyTorch's generic
    conv double backward computes with the slow transposed convolution."""

    @staticmethod
    def forward(x, go, weight, stride, padding, dilation, groups):
        return torch.ops.aten.convolution_backward(go, x, weight, None, stride, padding, dilation, False,
                                                   [0, 0], groups, [False, True, False])[1]

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, go, weight, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, go)
        ctx.conf = (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, ggw):
        x, go = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        gx = ggo = None
        if _needed(ctx, 0):
            pad = _output_padding(x.shape[2:], go.shape[2:], ggw.shape[2:], stride, padding, dilation)
            gx = F.conv_transpose2d(go, ggw, None, stride, padding, pad, groups, dilation)
        if _needed(ctx, 1):
            ggo = F.conv2d(x, ggw, None, stride, padding, dilation, groups)
        return gx, ggo, None, None, None, None, None


class _Conv2d(torch.autograd.Function):
    """F.conv2d whose backward is built from differentiable convolutions, so the graph that
    create_graph=True records (and the attack later backpropagates through) is plain convolutions."""

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.bias_names = _per_restart_names(bias)

    @staticmethod
    def backward(ctx, go):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        gx = gw = gb = None
        if _needed(ctx, 0):
            pad = _output_padding(x.shape[2:], go.shape[2:], weight.shape[2:], stride, padding, dilation)
            gx = F.conv_transpose2d(go, weight, None, stride, padding, pad, groups, dilation)
        tape = active_tape()
        if _needed(ctx, 1):
            if tape is not None and tape.takes_conv(go, weight, groups):
                tape.records.append(ConvWeightGradient(tape.name(weight), x, go, weight.detach(), ctx.conf,
                                                         _conv2d, _Conv2dWeightGrad.apply))
                gw = stand_in(weight)
            else:
                gw = _Conv2dWeightGrad.apply(x, go, weight.detach(), stride, padding, dilation, groups)
        if ctx.has_bias and _needed(ctx, 2):
            if tape is not None and ctx.bias_names is not None:
                tape.records.append(BiasGradient(*ctx.bias_names, go))
                gb = stand_in(go, go.shape[1:2])
            else:
                gb = go.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


def _conv2d(x, weight, bias, *, stride, padding, dilation, groups):
    return _Conv2d.apply(x, weight, bias, stride, padding, dilation, groups)


def _per_restart_names(*params) -> tuple | None:
    """Set in a layer's forward: the names its parameter gradients are recorded under (restarts as one
    batch, threat_models.gradient_tape), or None."""
    tape = active_tape()
    return None if tape is None else tape.per_restart_names(*params)


class _Linear(torch.autograd.Function):
    """F.linear on (N, in) inputs whose backward records its parameter gradients on a per-restart
    tape (threat_models.gradient_tape); otherwise the same products autograd would form."""

    @staticmethod
    def forward(x, weight, bias):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.names = _per_restart_names(weight, bias)

    @staticmethod
    def backward(ctx, go):
        x, weight = ctx.saved_tensors
        gx = go @ weight if _needed(ctx, 0) else None
        tape = active_tape()
        if tape is not None and ctx.names is not None:
            tape.records.append(LinearGradient(*ctx.names, x, go))
            return gx, stand_in(weight), stand_in(go, go.shape[1:]) if ctx.has_bias else None
        gw = go.T @ x if _needed(ctx, 1) else None
        gb = go.sum(0) if ctx.has_bias and _needed(ctx, 2) else None
        return gx, gw, gb


def _linear(x, weight, bias):
    if x.dim() != 2:
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)


class _EvalBatchNorm(torch.autograd.Function):
    """Eval-mode BatchNorm2d, y = x·a + b per channel, with a backward of four tensor ops written
    as differentiable expressions. PyTorch's native BN double backward handles training mode too
    and cost a fifth of an IG iteration on its own."""

    @staticmethod
    def forward(x, weight, bias, mean, var, eps):
        inv_std = torch.rsqrt(var + eps)
        scale = inv_std if weight is None else weight * inv_std
        shift = -mean * scale if bias is None else bias - mean * scale
        return torch.addcmul(shift[:, None, None], x, scale[:, None, None])

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, mean, var, eps = inputs
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.has_weight, ctx.has_bias = eps, weight is not None, bias is not None
        ctx.names = _per_restart_names(weight, bias)

    @staticmethod
    def backward(ctx, go):
        x, weight, mean, var = ctx.saved_tensors
        inv_std = torch.rsqrt(var + ctx.eps)
        gx = gw = gb = None
        if _needed(ctx, 0):
            gx = go * (inv_std if weight is None else weight * inv_std)[:, None, None]
        tape = active_tape()
        if tape is not None and ctx.names is not None:
            tape.records.append(BatchNormGradient(*ctx.names, x, go, mean, inv_std))
            return (gx, None if weight is None else stand_in(weight),
                    stand_in(go, go.shape[1:2]) if ctx.has_bias else None, None, None, None)
        channel_sum = None
        if ctx.has_bias and _needed(ctx, 2):
            gb = channel_sum = go.sum((0, 2, 3))
        if ctx.has_weight and _needed(ctx, 1):
            channel_sum = go.sum((0, 2, 3)) if channel_sum is None else channel_sum
            gw = batchnorm_weight_gradient(go, x, mean, inv_std, channel_sum, (0, 2, 3))
        return gx, gw, gb, None, None, None


def _conv2d_batchnorm(x, weight, bias, bn_weight, bn_bias, mean, var, *, stride, padding, dilation, groups, eps):
    # Eval-mode BN is a per-channel affine map, so conv -> BN can be one convolution with weight W*s
    # and bias (b - mean)*s + beta; autograd through s gives exactly the two layers' gradients while
    # no pass touches an activation map for the BN. But those passes touch the weight instead
    # (about 7 per iteration against about 12 activation-sized ones for a separate BN), so fold only
    # where the weight is the smaller tensor: not in ResNet's late stages (512x512x3x3 vs 4x4 maps).
    out_hw = [(size + 2 * p - d * (k - 1) - 1) // s + 1
              for size, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)]
    activation = x.shape[0] * weight.shape[0] * out_hw[0] * out_hw[1]
    tape = active_tape()
    # restarts taped per parameter need the convolution's and the BN's own parameters as leaves
    if 7 * weight.numel() > 12 * activation or (tape is not None and tape.restarts is not None):
        return _EvalBatchNorm.apply(_Conv2d.apply(x, weight, bias, stride, padding, dilation, groups),
                                    bn_weight, bn_bias, mean, var, eps)
    scale = torch.rsqrt(var + eps)
    if bn_weight is not None:
        scale = scale * bn_weight
    shift = -mean * scale if bias is None else (bias - mean) * scale
    if bn_bias is not None:
        shift = shift + bn_bias
    return _Conv2d.apply(x, weight * scale.view(-1, 1, 1, 1), shift, stride, padding, dilation, groups)


# Leaf modules whose eval-mode forward is a pure function of input and parameters; a model with
# anything else (dropout masks, hooks that mutate state, custom layers) is left as it is.
_PURE_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)


def fast_replay_model(model: nn.Module) -> nn.Module:
    """The same function as `model` in eval mode, for differentiable replays: Conv2d -> BatchNorm2d
    pairs folded into one convolution, every Conv2d's backward made of plain convolutions, and the
    convolutions, BN and Linear layers able to leave their parameter gradients to a gradient tape.
    Parameter and buffer names are unchanged, so it takes the same dicts in functional_call.
    Returns `model` itself when it has no convolution, is in train mode, or does not trace."""
    leaves = [m for m in model.modules() if not list(m.children())]
    if model.training or not any(isinstance(m, nn.Conv2d) for m in leaves):
        return model
    if not all(type(m) in _PURE_MODULES or isinstance(m, nn.Sequential) for m in leaves):
        return model
    if model._forward_hooks or model._forward_pre_hooks or any(m._forward_hooks or m._forward_pre_hooks for m in leaves):
        return model
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow: keep the original
        return model
    modules = dict(traced.named_modules())
    graph = traced.graph

    def attr(owner: str, name: str):
        return graph.get_attr(f"{owner}.{name}") if getattr(modules[owner], name) is not None else None

    def convertible(node) -> bool:
        m = modules.get(node.target) if node.op == "call_module" else None
        return (type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str)
                and len(node.args) == 1 and not node.kwargs)

    changed = False
    for node in list(graph.nodes):
        if node.op == "call_method" and node.target == "view":
            # the replay runs in channels_last, where a flattening .view() (the PyTorch tutorials' CNN:
            # x.view(-1, 16*5*5)) has no valid strides; .reshape() gives the same values
            node.target = "reshape"
            continue
        if node.op == "call_module" and type(modules.get(node.target)) is nn.Linear and len(node.args) == 1 \
                and not node.kwargs:
            with graph.inserting_before(node):
                new = graph.call_function(_linear, (node.args[0], attr(node.target, "weight"),
                                                    attr(node.target, "bias")))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            continue
        if not convertible(node):
            continue
        conv = modules[node.target]
        conf = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
        users = list(node.users)
        bn = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
        foldable = (type(bn) is nn.BatchNorm2d and not bn.training and bn.running_mean is not None
                    and len(users[0].args) == 1 and not users[0].kwargs)
        replaced = users[0] if foldable else node
        with graph.inserting_before(replaced):
            if foldable:
                new = graph.call_function(_conv2d_batchnorm, (
                    node.args[0], attr(node.target, "weight"), attr(node.target, "bias"),
                    attr(replaced.target, "weight"), attr(replaced.target, "bias"),
                    attr(replaced.target, "running_mean"), attr(replaced.target, "running_var")),
                    dict(conf, eps=bn.eps))
            else:
                new = graph.call_function(_conv2d, (node.args[0], attr(node.target, "weight"),
                                                    attr(node.target, "bias")), conf)
        replaced.replace_all_uses_with(new)
        graph.erase_node(replaced)
        if foldable:
            graph.erase_node(node)
        changed = True
    if not changed:
        return model
    graph.lint()
    traced.recompile()

    def names(m):
        return {*dict(m.named_parameters(remove_duplicate=False)), *dict(m.named_buffers(remove_duplicate=False))}
    return traced if names(traced) == names(model) else model
