"""The leakage ladder (issue 21): the same attack on the same images, from the easiest setting to the
app's own, so an audit that rebuilds nothing shows where rebuilding stops and that the attack works at
all where it should (the positive control of a realistic context):

1. every image alone, one step (a FedSGD gradient of one image);
2. the client's B images, one full-batch step;
3. the app's mini-batches and optimiser for one epoch (only when the app trains several epochs);
4. the app's own update, as the server recorded it.

Rungs 1-3 are fedleak's simulation of the client (threat model `fedavg`, `models.functional.local_update`)
from the global weights the client received, on its private images; the attacker is told the rung's
training as it is told the app's. Every rung goes through the audit's own path
(`update_audit.attack_updates`), so its rows are audit rows, written under `ladder/<rung>/`.

In the matrix the same rungs are extra cells (harness.matrix.ladder)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedleak.core.errors import ConfigError
from fedleak.core.io import atomic_write
from fedleak.harness.run.results import write_frame
from fedleak.harness.flower.update_audit import AttackSettings, Hooks, _normalise, attack_updates, plan_attack
from fedleak.models.functional import LocalTraining, local_update, shuffled_orders
from fedleak.threat_models.flower_observation import arrays_to_state
from fedleak.threat_models.update_files import ClientUpdate

# a synthetic partition id per single image: partition p's image i is p·SPLIT + i
SPLIT = 1000


def ladder_rungs(training: LocalTraining, num_images: int) -> list[tuple[str, LocalTraining | None, bool]]:
    """(label, the simulated client's training or None for the app's recorded update, one image per update)."""
    one_step = replace(training, epochs=1, batch_size=None, shuffle=False)
    steps = training.steps(num_images)
    rungs = [("1 image, 1 step", one_step, True)]
    if steps > 1:  # one step of the app is this rung already
        rungs.append((f"{num_images} images, 1 step", one_step, False))
    if training.epochs > 1:
        epoch = replace(training, epochs=1)
        rungs.append((f"{num_images} images, {epoch.steps(num_images)} steps (1 epoch)", epoch, False))
    rungs.append((f"the app: {num_images} images, {steps} step{'s' if steps > 1 else ''}", None, False))
    return rungs


def simulated_update(update: ClientUpdate, model: torch.nn.Module, training: LocalTraining, x_norm: torch.Tensor,
                     y: torch.Tensor, partition_id: int, seed: int) -> ClientUpdate:
    """`update`'s client retrained by fedleak from the global arrays it received, with `training`."""
    received = arrays_to_state(update.received, model)
    names = [n for n, _ in model.named_parameters()]
    params = {n: received[n].to(x_norm.device) for n in names}
    buffers = {n: received.get(n, b.detach().clone()).to(x_norm.device) for n, b in model.named_buffers()}
    delta = local_update(model, params, buffers, x_norm, y, training,
                         orders=shuffled_orders(len(x_norm), training, seed))
    sent = {n: (params[n] + d).detach().cpu().numpy() for n, d in zip(names, delta)}
    sent.update({n: b.detach().cpu().numpy() for n, b in buffers.items()})
    return ClientUpdate(update.client_id, update.round, sent, {n: np.asarray(v.cpu()) for n, v in received.items()},
                        len(x_norm), {}, partition_id, update.num_partitions)


def plan_ladder(hooks: Hooks, settings: AttackSettings):
    """The audit's plan, refused (ConfigError) where the ladder cannot be built."""
    plan = plan_attack(hooks, settings)
    if not plan.scored or plan.training is None:
        raise ConfigError("--ladder: needs the clients' private data (a private_data hook) and their local training "
                          "(local_training() or the training flags), to simulate the easier settings")
    return plan


def run_ladder(updates: list[ClientUpdate], hooks: Hooks, settings: AttackSettings, out: Path, provenance: dict,
               progress: bool = False, app_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every rung on every recorded update, rows under out/ladder/<k>/, the table as out/ladder.{csv,parquet,md}.
    `app_rows`: the audit's own rows on `updates` with `settings`, which are the app's rung (same attack, seeds
    and updates), so that rung is not attacked a second time."""
    from fedleak.reports.ladder import ladder_table
    plan = plan_ladder(hooks, settings)
    model = hooks.call("build_model").eval()
    mean, std = hooks.call("normalisation")
    frames = []
    for k, (label, training, single) in enumerate(ladder_rungs(plan.training, updates[0].num_examples)):
        if training is None and app_rows is not None:
            frames.append(app_rows.assign(ladder_rung=k + 1, ladder_label=label))
            continue
        if training is None:
            rung_updates, rung_hooks = list(updates), hooks
        else:
            rung_updates, data = [], {}
            for update in updates:
                x, y = hooks.call("private_data", update.partition_id, update.num_partitions or len(updates))
                parts = [(update.partition_id * SPLIT + i, [i]) for i in range(len(x))] if single \
                    else [(update.partition_id, list(range(len(x))))]
                for pid, index in parts:
                    data[pid] = (x[index], y[index])
                    rung_updates.append(simulated_update(update, model, training, _normalise(x[index], mean, std),
                                                         y[index], pid, settings.seed))
            rung_hooks = Hooks(hooks.module, hooks.run_config,
                               {**hooks.overrides, "private_data": lambda p, n, data=data: data[p]})
        rung_settings = replace(settings, training=training or plan.training, training_options={})
        result = attack_updates(rung_updates, rung_hooks, rung_settings, out / "ladder" / str(k + 1),
                                {**provenance, "ladder_rung": label}, progress=progress)
        frames.append(result.rows.assign(ladder_rung=k + 1, ladder_label=label))
    frame = pd.concat(frames, ignore_index=True)
    write_frame(frame, out, "ladder")
    atomic_write(out / "ladder.md", (ladder_table(frame) + "\n").encode())
    return frame
