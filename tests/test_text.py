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


def test_text_verdicts_take_each_persons_best_attack_and_need_the_control():
    from fedleak.harness.text.matrix import text_verdicts
    rows = [_row("none", "dager", 0, 0, 1.0, 1.0), _row("none", "tag", 0, 0, 0.2),
            # under dp: dager fails on sequence 0, tag rebuilds sequence 1: the worst case is tag's 0.6
            _row("dp", "dager", 0, 0, 0.1), _row("dp", "tag", 0, 0, 0.3),
            _row("dp", "dager", 1, 0, 0.2), _row("dp", "tag", 1, 0, 0.6),
            _row("prune", "dager", 0, 0, 0.1), _row("prune", "tag", 0, 0, 0.2),
            _row("sketch", "dager", 0, 0, float("nan"), float("nan"), error="RuntimeError: x"), _row("sketch", "tag", 0, 0, 0.1)]
    got = {v.defense: v for v in text_verdicts(rows, 0.5)}
    assert got["dp"].verdict == "LEAKS" and got["dp"].worst_rougeL == 0.6 and got["dp"].best_attack == "tag"
    assert got["prune"].verdict == "PROTECTS" and got["prune"].control_rougeL == 1.0
    assert got["sketch"].verdict == "GAP"
    weak = [r for r in rows if not (r["defense_label"] == "none" and r["attack_label"] == "dager")]
    assert {v.defense: v.verdict for v in text_verdicts(weak, 0.5)}["prune"] == "INCONCLUSIVE"


def test_text_report_escapes_private_text(tmp_path):
    from dataclasses import asdict
    from fedleak.harness.text.matrix import text_verdicts
    from fedleak.reports.text_report import write_text_report
    rows = [_row("none", "dager", 0, 0, 1.0, 1.0, text="<script>alert(1)</script> | x")]
    md, page = write_text_report([asdict(v) for v in text_verdicts(rows, 0.5)], tmp_path, "t", 0.5)
    assert "<script>" not in page.read_text() and "&lt;script&gt;" in page.read_text()
    assert "\\<script\\>" in md.read_text() and "\\| x" in md.read_text()


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
