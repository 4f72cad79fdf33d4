"""Text victims, threat models, DAGER and TAG, and the text scores (issue 23). Tiny random-init models:
the span test's algebra does not need trained weights, and every test runs in seconds."""
import pytest
import torch

pytest.importorskip("transformers", reason="the text victim needs the 'text' extra (transformers)")
pytest.importorskip("peft", reason="the LoRA threat model needs the 'text' extra (peft)")
pytest.importorskip("tokenizers", reason="the text tokenizer needs the 'text' extra (tokenizers)")
pytest.importorskip("rouge_score", reason="the text scores need the 'text' extra (rouge-score)")

from fedleak.attacks.dager import first_layer_inputs, LayerSpan  # noqa: E402
from fedleak.attacks.text import build_text_attack  # noqa: E402
from fedleak.core.errors import ConfigError  # noqa: E402
from fedleak.defenses.base import NoDefense  # noqa: E402
from fedleak.metrics.text import rouge, score_text, match_sequences  # noqa: E402
from fedleak.models.text import TextLMSpec, build_lm  # noqa: E402
from fedleak.threat_models.text import build_text_threat_model  # noqa: E402

VOCAB = 300


def tiny(width=64, layers=2, seed=0):
    return build_lm(TextLMSpec(vocab_size=VOCAB, width=width, layers=layers, heads=4, context=32), seed=seed)


def batch(B, L, seed=0):
    return torch.randint(1, VOCAB, (B, L), generator=torch.Generator().manual_seed(seed))


def observe(threat_model, model, ids, **options):
    return build_text_threat_model(threat_model, **options).observe(model, ids, NoDefense())


def test_dager_recovers_a_batch_of_two_exactly():
    model, ids = tiny(), batch(2, 8)
    obs, client = observe("text-fedsgd", model, ids)
    rec = build_text_attack("dager").reconstruct(obs, client, 8)
    assert rec.extras["last_token"] == "gradient"
    rows = score_text(rec.ids, ids, lambda t: " ".join(f"w{i}" for i in t))
    assert [r["exact_sequence"] for r in rows] == [1.0, 1.0]


def test_span_test_passes_the_batch_tokens_and_rejects_the_others():
    model, ids = tiny(), batch(3, 6, seed=1)
    obs, client = observe("text-fedsgd", model, ids)
    span = LayerSpan(obs, 0, rank_tol=1e-4, max_rank=3 * 5)
    dist = span.distance(first_layer_inputs(client, 5))        # (positions, V)
    outside = [v for v in range(VOCAB) if v not in set(ids.flatten().tolist())]
    for p in range(5):
        assert dist[p, ids[:, p]].max() < 1e-3
        assert dist[p, outside].min() > 0.05
    # the last position has no loss term: its tokens are not in the span (the attack reads them elsewhere)
    last = first_layer_inputs(client, 6)[5]
    assert span.distance(last)[ids[:, 5]].min() > 0.05


def test_dager_fails_once_the_batch_fills_the_embedding_width():
    # B x (L-1) = 4 x 20 = 80 > d = 64: every token lies in the span (LayerNorm's outputs have mean 0:
    # they span d - 1 = 63 dimensions), the test says nothing
    model, ids = tiny(), batch(4, 21, seed=2)
    obs, client = observe("text-fedsgd", model, ids)
    rec = build_text_attack("dager", beam=8, max_per_position=8).reconstruct(obs, client, 21)
    assert rec.extras["first_layer_rank"] == 63 and rec.extras["span_full"]
    assert min(rec.extras["tokens_per_position"]) == 8
    rows = score_text(rec.ids, ids, str)
    assert sum(r["exact_sequence"] for r in rows) == 0


def test_a_token_repeated_within_a_sequence_is_placed_by_the_second_layer():
    # 140 at positions 0 and 3: the first layer's span then passes 140 at every position of that
    # sequence's tokens as well; only the second layer puts each token where it was
    model = tiny()
    ids = torch.tensor([[140, 7, 82, 140, 9, 11, 5]])
    obs, client = observe("text-fedsgd", model, ids)
    rec = build_text_attack("dager").reconstruct(obs, client, 7)
    assert rec.extras["assembly"] == "second-layer span"
    assert rec.ids.tolist() == ids.tolist()


