"""Secure aggregation, the malicious server and its attacks (Robbing the Fed, trap weights, LOKI),
and the client-side model check. Tiny victims: the analytic attacks cost one gradient."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fedleak.attacks import build_attack
from fedleak.attacks.objective import GradientMatcher
from fedleak.core.errors import ConfigError, DataError
from fedleak.defenses import NoDefense, build_defense
from fedleak.defenses.base import ReceivedModel
from fedleak.harness.run.config import config_from_dict
from fedleak.metrics.image import match_to_ground_truth, psnr
from fedleak.models.functional import LocalTraining, batch_loss
from fedleak.threat_models import THREAT_MODELS, build_threat_model, check_applies
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.threat_models.victim import VictimSpec, build_victim, federated_training

MALICIOUS = ("imprint", "trap-weights", "loki")


@pytest.fixture(scope="module")
def small_victim(digits):
    return build_victim(VictimSpec(model="convnet", options={"width": 4}), digits)


def attack_batch(victim, attack_name, batch=16, clients=1, knowledge="data_enhanced", defense=None, options=None):
    """(the attack's reconstruction, the client's images, the observation, what the server sent)."""
    threat = build_threat_model("malicious", LocalTraining(), None, clients=clients)
    attack = build_attack(attack_name, **(options or {}))
    flags = knowledge_flags(knowledge)
    x, y = victim.data.victims(list(range(batch)))
    sent = threat.sent_model(victim, attack, batch, flags, seed=1)
    observation, knowledge = threat.observe(sent, x, y, defense or NoDefense(), flags, seed=1)
    return attack.reconstruct(observation, sent.model, knowledge, None), x, observation, sent


def recovered(images, x, db=40.0) -> float:
    """The share of the client's images with a distinct reconstruction at `db` PSNR or more."""
    order = match_to_ground_truth(images, x)
    return float((psnr(images[order], x) >= db).float().mean())


# ------------------------------------------------------------------------------ secure aggregation
def test_secure_aggregation_of_one_client_is_fedsgd(small_victim):
    x, y = small_victim.data.victims([0, 1])
    flags = knowledge_flags("informed")
    plain, _ = THREAT_MODELS.create("fedsgd").observe(small_victim, x, y, NoDefense(), flags, seed=4)
    alone, knowledge = build_threat_model("secagg", LocalTraining(), None, clients=1).observe(
        small_victim, x, y, NoDefense(), flags, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(plain.shared, alone.shared))
    assert knowledge.num_images == 2 and alone.num_examples == 2


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_secure_aggregation_reveals_the_aggregate_of_n_clients(small_victim, reduction):
    threat = build_threat_model("secagg", LocalTraining(), None, clients=3, reduction=reduction)
    x, y = small_victim.data.victims([0, 1])
    observation, knowledge = threat.observe(small_victim, x, y, NoDefense(), knowledge_flags("informed"), seed=4)
    assert knowledge.num_images == 6 and observation.num_examples == 6 and observation.public["aggregated_clients"] == 3
    others = threat.other_clients(small_victim.data, 2, seed=4)
    x_all = small_victim.normalise(torch.cat([x, *(o[0] for o in others)]))
    assert torch.equal(knowledge.labels, torch.cat([y, *(o[1] for o in others)]))
    # the attacker's replay of the union of the three batches is the aggregate, exactly
    matcher = GradientMatcher(observation, small_victim.model, knowledge, "l2")
    assert matcher(x_all, knowledge.labels).item() < 1e-10 * sum(t.pow(2).sum() for t in observation.shared)
    single, _ = THREAT_MODELS.create("fedsgd").observe(small_victim, x, y, NoDefense(), knowledge_flags("informed"))
    assert not torch.allclose(single.shared[0], observation.shared[0])


def test_the_other_clients_hold_training_images_drawn_with_the_round_seed(small_victim):
    threat = build_threat_model("secagg", LocalTraining(), None, clients=4)
    first, again, other = (threat.other_clients(small_victim.data, 5, seed=s) for s in (7, 7, 8))
    assert len(first) == 3 and all(len(x) == 5 for x, _ in first)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    with pytest.raises(DataError, match="threat_model.options.clients: 3999 other clients of 5 images need"):
        build_threat_model("secagg", LocalTraining(), None, clients=4000).other_clients(small_victim.data, 5, 0)


def test_matching_scores_each_image_against_its_best_distinct_candidate():
    truth = torch.rand(3, 1, 12, 12)
    candidates = torch.cat([torch.rand(4, 1, 12, 12), truth[[2, 0, 1]]])
    order = match_to_ground_truth(candidates, truth)
    assert order.tolist() == [5, 6, 4]


