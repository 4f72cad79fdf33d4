"""Where an IG iteration goes: torch.profiler over a few iterations, plain path vs fast path.

    python benchmarks/profile_ig.py [--model convnet|resnet18] [--iterations 6] [--top 15]

"plain" is attacks.objective.GradientMatcher with backward() over all leaves, i.e. IG before the
performance work (and the same computation breaching runs); "fast" is the current IG. Self CPU time
of the profiled ops is grouped into convolutions, BatchNorm, elementwise/reduction kernels and the
rest, and the number of kernels (ops on >= 32768 elements, which PyTorch parallelises) per
iteration is counted: on a loaded machine each of those waits for the second OpenMP thread.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

GROUPS = {
    "convolution": ("conv", "mkldnn", "slow_conv"),
    "batch norm": ("batch_norm",),
    "elementwise/reduction": ("mul", "add", "sub", "div", "sum", "pow", "sqrt", "fill", "copy", "threshold", "relu",
                              "clamp", "dot", "cat", "addcmul", "where", "neg", "zero", "max_pool", "abs", "sign"),
}


def _group(name: str) -> str:
    op = name.removeprefix("aten::")
    for group, keys in GROUPS.items():
        if any(k in op for k in keys):
            return group
    return "other"


def _plain_attack(case, iterations):
    import fedleak.attacks.inverting_gradients as ig
    from fedleak.attacks import objective

    class Plain(objective.GradientMatcher):
        def __init__(self, observation, model, knowledge, distance="cosine", precision="fp32"):
            super().__init__(observation, model, knowledge, distance)
            self.precision = "fp32"

        def batched_value_and_grad(self, *args):
            return None

    original_matcher, original_backward = ig.FastGradientMatcher, torch.Tensor.backward
    ig.FastGradientMatcher = Plain
    # the pre-optimisation loop called backward() without inputs=: differentiate every leaf
    torch.Tensor.backward = lambda self, gradient=None, retain_graph=None, create_graph=False, inputs=None: \
        original_backward(self, gradient, retain_graph, create_graph)
    try:
        return case.attack(iterations)
    finally:
        ig.FastGradientMatcher, torch.Tensor.backward = original_matcher, original_backward


def profile_path(case, iterations: int, plain: bool):
    run = (lambda n: _plain_attack(case, n)) if plain else case.attack
    run(2)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run(iterations)
    events = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    groups = collections.Counter()
    for e in events:
        groups[_group(e.key)] += e.self_cpu_time_total
    total = sum(groups.values())
    views = ("view", "detach", "expand", "permute", "as_strided", "slice", "reshape", "transpose", "unsqueeze",
             "squeeze", "select", "aten::t", "alias", "split", "empty", "resize_", "contiguous", "to", "_to_copy")
    big = sum(e.count for e in events if any(_numel(s) >= 32768 for s in e.input_shapes or [])
              and e.key.removeprefix("aten::") not in {v.removeprefix("aten::") for v in views})
    return prof, groups, total, big / (iterations + 1)


def _numel(shape) -> int:
    if not isinstance(shape, (list, tuple)) or not shape or not all(isinstance(s, int) for s in shape):
        return 0
    n = 1
    for s in shape:
        n *= s
    return n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from cases import build_case
    case = build_case(args.model)
    for label, plain in (("plain (before)", True), ("fast (now)", False)):
        prof, groups, total, kernels = profile_path(case, args.iterations, plain)
        per_iteration = total / (args.iterations + 1) / 1e3  # +1: the final scoring pass
        print(f"\n== {args.model}, {label}: {per_iteration:.0f} ms self CPU per iteration, "
              f"{kernels:.0f} parallel-size kernels per iteration")
        for group, t in groups.most_common():
            print(f"   {group:24s} {100 * t / total:5.1f} %")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