def test_dager_chooses_the_sequences_that_explain_both_layers_gradients():
    # a false candidate (one token of a true sequence changed) ranked first: the chosen batch must still be
    # the true one, whose inputs leave nothing of the two layers' gradients unexplained
    from fedleak.attacks.dager import Dager
    model, ids = tiny(), batch(3, 6, seed=5)
    obs, client = observe("text-fedsgd", model, ids)
    first, second = LayerSpan(obs, 0, 1e-7, 15), LayerSpan(obs, 1, 1e-7, 15)
    seen = ids[:, :-1]
    false = seen[1].clone()
    false[3] = seen[0, 3] if seen[0, 3] != false[3] else seen[2, 3]
    candidates = torch.cat([false[None], seen[[2, 0, 1]]])
    chosen, unexplained = Dager._choose(client, candidates, first, second, 3)
    assert {tuple(r) for r in chosen.tolist()} == {tuple(r) for r in seen.tolist()}
    assert unexplained < 1e-9
    _, with_false = Dager._choose(client, candidates[:3], first, second, 3)
    assert with_false > 1e-6


def test_lora_shares_only_the_adapter_gradients_and_dager_reads_them():
    model, ids = tiny(), batch(2, 8, seed=3)
    obs, client = observe("text-lora", model, ids, rank=32)
    assert all("lora_" in n for n in obs.param_names) and len(obs.param_names) == 4  # 2 layers x (A, B)
    shapes = {n.split(".c_attn.")[1]: tuple(t.shape) for n, t in zip(obs.param_names, obs.shared)}
    assert shapes == {"lora_A.default.weight": (32, 64), "lora_B.default.weight": (3 * 64, 32)}
    a = [t for n, t in zip(obs.param_names, obs.shared) if "lora_A" in n]
    assert all(t.abs().max() == 0 for t in a)  # round 0: B = 0, so A's gradient is zero
    base = {n: p for n, p in client.named_parameters() if "lora_" not in n}
    assert not any(p.requires_grad for p in base.values())
    rec = build_text_attack("dager").reconstruct(obs, client, 8)
    assert rec.extras["last_token"] == "fit"  # no embedding gradient: the last label is fitted through the adapters
    assert {tuple(r) for r in rec.ids.tolist()} == {tuple(r) for r in ids.tolist()}


def test_lora_below_the_batch_rank_hides_the_batch():
    # rank 4 < B x (L-1) = 14: the adapters' gradient spans too few directions
    model, ids = tiny(), batch(2, 8, seed=3)
    obs, client = observe("text-lora", model, ids, rank=4)
    rec = build_text_attack("dager", beam=8, max_per_position=8).reconstruct(obs, client, 8)
    got = {tuple(r) for r in rec.ids[:, :-1].tolist()}
    assert got != {tuple(r) for r in ids[:, :-1].tolist()}


def test_tag_rebuilds_one_short_sequence():
    torch.manual_seed(0)
    model, ids = tiny(width=32, layers=1), batch(1, 4, seed=4)
    obs, client = observe("text-fedsgd", model, ids)
    rec = build_text_attack("tag", iterations=60, lr=0.1).reconstruct(obs, client, 4)
    assert rec.extras["loss_trace"][-1] < rec.extras["loss_trace"][0]
    assert (rec.ids == ids).float().mean() >= 0.75


def test_rouge_agrees_with_hand_counts():
    # reference "the cat sat on the mat" (6), prediction "the cat sat" (3): R1 P=1 R=1/2 F=2/3;
    # bigrams 2 of 5 reference, 2 of 2 predicted: F = 2*(1*0.4)/1.4; LCS 3: F = 2/3
    s = rouge("the cat sat", "the cat sat on the mat")
    assert s["rouge1"] == pytest.approx(2 / 3, abs=1e-12)
    assert s["rouge2"] == pytest.approx(0.8 / 1.4, abs=1e-12)
    assert s["rougeL"] == pytest.approx(2 / 3, abs=1e-12)
    assert rouge("mat on sat", "the cat sat on the mat")["rougeL"] == pytest.approx(2 * (1 / 3) * (1 / 6) / (1 / 3 + 1 / 6))


