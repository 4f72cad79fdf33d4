"""Order-invariant FedAvg reconstruction, after Dimitrov, Balunović, Konstantinov and Vechev, "Data
Leakage in Federated Averaging" (TMLR 2022, §4), for a client whose mini-batch order nobody but the
client knows (`DataLoader(shuffle=True)`).

The fixed-order replay (IG's FedAvg reconstructor, attack `ig`) ties trial image i to the same slot
of every epoch, so it models the client only when the client never shuffles. Here, as in the paper:

1. One trial copy X_e of the client's N images per local epoch e, visited in slot order
   (`FedAvg.replay(orders=...)`): an epoch's mini-batches are whichever images the optimisation puts
   into its slots, so no order is assumed ("simulating the client's update" with per-epoch inputs).
2. The epoch-order-invariant prior: every X_e is the same *set* of images, so a permutation-invariant
   statistic of each is pulled together, mean over epoch pairs of ‖φ̄(X_e) − φ̄(X_e')‖², φ̄ the mean
   over the epoch's images of fixed random 3×3 convolution features. The official code's `l2_mean_conv`
   uses the linear features (which only compares the epochs' mean images); a ReLU after the
   convolution here makes φ̄ a set statistic that also sees how the images differ (a random-feature
   mean embedding).
3. The answer: each epoch's copy matched to the first one's (Hungarian on pixel MSE) and the matched
   copies averaged, as the official code does before scoring.

Labels: the known label multiset (inferred where the attacker is not told it). Which labels fall into
which mini-batch depends on the unknown order, so restart r replays its own arrangement of the labels
over each epoch's mini-batches: the distinct arrangements one after the other, starting with the stored
order, as long as restarts last (random distinct ones when there are more than restarts); the restart
with the lowest matching loss wins. The official code draws one random arrangement per run.

Everything else is IG (`inverting_gradients.signed_adam`): cosine matching, TV, signed Adam, the box,
the LR decay; the fixed-order `ig` under the same budget is the baseline it is measured against."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedleak.attacks.base import Attack, Budget, Reconstruction, attack_labels, require_knowledge
from fedleak.attacks.batch_orders import label_arrangements
from fedleak.attacks.inverting_gradients import IGConfig, InvertingGradients, Stopping, fedleak_matcher, signed_adam
from fedleak.attacks.objective import FastGradientMatcher, total_variation
from fedleak.core.components import UPDATE
from fedleak.core.options import check_integer, check_number


@dataclass(frozen=True)
class OrderInvariantConfig(IGConfig):
    invariance: float = 1.0   # weight of the epoch-order-invariant prior
    features: int = 32        # random convolution features of the prior

    def __post_init__(self):
        super().__post_init__()
        check_number("invariance", self.invariance, low=0)
        check_integer("features", self.features, low=1)


class OrderInvariant(Attack):
    name = "order-invariant"
    options_class = OrderInvariantConfig
    applies_to = (UPDATE,)  # a FedAvg update: the epochs' copies only exist in a local-training replay
    # the fixed-order `ig` is its baseline, so the same budget (the paper's own is not reproduced here)
    budgets = InvertingGradients.budgets

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        c = self.options
        self.check_observation(observation)
        require_knowledge(self.name, knowledge, "hyperparameters")
        training = knowledge.local_training
        device = observation.shared[0].device
        n, epochs = knowledge.num_images, training.epochs
        orders = [torch.arange(e * n, (e + 1) * n) for e in range(epochs)]
        matcher = fedleak_matcher(FastGradientMatcher(observation, model, knowledge, c.distance, c.precision,
                                                      orders=orders), c, seed)
        full = getattr(matcher, "unmasked", matcher)  # the winner by the full matching loss
        labels = attack_labels(observation, model, knowledge)
        arrangements = label_arrangements(labels.cpu(), training.batch_size or n, epochs, budget.restarts, seed)
        restart_labels = [torch.cat(a).to(device) for a in arrangements]
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn((budget.restarts, epochs * n, *knowledge.image_shape), generator=generator).to(device)
        x.requires_grad_(True)
        features = torch.randn((c.features, knowledge.image_shape[0], 3, 3), generator=generator).to(device)
        matching = lambda xs, f=matcher: torch.stack([f(xr, yr) for xr, yr in zip(xs, restart_labels)])
        prior = lambda xr: epoch_invariance(xr.view(epochs, n, *xr.shape[1:]), features)
        objective = lambda xs: matching(xs) + torch.stack([c.tv * total_variation(xr) + c.invariance * prior(xr)
                                                           for xr in xs])
        stopping = Stopping()
        traces, _ = signed_adam(x, objective, knowledge, c, budget, self.name, progress, stopping=stopping)
        final = matching(x.detach(), full).detach()  # the matching loss alone picks the winner
        winner = int(final.argmin())
        copies = knowledge.to_unit(x[winner].detach()).view(epochs, n, *knowledge.image_shape)
        trace = torch.stack(traces)[:, winner].tolist() if traces else []
        return Reconstruction(average_matched(copies), arrangements[winner][0].to(device), trace, float(final[winner]),
                              final.tolist(), extras={"label_arrangements": len(arrangements), **stopping.extras()})


def epoch_invariance(copies: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mean over epoch pairs of the squared distance between the epochs' mean random features (E, N, C, H, W)."""
    epochs = copies.shape[0]
    if epochs < 2:
        return copies.new_zeros(())
    embedded = F.relu(F.conv2d(copies.flatten(0, 1), features, padding=1)).view(epochs, copies.shape[1], -1).mean(1)
    pairs = list(itertools.combinations(range(epochs), 2))
    return torch.stack([(embedded[a] - embedded[b]).pow(2).mean() for a, b in pairs]).mean()


def average_matched(copies: torch.Tensor) -> torch.Tensor:
    """The epochs' copies (E, N, ...) matched image by image to the first epoch's (Hungarian on
    MSE) and averaged: one reconstruction of the client's N images."""
    from scipy.optimize import linear_sum_assignment
    first, matched = copies[0], [copies[0]]
    for other in copies[1:]:
        cost = (first.flatten(1)[:, None, :] - other.flatten(1)[None, :, :]).pow(2).mean(-1)
        _, columns = linear_sum_assignment(cost.cpu().numpy())
        matched.append(other[torch.as_tensor(columns, device=other.device)])
    return torch.stack(matched).mean(0)