# ------------------------------------------------------------------------------ the malicious server
def test_a_crafting_attack_runs_only_where_the_server_crafts_the_model():
    for name in MALICIOUS:
        attack = build_attack(name)
        with pytest.raises(ConfigError, match=rf"attack '{name}' crafts the model the server sends; threat model "
                                              r"'fedsgd' has an honest server; it runs under malicious"):
            check_applies("fedsgd", attack)
        check_applies("malicious", attack)
    check_applies("malicious", build_attack("ig"))  # an honest attack faces the global model there


def test_a_run_config_without_a_threat_model_takes_the_first_its_attack_runs_under():
    assert config_from_dict({"attack": {"name": "imprint"}}).threat_model.name == "malicious"
    plain = config_from_dict({"attack": {"name": "ig"}})
    assert plain.threat_model.name == "fedsgd" and plain.digest() == config_from_dict({}).digest()
    named = config_from_dict({"attack": {"name": "imprint"}, "threat_model": {"name": "secagg"}})
    assert named.threat_model.name == "secagg"


@pytest.mark.parametrize("clients", [1, 4])
def test_robbing_the_fed_recovers_exact_images_through_aggregation(small_victim, clients):
    result, x, observation, sent = attack_batch(small_victim, "imprint", batch=16, clients=clients)
    assert observation.param_names[:2] == ["block.rows.weight", "block.rows.bias"]
    assert set(sent.params) == set(observation.global_params) and sent.crafted_by == "imprint"
    assert len(result.images) == 16 * clients
    assert recovered(result.images, x) >= 0.75
    order = match_to_ground_truth(result.images, x)
    best = (result.images[order] - x).abs().flatten(1).amax(1)
    assert (best < 1e-3).float().mean() >= 0.75, "a bin holding one image gives it exactly"


def test_robbing_the_fed_collides_when_bins_are_few(small_victim):
    few, x, _, _ = attack_batch(small_victim, "imprint", batch=16, options={"bins": 4})
    assert recovered(few.images, x) <= 0.25  # 16 images in 4 bins: at most 4 alone


def test_trap_weights_recover_images_a_row_isolated(small_victim):
    result, x, observation, _ = attack_batch(small_victim, "trap-weights", batch=16, options={"rows": 1024})
    assert recovered(result.images, x) >= 0.75
    assert result.extras["recurring"] >= 1 and len(result.images) >= 16


def test_loki_keeps_the_clients_apart_through_secure_aggregation(small_victim):
    result, x, observation, sent = attack_batch(small_victim, "loki", batch=8, clients=4, options={"bins": 256})
    route = "block.route.weight"
    assert not torch.equal(sent.for_client(0).params[route], sent.for_client(1).params[route])
    assert torch.equal(sent.for_client(0).params["block.rows.weight"], sent.for_client(3).params["block.rows.weight"])
    # block 0 holds the attacked client's images, and they come out exactly
    assert recovered(result.images[:8], x) >= 0.75
    assert result.extras["recovered"][0] >= 6 and len(result.images) == 32


# ------------------------------------------------------------------------------ the model check
WEIGHT_CHECKS = ["duplicate-rows", "zero-rows", "sparse-activation", "classifier-rows", "round-change"]


@pytest.mark.parametrize("name, clients, caught_by", [
    ("imprint", 1, "duplicate-rows"), ("imprint", 4, "duplicate-rows"),
    ("trap-weights", 1, "sparse-activation"), ("trap-weights", 4, "sparse-activation"),
    ("loki", 1, "duplicate-rows"), ("loki", 4, "zero-rows")])
def test_the_model_check_flags_every_malicious_model(small_victim, name, clients, caught_by):
    check = build_defense("model-check")
    options = {"rows": 1024} if name == "trap-weights" else {}
    result, x, observation, _ = attack_batch(small_victim, name, batch=16, clients=clients, defense=check,
                                             options=options)
    verdict = observation.public["model_check"]
    assert verdict["flagged"] and verdict["refused"]
    assert any(r.startswith("architecture:") for r in verdict["reasons"])
    assert all(t.abs().sum() == 0 for t in observation.shared), "a refused round sends nothing"
    assert recovered(result.images, x) == 0
    # with the architecture check off, what the weights or the batch give away still flags it
    blind = build_defense("model-check", checks=WEIGHT_CHECKS)
    _, _, observation, _ = attack_batch(small_victim, name, batch=16, clients=clients, defense=blind, options=options)
    assert any(r.startswith(f"{caught_by}:") for r in observation.public["model_check"]["reasons"])