def test_scores_match_each_private_sequence_to_its_own_candidate():
    private = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    candidates = torch.tensor([[5, 6, 7, 0], [9, 9, 9, 9], [1, 2, 3, 4]])
    assert match_sequences(candidates, private) == [2, 0]
    rows = score_text(candidates, private, lambda t: " ".join(f"w{i}" for i in t))
    assert [r["exact_sequence"] for r in rows] == [1.0, 0.0]
    assert rows[1]["token_accuracy"] == 0.75
    with pytest.raises(ConfigError, match="candidates"):
        match_sequences(candidates[:1], private)


def test_options_are_checked_with_the_key_named():
    with pytest.raises(ConfigError, match="threat_model.options.rank"):
        build_text_threat_model("text-lora", rank=0)
    with pytest.raises(ConfigError, match="attack.options.last_token"):
        build_text_attack("dager", last_token="guess")
    with pytest.raises(ConfigError, match="runs on gradient"):
        model, ids = tiny(), batch(1, 4)
        obs, client = observe("text-fedavg", model, ids)
        build_text_attack("tag").reconstruct(obs, client, 4)


def test_held_out_text_is_disjoint_from_the_training_topics():
    from fedleak.data.text import topic_texts
    train, held = topic_texts()
    assert held and train and not set(train) & set(held)
    assert len(held) == pytest.approx((len(train) + len(held)) / 5, abs=1)


def test_private_sentences_are_not_in_the_training_text():
    from fedleak.data.text import load_text, topic_texts
    data = load_text(512)
    train, _ = topic_texts()
    texts = [data.decode(s) for s in data.victim_ids]
    assert len(texts) > 100
    assert not [t for t in texts if any(t in page for page in train)]
    first, again = data.private_batch(4, 12, seed=5), data.private_batch(4, 12, seed=5)
    assert torch.equal(first, again) and len({tuple(r) for r in first.tolist()}) == 4


def _row(defense, attack, batch, sequence, rougeL, exact=0.0, error=None, text="a <b>|c"):
    return {"threat_model_label": "text-fedsgd", "batch_size": 1, "defense_label": defense, "attack_label": attack,
            "batch": batch, "sequence": sequence, "rougeL": rougeL, "exact_sequence": exact, "error": error,
            "private_text": text, "reconstructed_text": text + "!"}


def _frame_rows(rows):
    return [{**r, "defense": r["defense_label"].split()[0], "rouge1": r["rougeL"], "rouge2": r["rougeL"],
             "token_accuracy": r["rougeL"], "wall_time_s": 1.0} for r in rows]


def _judge(rows, failed=None):
    from fedleak.harness.verdict.judge import compute_text_verdicts
    from fedleak.metrics.record import METRICS
    return {v.defense_label: v for v in compute_text_verdicts(_frame_rows(rows), [(METRICS["rougeL"], 0.5)], "worst",
                                                              failed=failed)}


