"""Label inference from the shared update of the last linear layer.

* B = 1 (iDLG, Zhao et al. 2020): with softmax cross-entropy, the true class is the only one
  whose logit gradient p_c − y_c is negative; it shows as the negative bias-gradient entry, or
  (no bias; non-negative features) as the row of ∂L/∂W with the smallest sum.
* B > 1 (label counts, after Geng et al. 2021 "Towards general deep leakage in FL"): for mean
  CE, ∂L/∂b_c = mean_i(p_ic) − n_c/B, so n_c = B·(p̄_c − ∂L/∂b_c). Without a bias the row sums of
  ∂L/∂W give the same relation scaled by the mean feature sum S̄. p̄ and S̄ are estimated by
  running the model on dummy inputs (or auxiliary data, when the attacker has it). Counts are
  rounded so they sum to B: repeated labels are recovered, not only distinct ones.
A FedAvg update is treated as −gradient (the first local step dominates its sign pattern)."""
from __future__ import annotations

import torch
from torch.func import functional_call

from fedleak.core.errors import ConfigError
from fedleak.threat_models.knowledge import AttackerKnowledge
from fedleak.threat_models.observation import Observation


def _last_linear(observation: Observation, num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(weight-gradient, bias-gradient or None, weight name) of the classifier layer."""
    shared = dict(zip(observation.param_names, observation.update))
    sign = -1.0 if observation.descent_step else 1.0
    names = observation.param_names
    for i in range(len(names) - 1, -1, -1):
        t = shared[names[i]]
        if t.dim() == 2 and t.shape[0] == num_classes:
            bias_name = names[i][: -len("weight")] + "bias" if names[i].endswith("weight") else None
            bias = shared.get(bias_name) if bias_name else None
            return sign * t, (sign * bias if bias is not None and bias.shape == (num_classes,) else None), names[i]
    raise ConfigError(f"label inference: the '{observation.threat_model}' update has no classifier layer "
                      f"(a 2-D parameter with {num_classes} rows); use a knowledge preset with known labels")


def infer_labels(observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge) -> torch.Tensor:
    """Labels (B,) sorted ascending; B=1 uses the exact iDLG rule."""
    weight_grad, bias_grad, _ = _last_linear(observation, knowledge.num_classes)
    if knowledge.num_images == 1:
        signal = bias_grad if bias_grad is not None else weight_grad.sum(1)
        return signal.argmin().view(1)
    counts = infer_label_counts(observation, model, knowledge)
    return torch.repeat_interleave(torch.arange(knowledge.num_classes, device=counts.device), counts)


def infer_label_counts(observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge,
                       probes: int = 64) -> torch.Tensor:
    weight_grad, bias_grad, weight_name = _last_linear(observation, knowledge.num_classes)
    probs, feature_sum = _probe(observation, model, knowledge, weight_name, probes)
    # per-class mean logit gradient p̄_c − n_c/B, read from the bias or from the weight row sums
    signal = bias_grad if bias_grad is not None else weight_grad.sum(1) / feature_sum
    if observation.descent_step:
        signal = signal / _update_scale(signal, knowledge)
    b = knowledge.num_images
    return _round_to_total((b * (probs - signal)).clamp(min=0), b)


def _update_scale(signal: torch.Tensor, knowledge: AttackerKnowledge) -> float:
    """Δθ = −lr·Σ_k c_k·g_k: the factor Σ_k c_k·lr that turns the update's signal into one mean gradient
    (c_k = 1 for plain SGD; with momentum μ, step k's gradient is applied (1 − μ^(K−k+1))/(1 − μ) times)."""
    t = knowledge.local_training
    if t is None or t.optimizer != "sgd":
        # Unknown lr·K (or Adam, whose step is not linear in the gradient): the negative entries of a
        # mean-gradient signal sum to Σ_c max(0, n_c/B − p̄_c), close to 1 for an untrained model; use that as the unit.
        return float(-signal.clamp(max=0).sum()) or 1.0
    steps = max(1, t.steps(knowledge.num_images))
    if not t.momentum:
        return t.lr * steps
    return t.lr * sum((1 - t.momentum ** (steps - k)) / (1 - t.momentum) for k in range(steps))


def _probe(observation, model, knowledge, weight_name, probes):
    """Mean softmax output and mean classifier-input feature sum of the model on probe inputs."""
    device = observation.shared[0].device
    if knowledge.auxiliary_images is not None:
        idx = torch.randperm(len(knowledge.auxiliary_images), generator=torch.Generator().manual_seed(0))[:probes]
        m = torch.tensor(knowledge.mean).view(-1, 1, 1)
        s = torch.tensor(knowledge.std).view(-1, 1, 1)
        x = ((knowledge.auxiliary_images[idx] - m) / s).to(device)
    else:
        x = torch.randn((probes, *knowledge.image_shape), generator=torch.Generator().manual_seed(0)).to(device)
    module_name = weight_name.rsplit(".", 1)[0]
    layer = dict(model.named_modules())[module_name]
    captured = {}

    def keep_input(module, inputs, output):  # returns None: a hook's return value would replace the output
        captured["h"] = inputs[0].detach()

    hook = layer.register_forward_hook(keep_input)
    try:
        with torch.no_grad():
            logits = functional_call(model.eval(), (observation.global_params, observation.buffers), (x,))
    finally:
        hook.remove()
    return logits.softmax(-1).mean(0), captured["h"].flatten(1).sum(1).mean()


def _round_to_total(raw: torch.Tensor, total: int) -> torch.Tensor:
    """Largest-remainder rounding of non-negative estimates to integers summing to `total`."""
    if raw.sum() <= 0:
        raw = torch.ones_like(raw)
    scaled = raw / raw.sum() * total
    counts = scaled.floor().long()
    remainder = total - int(counts.sum())
    if remainder > 0:
        counts[(scaled - counts).topk(remainder).indices] += 1
    return counts