def test_a_check_that_only_records_lets_the_round_through(small_victim):
    record = build_defense("model-check", refuse=False)
    result, x, observation, _ = attack_batch(small_victim, "imprint", batch=16, defense=record)
    assert observation.public["model_check"]["flagged"] and not observation.public["model_check"]["refused"]
    assert recovered(result.images, x) >= 0.75


def test_the_model_check_flags_a_classifier_scaled_for_fishing_and_weights_swapped_in(small_victim):
    """Fishing (Wen et al. 2022) scales class rows of the classifier; a server can also write rows of
    its choosing into a prescribed layer. Both leave the architecture as prescribed."""
    x = small_victim.normalise(small_victim.data.victims(list(range(8)))[0])
    params = dict(small_victim.params)
    previous = lambda: (small_victim.params, small_victim.buffers)  # noqa: E731
    check = build_defense("model-check")

    def verdict(changed):
        return check.check_model(ReceivedModel(small_victim.model, {**params, **changed}, small_victim.buffers,
                                               small_victim.model, previous, x))
    fishing = params["linear.weight"].clone()
    fishing[3] *= 300
    caught = verdict({"linear.weight": fishing})
    assert any(r.startswith("classifier-rows:") for r in caught.reasons)
    assert any(r.startswith("round-change:") for r in caught.reasons)
    swapped = torch.randn(params["features.conv0.weight"].shape, generator=torch.Generator().manual_seed(0))
    assert any(r.startswith("round-change:") for r in verdict({"features.conv0.weight": swapped}).reasons)
    assert not verdict({}).flagged


HONEST = {"lenet": {}, "convnet": {"width": 4}, "resnet18": {"width": 4}, "mlp": {"width": 32},
          "vit": {"dim": 32, "mlp_dim": 32, "heads": 2, "depth": 1}}


@pytest.mark.parametrize("model", sorted(HONEST))
def test_the_model_check_flags_no_honest_model_across_ten_fedavg_rounds(digits, model):
    """Every registered architecture (small widths), ten rounds of FedAvg from its initialisation on
    a slice of the training split: each round's global model, checked against the one before."""
    from fedleak.models.architectures import MODELS
    assert set(HONEST) == set(MODELS.names()), "a newly registered architecture must be checked here too"
    data = dataclasses.replace(digits, train_images=digits.train_images[:400], train_labels=digits.train_labels[:400],
                               victim_images=digits.victim_images[:200], victim_labels=digits.victim_labels[:200])
    spec = VictimSpec(model=model, options=HONEST[model], rounds=1, clients=4, local_lr=0.1, local_batch_size=25)
    victim = build_victim(dataclasses.replace(spec, rounds=0), data)
    images = victim.normalise(data.victims(list(range(16)))[0])
    train = lambda: batch_loss(victim.model, victim.params, victim.buffers,  # noqa: E731
                               victim.normalise(data.train_images[:200]), data.train_labels[:200]).item()
    check = build_defense("model-check")
    previous, loss_before = None, train()
    for round in range(11):
        kept = previous
        verdict = check.check_model(ReceivedModel(victim.model, victim.params, victim.buffers, victim.model,
                                                  lambda: kept, images))
        assert not verdict.flagged, f"round {round}: {verdict.reasons}"
        previous = ({k: v.clone() for k, v in victim.params.items()}, victim.buffers)
        victim.spec = dataclasses.replace(spec, seed=round)
        federated_training(victim, NoDefense())
    assert train() < loss_before  # the rounds trained it


# ------------------------------------------------------------------------------ runs, the matrix and its report
def test_robbing_the_fed_from_the_command_line_records_the_threat_model(tmp_path):
    """The issue's command, on a small MLP to keep it quick (the body does not matter to the read-out):
    no --threat-model needed."""
    from fedleak.harness.cli.main import main
    import pandas as pd
    for clients in (1, 4):
        out = tmp_path / f"n{clients}"
        assert main(["attack", "--attack", "imprint", "--dataset", "photos", "--batch-size", "64", "--victims", "64",
                     "--model", "mlp", "--set", "victim.options.width=16",
                     "--set", f"threat_model.options.clients={clients}",
                     "--output", str(out), "--quiet", "--device", "cpu"]) == 0
        rows = pd.read_parquet(out / "results.parquet")
        assert (rows["psnr"] >= 40).mean() >= 0.5
        assert set(rows["threat_model"]) == {"malicious"} and set(rows["model_sent"]) == {"imprint"}
        assert rows["threat_model_params"].iloc[0] == f'{{"clients": {clients}, "reduction": "mean"}}'
        assert rows["model_flagged"].isna().all()  # no check ran