def test_text_verdicts_are_the_image_verdicts_logic_over_sequences():
    # two private sequences (batches 0 and 1); the undefended run recovers both (control 100 %)
    rows = [_row("none", "dager", 0, 0, 1.0, 1.0), _row("none", "tag", 0, 0, 0.2),
            _row("none", "dager", 1, 0, 0.95), _row("none", "tag", 1, 0, 0.1),
            # under dp: dager fails on sequence 0, tag rebuilds sequence 1: the worst case is tag's 0.6
            _row("dp", "dager", 0, 0, 0.1), _row("dp", "tag", 0, 0, 0.3),
            _row("dp", "dager", 1, 0, 0.2), _row("dp", "tag", 1, 0, 0.6),
            _row("prune", "dager", 0, 0, 0.1), _row("prune", "tag", 0, 0, 0.2),
            _row("prune", "dager", 1, 0, 0.3), _row("prune", "tag", 1, 0, 0.0),
            _row("sketch", "dager", 0, 0, float("nan"), float("nan"), error="RuntimeError: x"), _row("sketch", "tag", 0, 0, 0.1),
            _row("sketch", "dager", 1, 0, 0.1), _row("sketch", "tag", 1, 0, 0.1)]
    got = _judge(rows, failed=[{"labels": {"threat_model_label": "text-fedsgd", "batch_size": 1, "defense_label": "prune",
                                           "attack_label": "extra"}, "error": "ValueError: share"}])
    assert got["none"].recovered == 2 and got["none"].control_recovered == 1.0  # ROUGE-L 0.95 counts as recovered
    assert got["dp"].status == "LEAKS" and got["dp"].worst["rougeL"] == 0.6 and got["dp"].best_attack == "tag"
    assert got["dp"].recovered == 0 and got["dp"].gate == "fail"
    # a failed cell is a gap: the verdict cannot hold, however low its scores
    assert got["prune"].status == "INCONCLUSIVE" and any("extra did not run" in r for r in got["prune"].reasons)
    assert got["sketch"].status == "INCONCLUSIVE" and got["sketch"].errors == 1
    assert any("dager failed on 1 of 2 sequences" in r for r in got["sketch"].reasons)
    assert _judge(rows)["prune"].status == "holds"
    # without the control's success the attacks' failure says nothing: INCONCLUSIVE, naming the sequences
    weak = [r for r in rows if not (r["defense_label"] == "none" and r["attack_label"] == "dager" and r["batch"] == 1)]
    prune = _judge(weak)["prune"]
    assert prune.status == "INCONCLUSIVE" and prune.control_recovered == 0.5
    assert "1 of these 2 sequences are not recovered" in prune.reasons[0]


def test_recovered_sequence_is_exact_or_rougeL_from_0_9():
    from fedleak.harness.verdict.judge import recovered_sequence
    assert recovered_sequence(1.0, 0.0) and recovered_sequence(0.0, 0.9) and not recovered_sequence(0.0, 0.89)
    assert not recovered_sequence(float("nan"), float("nan"))


def test_text_report_escapes_private_text(tmp_path):
    from fedleak.reports.text_report import write_text_report
    rows = [_row("none", "dager", 0, 0, 1.0, 1.0, text="<script>alert(1)</script> | x")]
    md, page = write_text_report([v.to_dict() for v in _judge(rows).values()], tmp_path, "t", 0.5)
    assert "<script>" not in page.read_text() and "&lt;script&gt;" in page.read_text()
    assert "\\<script\\>" in md.read_text() and "\\| x" in md.read_text()


USER_DEFENSE = """
import torch
from fedleak.defenses.base import Defense


class Passthrough(Defense):
    name = "user-passthrough"

    def __init__(self, fail: bool = False):
        self.fail = fail

    def share(self, update, context):
        if self.fail:
            raise RuntimeError("the user's share broke")
        return [u.clone() for u in update], {}
"""


@pytest.fixture
def tiny_text(monkeypatch, tmp_path):
    """The text matrix on a tiny random-init LM (the shipped one takes minutes to pretrain), and a user's
    defense in a folder of their own (the working directory)."""
    from fedleak.data.text import load_text
    import fedleak.harness.text.run as text_run
    data = load_text(512)
    model = build_lm(TextLMSpec(vocab_size=data.vocab_size, width=64, layers=2, heads=4, context=32), seed=0)
    monkeypatch.setattr(text_run, "shipped_lm", lambda *a, **k: (data, model))
    (tmp_path / "user_defense.py").write_text(USER_DEFENSE)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "text.toml"
    config.write_text('seq_len = 6\nbatch_sizes = [2]\nbatches = 1\nthreat_models = [{ name = "text-fedsgd" }]\n'
                      'attacks = [{ name = "dager" }]\n'
                      'defenses = [{ name = "none" }, { name = "dp", options = { clip = 1.0, sigma = 1.0 } }]\n'
                      '[presets.ci]\nbatches = 1\n')
    return config


