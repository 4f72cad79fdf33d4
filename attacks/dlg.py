"""DLG (Zhu et al., NeurIPS 2019) and iDLG (Zhao et al., 2020).

DLG optimises dummy images and dummy label logits jointly with L-BFGS (lr 1, torch's default 20
inner iterations per step, official 300 steps) to minimise the squared-L2 distance between the
dummy gradient and the observed one. iDLG reads the label off the gradient first (attacks.labels)
and optimises the image alone. Neither uses a prior or a box constraint (as in the papers).
L-BFGS on a sigmoid LeNet stalls or blows up (iDLG issue #6). Measured here (8 held-out digits,
50 steps, untrained LeNet): the official setting (no line search) stalled on 4/8 victims (PSNR < 5
dB, median 42 dB); with a strong-Wolfe line search 8/8 converged (median 85 dB). Strong Wolfe is
therefore the default; `line_search = "none"` restores the official behaviour. The best finite
iterate is kept, and a diverged restart is scored by that iterate."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from fedleak.core.console import progress_bar

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction, attack_labels
from fedleak.attacks.objective import DISTANCES, GradientMatcher
from fedleak.core.options import check_choice, check_integer, check_number


@dataclass(frozen=True)
class DLGConfig:
    lr: float = 1.0
    inner_iterations: int = 20   # torch.optim.LBFGS max_iter, as the official code leaves it
    history_size: int = 100
    distance: str = "l2"
    line_search: str = "strong_wolfe"   # "none": torch's default, as in the official code

    def __post_init__(self):
        check_number("lr", self.lr, low=0, low_open=True)
        check_integer("inner_iterations", self.inner_iterations, low=1)
        check_integer("history_size", self.history_size, low=1)
        check_choice("distance", self.distance, tuple(DISTANCES))
        check_choice("line_search", self.line_search, ("strong_wolfe", "none"))


class DLG(Attack):
    name = "dlg"
    options_class = DLGConfig
    # ci: L-BFGS steps of 20 inner iterations each; paper: the official 300 steps
    budgets = {"ci": PresetBudget(iterations=10), "paper": PresetBudget(iterations=300, restarts=1)}
    joint_labels = True

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        matcher = GradientMatcher(observation, model, knowledge, self.options.distance)
        fixed_labels = None if self.joint_labels else attack_labels(observation, model, knowledge)
        return self.search(matcher, fixed_labels, knowledge, budget, seed, progress)

    def search(self, matcher, fixed_labels: torch.Tensor | None, knowledge, budget: Budget, seed: int = 0,
               progress: bool = False) -> Reconstruction:
        """L-BFGS restarts on any objective with GradientMatcher's call (`matcher(x, y)`); labels optimised
        jointly when `fixed_labels` is None. The best restart by final loss, images in [0,1]."""
        device = matcher.target[0].device
        generator = torch.Generator().manual_seed(seed)
        best = None
        restart_losses = []
        for restart in range(budget.restarts):
            x = torch.randn((knowledge.num_images, *knowledge.image_shape), generator=generator).to(device).requires_grad_(True)
            label_logits = torch.randn((knowledge.num_images, knowledge.num_classes), generator=generator).to(device).requires_grad_(True)
            variables = [x, label_logits] if fixed_labels is None else [x]
            result = self._optimise(matcher, variables, x, label_logits, fixed_labels, budget.iterations,
                                    progress and restart == 0)
            restart_losses.append(result.gradient_loss)
            if best is None or result.gradient_loss < best.gradient_loss:
                best = result
        best.restart_losses = restart_losses
        best.images = knowledge.to_unit(best.images)
        return best

    def _optimise(self, matcher, variables, x, label_logits, fixed_labels, iterations, progress) -> Reconstruction:
        c = self.options
        optimiser = torch.optim.LBFGS(variables, lr=c.lr, max_iter=c.inner_iterations, history_size=c.history_size,
                                      line_search_fn=None if c.line_search == "none" else c.line_search)
        labels = lambda: fixed_labels if fixed_labels is not None else label_logits.softmax(-1)

        def closure():
            optimiser.zero_grad()
            loss = matcher(x, labels())
            # a share that ignores its input (zeros, the client's own noise) leaves no path from the
            # trial to the loss: its gradient is zero, L-BFGS stops at once, and the flat loss says so
            if loss.requires_grad:
                loss.backward()
            return loss

        trace, best_loss = [], float("inf")
        best_x, best_y = x.detach().clone(), label_logits.detach().clone()
        for _ in progress_bar(range(iterations), desc=self.name, enabled=progress):
            loss = float(optimiser.step(closure).detach())
            if not torch.isfinite(torch.tensor(loss)) or not torch.isfinite(x).all():
                break  # diverged: keep the best finite iterate
            trace.append(loss)
            if loss < best_loss:
                best_loss, best_x, best_y = loss, x.detach().clone(), label_logits.detach().clone()
        final_labels = fixed_labels if fixed_labels is not None else best_y.argmax(-1)
        return Reconstruction(best_x, final_labels.detach(), trace, best_loss)


class IDLG(DLG):
    """DLG with the label extracted analytically (B=1) or by label counting (B>1), then fixed."""
    name = "idlg"
    joint_labels = False
