"""Label inference: iDLG exact at B=1; label counts with repeated labels at B=8."""
import torch

from fedleak.attacks.labels import infer_labels
from fedleak.defenses import NoDefense
from fedleak.metrics.labels import multiset_label_accuracy
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.models.functional import LocalTraining


def observe(victim, indices, threat="fedsgd", flags="eavesdropper"):
    x, y = victim.data.victims(indices)
    tm = THREAT_MODELS.get(threat)(LocalTraining(lr=0.01, epochs=1))
    obs, k = tm.observe(victim, x, y, NoDefense(), knowledge_flags(flags))
    return obs, k, y


def test_idlg_is_exact_at_batch_size_one(lenet_victim):
    hits = 0
    for i in range(30):
        obs, k, y = observe(lenet_victim, [i])
        hits += int(infer_labels(obs, lenet_victim.model, k).item() == y.item())
    assert hits == 30


def test_idlg_without_bias_uses_weight_rows(digits):
    from fedleak.threat_models.victim import VictimSpec, build_victim
    victim = build_victim(VictimSpec(model="mlp", options={"width": 64, "depth": 2}), digits)
    hits = 0
    for i in range(10):
        obs, k, y = observe(victim, [i])
        hits += int(infer_labels(obs, victim.model, k).item() == y.item())
    assert hits >= 9


def repeated_label_batches(data, count=6, size=8):
    """Batches drawn so that labels repeat (at most 4 distinct classes in 8 images)."""
    labels = data.victim_labels
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        classes = torch.randperm(10, generator=generator)[:3]
        pool = torch.nonzero(torch.isin(labels, classes)).flatten()
        batches.append(pool[torch.randperm(len(pool), generator=generator)[:size]].tolist())
    return batches


def test_label_counts_recover_repeated_labels(convnet_victim):
    accuracies = []
    for indices in repeated_label_batches(convnet_victim.data):
        obs, k, y = observe(convnet_victim, indices)
        assert len(set(y.tolist())) < len(y)  # the batch really has repeats
        predicted = infer_labels(obs, convnet_victim.model, k)
        assert len(predicted) == len(y)
        accuracies.append(multiset_label_accuracy(predicted, y))
    assert sum(accuracies) / len(accuracies) >= 0.85, accuracies


def test_label_counts_from_a_fedavg_update(lenet_victim):
    for indices in repeated_label_batches(lenet_victim.data, count=3):
        obs, k, y = observe(lenet_victim, indices, threat="fedavg", flags="parameter_aware")
        assert multiset_label_accuracy(infer_labels(obs, lenet_victim.model, k), y) >= 0.75


def test_an_update_without_classifier_layer_is_a_clear_error(lenet_victim):
    import pytest
    from fedleak.core.errors import ConfigError
    from fedleak.threat_models.observation import Observation
    obs, k, _ = observe(lenet_victim, [0, 1])
    convs_only = [(n, t) for n, t in zip(obs.param_names, obs.shared) if not n.startswith("fc")]
    bare = Observation(obs.threat_model, obs.kind, [t for _, t in convs_only], [n for n, _ in convs_only],
                       obs.global_params, obs.buffers, 2)
    with pytest.raises(ConfigError, match="no classifier layer"):
        infer_labels(bare, lenet_victim.model, k)