def _ci_files(folder):
    import json
    from junitparser import Error, Failure, JUnitXml
    summary = json.loads((folder / "summary.json").read_text())
    cases = [c for suite in JUnitXml.fromfile(str(folder / "junit.xml")) for c in suite]
    failures = sum(isinstance(r, Failure) for c in cases for r in c.result)
    errors = sum(isinstance(r, Error) for c in cases for r in c.result)
    return summary, failures, errors


def test_matrix_text_gate_and_evaluate_defense_agree_with_their_files(tiny_text, tmp_path, capsys):
    from fedleak.harness.cli.main import main
    pytest.importorskip("junitparser")
    # the shipped defenses under the gate: dp (sigma = 1) holds against DAGER, whose control recovers both sequences
    status = main(["matrix", str(tiny_text), "--budget", "ci", "--gate", "--output", str(tmp_path / "m")])
    summary, failures, errors = _ci_files(tmp_path / "m")
    dp = next(v for v in summary["verdicts"] if v["defense"] == "dp")
    assert dp["status"] == "holds" and dp["control_recovered"] == 1.0 and summary["gate"]["passed"]
    assert status == 0 and failures == errors == 0
    # a user's defense that sends the gradient unchanged leaks: the gate fails, in every file and the exit status
    status = main(["evaluate-defense", "user_defense:Passthrough", "--matrix", str(tiny_text), "--gate",
                   "--output", str(tmp_path / "e")])
    summary, failures, errors = _ci_files(tmp_path / "e")
    mine = [v for v in summary["verdicts"] if v["gated"]]
    assert [v["defense"] for v in mine] == ["user-passthrough"] and mine[0]["status"] == "LEAKS"
    assert status == 1 and not summary["gate"]["passed"] and failures == 1 and errors == 0
    # a user's share that raises: a failed cell, counted (gate fails closed), never a crash
    status = main(["evaluate-defense", "user_defense:Passthrough", "--option", "fail=true", "--matrix", str(tiny_text),
                   "--gate", "--output", str(tmp_path / "f")])
    summary, failures, errors = _ci_files(tmp_path / "f")
    # both of dager's modes (non-adaptive and adaptive) are cells of their own
    assert status == 1 and summary["gate"]["errors"] == 2 and errors == 2 and not summary["gate"]["passed"]
    assert "the user's share broke" in capsys.readouterr().out


def test_text_matrix_config_errors_name_the_key(tmp_path):
    from fedleak.harness.text.matrix import load_text_matrix
    shipped = load_text_matrix(preset="ci")
    assert shipped.defenses[0].name == "none" and {d.name for d in shipped.defenses} >= {"dp", "prune", "quantize", "sketch"}
    bad = tmp_path / "m.toml"
    bad.write_text('threat_models = [{ name = "text-fedsgd" }]\nattacks = [{ name = "dager" }]\nbatchsize = [1]\n')
    with pytest.raises(ConfigError, match="unknown key 'batchsize'"):
        load_text_matrix(bad)
    bad.write_text('threat_models = [{ name = "text-fedsgd" }]\nattacks = [{ name = "dager", opts = {} }]\n')
    with pytest.raises(ConfigError, match=r"attacks\[0\]"):
        load_text_matrix(bad)
    with pytest.raises(ConfigError, match="--budget"):
        load_text_matrix(preset="nightly")


def test_fedleak_matrix_text_is_the_text_matrix():
    from fedleak.harness.cli.text import is_text_matrix
    assert is_text_matrix("text") and not is_text_matrix("ci") and not is_text_matrix("no-such-matrix")


def test_every_text_score_is_a_declared_record_that_grows_with_leakage():
    from fedleak.metrics.record import METRICS, TEXT_REPORTED
    rows = score_text(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 4]]), lambda t: " ".join(f"w{i}" for i in t))
    for m in TEXT_REPORTED:
        assert METRICS[m.name] is m and m.larger_leaks and m.name in rows[0]
    assert METRICS["rougeL"].gate_key == "max_rougeL" and METRICS["rougeL"].format(1.0) == "exact"


