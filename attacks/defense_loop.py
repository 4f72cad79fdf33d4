"""Defense in the loop (issue #12, item 1a): Inverting Gradients' optimiser on the distance between what
the defense's own `share` sends for a trial image and what the client sent.

trial image -> threat model replay -> `share` with the round's public context, BPDA where it is not
differentiable, EOT over the attacker's own private draws (attacks/defense_replay.py) -> distance to the
observation (attacks/distances.py). Nothing from the defense's author is needed but `share`; the author's
`simulate` is the fallback where `share` cannot be run or differentiated (`extras["defense_replay"]` says
which ran and why).

`distance = "auto"` picks, from what the attacker can see: the Gaussian likelihood where the defense is
random (the variance published as `noise_std` / `noise_sigma`, else measured from the attacker's own
draws, per coordinate), the sign-agreement loss where only signs were sent, else IG's cosine (Adam) or
the scale-free squared L2 (L-BFGS).
`start = "analytic"` begins at the rank-one estimate of attacks/analytic_fc.py instead of noise.
`optimizer = "lbfgs"` replaces IG's optimiser by iDLG's (L-BFGS with a strong-Wolfe line search, no box,
no TV; `budget.iterations` L-BFGS steps of 20 inner iterations): on a sigmoid LeNet, where IG's signed
Adam is slow, it is the stronger of the two.

Needs the knowledge flag `defense` (adaptive mode): without the defense there is nothing to run."""
from __future__ import annotations

from fedleak.attacks.analytic_fc import analytic_estimate
from fedleak.attacks.base import Attack, Budget, PresetBudget, require_knowledge
from fedleak.attacks.inverting_gradients import search_images
from fedleak.attacks.share_matching import DefenseLoopConfig, ShareMatcher, build_replay, labels_for, provisional_labels


class DefenseLoop(Attack):
    name = "defense-loop"
    needs_defense = True
    options_class = DefenseLoopConfig
    budgets = {"ci": PresetBudget(iterations=200)}  # Adam steps (L-BFGS: steps of 20 inner iterations)

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        require_knowledge(self.name, knowledge, "defense")
        c = self.options
        replay = build_replay(observation, model, knowledge, provisional_labels(observation, model, knowledge),
                              seed, c.draws, c.bpda)
        labels = labels_for(observation, model, knowledge, replay)
        matcher = ShareMatcher(observation, model, knowledge, replay, c.distance,
                               "relative-l2" if c.optimizer == "lbfgs" else "cosine")
        if c.optimizer == "lbfgs":
            from fedleak.attacks.dlg import IDLG
            result = IDLG().search(matcher, labels, knowledge, budget, seed, progress)
        else:
            start = None
            if c.start == "analytic":
                start = analytic_estimate(observation, model, knowledge, labels, replay, matcher).image
            result = search_images(matcher, labels, knowledge, budget, c, seed, progress, self.name, start)
        result.extras.update(defense_replay=replay.describe(), distance=matcher.kind,
                             strategy=f"{self.name}:{replay.path}:{matcher.kind}")
        return result