def test_the_malicious_preset_reports_false_positives_and_detections(tmp_path):
    from fedleak.harness.matrix.config import load_matrix
    from fedleak.harness.matrix.run import prepare_matrix, run_matrix
    from fedleak.harness.matrix.results import report_matrix_folder
    from fedleak.reports.matrix_tables import model_check_table
    import pandas as pd
    matrix = load_matrix("malicious")
    assert {a.name for a in matrix.attacks} == {"ig", *MALICIOUS} and {d.name for d in matrix.defenses} == {"none", "model-check"}
    small = dataclasses.replace(matrix, preset="smoke", images=dataclasses.replace(matrix.images, batch_size=8),
                                victims=[dataclasses.replace(matrix.victims[0], model="mlp", options={"width": 16},
                                                             rounds=1)])
    run = run_matrix(prepare_matrix(small), tmp_path, workers=0, progress=False)
    assert not run.schedule.failed
    results = pd.read_parquet(tmp_path / "results.parquet")
    table = model_check_table(results)
    honest, crafted = table[table["model sent"] == "global"], table[table["model sent"] != "global"]
    assert len(honest) == 2 and (honest["flagged"] == 0).all()                      # fedsgd, secagg (4)
    assert len(crafted) == 6 and (crafted["rate"] == 1).all()                       # 3 attacks × (1, 4 clients)
    assert {"malicious (clients=1, reduction=mean)", "malicious (clients=4, reduction=mean)"} <= set(table["threat model"])
    undefended = results[(results["defense_label"] == "none") & results["attack_label"].isin(MALICIOUS)]
    assert undefended.groupby("attack_label")["psnr"].median().min() >= 40
    markdown, _ = report_matrix_folder(tmp_path)
    assert "## Client-side model check" in markdown.read_text()
    assert "malicious (clients=4, reduction=mean), data_enhanced attacker" in markdown.read_text()


# ------------------------------------------------------------------------------ GradInversion
def test_gradinversion_bn_prior_is_zero_at_the_true_batch(small_victim):
    from fedleak.attacks.gradinversion import BatchStatistics
    x, y = small_victim.data.victims([0, 1, 2, 3])
    observation, knowledge = THREAT_MODELS.create("fedsgd").observe(small_victim, x, y, NoDefense(),
                                                                    knowledge_flags("statistics_informed"))
    attack = build_attack("gradinversion")
    source, targets = attack.bn_targets(observation, small_victim.model, knowledge)
    statistics = BatchStatistics(small_victim.model, observation, source, targets)
    true = small_victim.normalise(x)[None]
    noise = torch.randn((2, *x.shape), generator=torch.Generator().manual_seed(0))
    assert source == "batch" and statistics.distance(true, 10.0).item() < 1e-4
    assert (statistics.distance(noise, 10.0) > 1).all()
    prior = attack.prior(torch.stack([true[0], true[0]]), statistics)
    assert prior.shape == (2,) and torch.allclose(prior[0], prior[1])  # identical restarts: no group term
    with pytest.raises(ConfigError, match="attack.options.bn_source: 'batch' needs the client batch's BN statistics"):
        build_attack("gradinversion", bn_source="batch").bn_targets(
            observation, small_victim.model, dataclasses.replace(knowledge, bn_statistics=None))
    running_source, running = build_attack("gradinversion", bn_source="running").bn_targets(
        observation, small_victim.model, knowledge)
    assert running_source == "running" and torch.equal(running[0][0], observation.buffers["features.bn0.running_mean"])


def test_gradinversion_fits_a_batch_better_than_its_start(small_victim):
    from fedleak.attacks import Budget
    x, y = small_victim.data.victims([0, 1])
    observation, knowledge = THREAT_MODELS.create("fedsgd").observe(small_victim, x, y, NoDefense(),
                                                                    knowledge_flags("statistics_informed"))
    result = build_attack("gradinversion", distance="cosine", grad_scale=1.0, noise=0.0).reconstruct(
        observation, small_victim.model, knowledge, Budget(iterations=40, restarts=2), seed=0)
    assert result.loss_trace[-1] < result.loss_trace[0] and result.extras["bn_source"] == "batch"
    assert len(result.restart_losses) == 2