def _negate_defense():
    """A user's defense whose share flips the update's sign (the server's decoding does not undo it)."""
    from fedleak.defenses.base import Defense

    class Negate(Defense):
        name = "test-negate"

        def share(self, update, context):
            return [-u for u in update], {}
    return Negate()


def test_adaptive_tag_runs_the_defenses_own_share_in_its_loop():
    torch.manual_seed(0)
    model, ids = tiny(width=32, layers=1), batch(1, 4, seed=4)
    defense = _negate_defense()
    obs, client = build_text_threat_model("text-fedsgd").observe(model, ids, defense)
    attack = build_text_attack("tag", iterations=60, lr=0.1)
    blind = attack.reconstruct(obs, client, 4)
    known = attack.reconstruct(obs, client, 4, defense=defense)
    assert known.extras["defense_replay"] == "autograd"
    assert (known.ids == ids).float().mean() >= 0.75 > (blind.ids == ids).float().mean()


def test_adaptive_dager_reads_a_perturbed_span_by_the_known_rank():
    # half of every tensor's entries zeroed: the thresholds of the exact test reject true tokens; the
    # leading B·(L−1) directions and the nearest tokens still rebuild the batch
    from fedleak.defenses import build_defense
    model, ids = tiny(), batch(2, 8, seed=3)
    prune = build_defense("prune", ratio=0.5)
    obs, client = build_text_threat_model("text-fedsgd").observe(model, ids, prune)
    blind = build_text_attack("dager").reconstruct(obs, client, 8)
    known = build_text_attack("dager").reconstruct(obs, client, 8, defense=prune)
    assert {tuple(r) for r in known.ids.tolist()} == {tuple(r) for r in ids.tolist()}
    assert {tuple(r) for r in blind.ids.tolist()} != {tuple(r) for r in ids.tolist()}


def test_lamps_discrete_step_undoes_a_swap_the_gradient_rules_out():
    torch.manual_seed(0)
    model, ids = tiny(width=32, layers=1), batch(1, 5, seed=6)
    obs, client = observe("text-fedsgd", model, ids)
    lamp = build_text_attack("lamp", lamp_candidates=40)
    assert lamp.options.lamp_every == 50 and build_text_attack("tag").options.lamp_every == 0
    swapped = ids.clone()
    swapped[0, 1], swapped[0, 3] = ids[0, 3], ids[0, 1]
    z = (torch.nn.functional.one_hot(swapped, VOCAB).float() * 5.0).requires_grad_(True)
    params = [dict(client.named_parameters())[n] for n in obs.param_names]
    target = [t.detach() for t in obs.update]
    norm = sum((t * t).sum() for t in target)
    def distance(grads):
        return sum(((a - b) ** 2).sum() for a, b in zip(grads, target)) / norm
    changed = lamp._discrete_step(client, params, z, distance, torch.Generator().manual_seed(0))
    assert changed == 1 and torch.equal(z.detach().argmax(-1), ids)


def tiny_bert(width=64, layers=3, seed=0):
    from fedleak.models.text import TextClassifierSpec, build_classifier
    return build_classifier(TextClassifierSpec(vocab_size=VOCAB, width=width, layers=layers, heads=4, context=32,
                                               num_labels=4), seed=seed)


@pytest.mark.parametrize("B", [1, 2])
def test_dager_recovers_a_batch_exactly_from_the_bert_classifiers_gradient(B):
    model, ids = tiny_bert(), batch(B, 8, seed=B)
    labels = torch.arange(B) % 4
    obs, client = build_text_threat_model("text-fedsgd").observe(model, ids, NoDefense(), labels=labels)
    rec = build_text_attack("dager").reconstruct(obs, client, 8)
    assert rec.extras["last_token"] == "span"    # every position is in the encoder's span
    assert sorted(map(tuple, rec.ids.tolist())) == sorted(map(tuple, ids.tolist()))
    assert rec.extras["unexplained"] < 1e-9


