"""One ladder rung of the quickstart app's saved updates, attacked in-process (docs/attacks.md, issue 21):
    python tools/quickstart_rungs.py SAVED_DIR {one|batch|app} ITERATIONS RESTARTS "{'tv': 3e-2}" [ATTACK]
`one`: each client's first image alone, one step; `batch`: its 4 images, one full-batch step; `app`: the
recorded update (2 steps of batch 2, SGD momentum 0.9, shuffled). Prints per-client PSNRs and the median."""
import ast
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "flower_quickstart"))
from digitsapp import task  # noqa: E402

from fedleak.attacks import Budget, build_attack  # noqa: E402
from fedleak.defenses import NoDefense  # noqa: E402
from fedleak.harness.flower.ladder import simulated_update  # noqa: E402
from fedleak.metrics.image import match_to_ground_truth, psnr  # noqa: E402
from fedleak.models.functional import LocalTraining  # noqa: E402
from fedleak.threat_models import build_threat_model  # noqa: E402
from fedleak.threat_models.flower_observation import observation_from_update  # noqa: E402
from fedleak.threat_models.knowledge import knowledge_flags  # noqa: E402
from fedleak.threat_models.update_files import load_updates  # noqa: E402


def main(saved: str, mode: str, iterations: int, restarts: int, options: dict, attack: str = "ig") -> None:
    torch.set_num_threads(1)
    updates = sorted(load_updates(saved), key=lambda u: u.partition_id)
    model = task.Net().eval()
    app = LocalTraining(lr=0.1, batch_size=2, momentum=0.9, shuffle=True)
    training = replace(app, epochs=1, batch_size=None, shuffle=False) if mode in ("one", "batch") else app
    scores = []
    for update in updates:
        p = update.partition_id
        x, y = task.partition(p, len(updates), 4)
        index = [0] if mode == "one" else list(range(4))
        xs, ys = x[index], y[index]
        x_norm = task.normalise(xs)
        if mode != "app":
            update = simulated_update(update, model, training, x_norm, ys, p, 0)
        observation = observation_from_update(update, model, "weights")
        victim = SimpleNamespace(model=model, params=observation.global_params, buffers=observation.buffers,
                                 data=SimpleNamespace(num_classes=10, mean=task.MEAN, std=task.STD,
                                                      train_images=None, train_labels=None))
        knowledge = build_threat_model("fedavg", training).knowledge(victim, x_norm, ys, NoDefense(), knowledge_flags("informed"))
        started = time.time()
        rec = build_attack(attack, **options).reconstruct(observation, model, knowledge, Budget(iterations, restarts), seed=p)
        order = match_to_ground_truth(rec.images, xs)
        values = [psnr(rec.images[order[i]:order[i] + 1], xs[i:i + 1]).item() for i in range(len(xs))]
        scores += values
        print(p, [f"{v:.1f}" for v in values], f"loss {rec.gradient_loss:.4f}", rec.extras.get("stopped_by"),
              rec.extras.get("iterations_run"),
              f"{time.time() - started:.0f}s", flush=True)
    print(f"MEDIAN {statistics.median(scores):.2f} min {min(scores):.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
         ast.literal_eval(sys.argv[5]) if len(sys.argv) > 5 else {}, *sys.argv[6:7])
