"""Reference side of the IG speed benchmark: runs breaching 0.1.2's Inverting Gradients attacker.

Runs inside .venv-breaching (benchmarks/setup_breaching.sh), never inside fedleak's environment.
It is a long-lived worker so the benchmark can interleave fedleak and breaching repetitions on a
loaded machine: each stdin line is a JSON request, each answer one JSON line on stdout.

A request names a case file written by the benchmark (torch.save of the model spec, global weights,
buffers, observed gradient, label, ground truth, normalisation) plus iterations, restarts, TV scale
and seed. The model is fedleak's own architecture (models/architectures.py loaded as a plain file,
so none of fedleak's packages is imported) with the same weights, so both frameworks attack the same
network and only the attack machinery differs. breaching receives it as any user model, in eval mode
(the server payload carries buffers), exactly as its IG case does with a user-supplied network.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import sys
import time
import types
import warnings


def _load_fedleak_models(repo: str):
    # only the architectures and the two tiny core modules they need: fedleak's own __init__ (and
    # everything it would pull in) is not run in breaching's environment
    package = types.ModuleType("fedleak")
    package.__path__ = [repo]
    sys.modules.setdefault("fedleak", package)
    spec = importlib.util.spec_from_file_location("_fedleak_models", f"{repo}/models/architectures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _attack_config(breaching, iterations: int, restarts: int, tv: float):
    overrides = [
        f"optim.max_iterations={iterations}",
        f"restarts.num_trials={restarts}",
        f"regularization.total_variation.scale={tv}",
        "optim.callback=1000000000",  # no per-iteration logging inside the timed loop
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # get_attack_config prints; stdout is the protocol
        return breaching.get_attack_config("invertinggradients", overrides=overrides)


def run(request: dict, breaching, models, torch) -> dict:
    case = torch.load(request["case"], weights_only=False)
    torch.manual_seed(request.get("seed", 0))
    model = models.build_model(case["model"], case["num_classes"], tuple(case["shape"]), **case["options"])
    shape = tuple(case["shape"])
    metadata = types.SimpleNamespace(shape=shape, mean=case["mean"], std=case["std"], modality="vision")
    server_payload = [dict(parameters=case["params"], buffers=case["buffers"], metadata=metadata)]
    shared_data = [dict(gradients=case["gradient"], buffers=None,
                        metadata=dict(num_data_points=1, labels=case["labels"], local_hyperparams=None))]
    loss_fn = torch.jit.script(torch.nn.CrossEntropyLoss())  # as breaching's construct_model does
    cfg = _attack_config(breaching, request["iterations"], request["restarts"], request["tv"])
    attacker = breaching.attacks.prepare_attack(model, loss_fn, cfg, dict(dtype=torch.float, device=torch.device("cpu")))

    start = time.perf_counter()
    reconstruction, _ = attacker.reconstruct(server_payload, shared_data, {}, dryrun=False)
    seconds = time.perf_counter() - start

    dm = torch.as_tensor(case["mean"]).view(1, -1, 1, 1)
    ds = torch.as_tensor(case["std"]).view(1, -1, 1, 1)
    image = (reconstruction["data"].detach() * ds + dm).clamp(0, 1)
    mse = (image - case["truth"]).pow(2).mean().item()
    iterations = request["iterations"] * request["restarts"]
    return {"seconds": seconds, "s_per_iteration": seconds / iterations,
            "iterations_per_s": iterations / seconds, "psnr": 10 * math.log10(1 / max(mse, 1e-10)),
            "maxrss_kb": _peak_rss_kb()}


def _peak_rss_kb() -> int:
    # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS across fork+exec into ru_maxrss
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))


def main() -> None:
    repo = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(threads)
    import breaching

    models = _load_fedleak_models(repo)
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = run(json.loads(line), breaching, models, torch)
        except Exception as error:  # the benchmark reports it instead of hanging on a dead worker
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