def test_the_batch_search_undoes_a_mixture_of_two_bert_sequences():
    """On the encoder a sequence's own span distance does not single out the true sequences; what the batch
    leaves unexplained of both layers' gradients does. From a batch that swapped the halves of two true
    sequences (each a mixture), the batch search finds the true pair."""
    from fedleak.attacks.dager import Dager
    model, ids = tiny_bert(), batch(2, 8, seed=5)
    obs, client = build_text_threat_model("text-fedsgd").observe(model, ids, NoDefense(), labels=torch.tensor([0, 1]))
    first, second = LayerSpan(obs, 0, 1e-9, 16, client), LayerSpan(obs, 1, 1e-9, 16, client)
    mixed = ids.clone()
    mixed[0, 4:], mixed[1, 4:] = ids[1, 4:], ids[0, 4:]
    start = Dager._unexplained(client, mixed, first, second)
    sets = [ids[:, p].unique() for p in range(8)]
    found, left = Dager._refine_batch(client, sets, first, second, mixed, start, seed=0, tol=1e-9, starts=0)
    assert start > 1e-6 and left < 1e-9
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, ids.tolist()))


def test_the_bert_classifiers_last_layer_is_no_span_and_its_loss_needs_labels():
    model, ids = tiny_bert(layers=2), batch(1, 8)
    obs, client = build_text_threat_model("text-fedsgd").observe(model, ids, NoDefense(), labels=torch.tensor([1]))
    with pytest.raises(ConfigError, match="last"):
        LayerSpan(obs, 1, 1e-7, 8, client)
    with pytest.raises(ConfigError, match="labels"):
        build_text_threat_model("text-fedsgd").observe(model, ids, NoDefense())


def test_lora_on_the_bert_classifier_targets_query_key_value_and_dager_reads_it():
    model, ids = tiny_bert(), batch(2, 8, seed=2)
    obs, client = build_text_threat_model("text-lora", rank=32).observe(model, ids, NoDefense(), labels=torch.tensor([2, 0]))
    assert obs.param_names and all("lora_" in n for n in obs.param_names)
    assert {n.split(".")[-4] for n in obs.param_names} == {"query", "key", "value"}
    rec = build_text_attack("dager").reconstruct(obs, client, 8)   # r = 32 >= B x L = 16: the span holds the batch
    assert sorted(map(tuple, rec.ids.tolist())) == sorted(map(tuple, ids.tolist()))


def test_the_text_victim_option_is_checked_with_the_key_named(tmp_path):
    from fedleak.harness.text.matrix import load_text_matrix
    from fedleak.harness.text.run import TextRun
    with pytest.raises(ConfigError, match=r"^text run: model: expected one of gpt2, bert, bert-mlm, got 'bart'$"):
        TextRun(model="bart")
    path = tmp_path / "m.toml"
    path.write_text('model = "roberta"\nthreat_models = [{ name = "text-fedsgd" }]\nattacks = [{ name = "dager" }]\n')
    with pytest.raises(ConfigError, match=r"^model: expected one of"):
        load_text_matrix(path)
    path.write_text('model = "bert"\nthreat_models = [{ name = "text-fedsgd" }]\nattacks = [{ name = "dager" }]\n')
    assert load_text_matrix(path).model == "bert"


def test_tag_says_it_runs_on_the_causal_lm_only():
    model, ids = tiny_bert(), batch(1, 4)
    obs, client = build_text_threat_model("text-fedsgd").observe(model, ids, NoDefense(), labels=torch.tensor([0]))
    with pytest.raises(ConfigError, match="causal LM"):
        build_text_attack("tag", iterations=1).reconstruct(obs, client, 4)


def test_private_labels_are_the_topic_group_of_each_sentence():
    from fedleak.data.text import TOPIC_GROUPS, load_text
    data = load_text(2048)
    ids, labels = data.private_labelled_batch(4, 8, seed=3)
    assert torch.equal(ids, data.private_batch(4, 8, seed=3))
    for seq, y in zip(ids.tolist(), labels.tolist()):
        owners = {lab for s, lab in zip(data.victim_ids, data.victim_labels) if s[:8] == seq}
        assert y in owners and 0 <= y < TOPIC_GROUPS
    assert len(set(data.victim_labels)) == TOPIC_GROUPS
