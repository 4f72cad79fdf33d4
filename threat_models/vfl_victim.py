"""The vertical-FL victim: bottom models, codecs and top model trained jointly on the train split
(HashVFL's recipe: Adam, weight decay, cross-entropy plus the defense's own loss), cached by a
hash of everything that made them. Utility = main-task accuracy on the held-out split."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedleak.threat_models.cache import cached
from fedleak.threat_models.victim import Victim
from fedleak.threat_models.vfl_nets import VFLNet

MODEL_NAME = "vfl-cnn"


@dataclass
class VFLVictim(Victim):
    epochs: int = 0

    def describe(self) -> dict:
        return {"model": MODEL_NAME, "model_options": {"width": self.model.width, "columns": self.model.columns},
                "victim_state": f"vfl-{self.epochs}ep" if self.epochs else "untrained", "victim_accuracy": self.accuracy}


def build_vfl_victim(spec, data, protocol, defense, progress: bool = False) -> VFLVictim:
    width = defense.embedding_width(protocol.embedding_width)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(spec.seed)
        net = VFLNet(data.shape, data.num_classes, protocol.split, width, defense.codec)
    recipe = {"seed": spec.seed, "data": data.name, "n": len(data.train_images), "protocol": asdict(protocol),
              "defense": defense.name, "defense_params": defense.describe(), "v": 1}
    state = cached("vfl-victims", recipe, lambda: _train(net, data, protocol, defense, spec.seed, progress),
                   needs=("params", "buffers", "accuracy"))
    return VFLVictim(net.eval(), state["params"], state["buffers"], data, spec, state["accuracy"], protocol.train_epochs)


def _train(net: VFLNet, data, protocol, defense, seed: int, progress: bool) -> dict:
    from fedleak.core.console import progress_bar
    normalise = Victim(net, {}, {}, data, None).normalise
    optimiser = torch.optim.Adam(net.parameters(), lr=protocol.train_lr, weight_decay=protocol.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = len(data.train_images)
    net.train()
    for _ in progress_bar(range(protocol.train_epochs), desc="victim VFL", enabled=progress, leave=True):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - 1, protocol.train_batch_size):
            batch = order[start:start + protocol.train_batch_size]
            if len(batch) < 2:
                continue  # BatchNorm needs two samples
            x, y = normalise(data.train_images[batch]), data.train_labels[batch]
            sent = [net.message(net.party_slice(x, p), p) for p in range(len(net.columns))]
            loss = F.cross_entropy(net.top(torch.cat(sent, dim=1)), y)
            extra = defense.training_loss(sent, y, data.num_classes)
            if extra is not None:
                loss = loss + extra
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in net.named_buffers()}
    return {"params": params, "buffers": buffers, "accuracy": main_task_accuracy(net, params, buffers, data)}


def main_task_accuracy(net: VFLNet, params, buffers, data) -> float:
    normalise = Victim(net, {}, {}, data, None).normalise
    net.eval()
    with torch.no_grad():
        predictions = torch.cat([functional_call(net, (params, buffers), (normalise(data.victim_images[s:s + 500]),)).argmax(1)
                                 for s in range(0, len(data.victim_images), 500)])
    return float((predictions == data.victim_labels).float().mean())
