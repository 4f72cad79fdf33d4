"""One text attack run: the shipped LM (models.text, pretrained and cached), a client's private batches of
held-out sentences (data.text), a text threat model with a defense's `share`, a text attack, and one
row per private sequence with its scores (metrics.text) and provenance. The text matrix
(harness/text/matrix.py) and tools/text_table.py are loops over this."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch

from fedleak.core.errors import ConfigError


@dataclass(frozen=True)
class TextRun:
    attack: str = "dager"
    attack_options: dict = field(default_factory=dict)
    threat_model: str = "text-fedsgd"
    threat_model_options: dict = field(default_factory=dict)
    defense: str = "none"
    defense_options: dict = field(default_factory=dict)
    batch_size: int = 1
    seq_len: int = 16
    batches: int = 4          # private batches (clients), each drawn with seed + index
    seed: int = 0
    vocab_size: int = 2048
    adaptive: bool = False    # the attacker knows the defense: the attack gets a copy of it (TextAttack.adaptive)
    model: str = "gpt2"       # the victim: one of TEXT_MODELS

    def __post_init__(self):
        check_text_model(self.model, "text run: model")
        if self.batch_size < 1 or self.batches < 1:
            raise ConfigError(f"text run: batch_size and batches must be >= 1, got {self.batch_size}, {self.batches}")
        if self.seq_len < 2:
            raise ConfigError(f"text run: seq_len must be >= 2 (a next-token loss needs two tokens), got {self.seq_len}")


# the text victims (docs/text.md): the pretrained GPT-2-architecture LM; the BERT-architecture topic classifier
# at its random initialisation ("bert") or with its encoder pretrained by masked-LM ("bert-mlm")
TEXT_MODELS = ("gpt2", "bert", "bert-mlm")


def check_text_model(value, key: str) -> None:
    if value not in TEXT_MODELS:
        raise ConfigError(f"{key}: expected one of {', '.join(TEXT_MODELS)}, got {value!r}")


def shipped_lm(vocab_size: int = 2048, progress: bool = False, model: str = "gpt2"):
    """(the text data, the victim `model` of TEXT_MODELS), trained or read from the cache."""
    from fedleak.data.text import load_text
    from fedleak.models.text import TextClassifierSpec, TextLMSpec, build_classifier, pretrained_classifier, pretrained_lm
    check_text_model(model, "model")
    data = load_text(vocab_size)
    if model == "bert":
        return data, build_classifier(TextClassifierSpec(vocab_size=data.vocab_size))
    if model == "bert-mlm":
        return data, pretrained_classifier(data, TextClassifierSpec(vocab_size=data.vocab_size))
    return data, pretrained_lm(data, TextLMSpec(vocab_size=data.vocab_size), progress=progress)


def run_seq_len_limit(model) -> int:
    config = model.config
    return getattr(config, "n_positions", None) or config.max_position_embeddings


def run_text(run: TextRun, data=None, model=None, defense=None) -> list[dict]:
    """Rows, one per private sequence of each batch. `defense`: an instance (a user's), else built from the run."""
    from fedleak.attacks.text import build_text_attack
    from fedleak.defenses import build_defense
    from fedleak.metrics.text import score_text
    from fedleak.threat_models.text import build_text_threat_model
    if data is None or model is None:
        data, model = shipped_lm(run.vocab_size, model=run.model)
    if run.seq_len > run_seq_len_limit(model):
        raise ConfigError(f"text run: seq_len {run.seq_len} exceeds the model's context {run_seq_len_limit(model)}")
    threat = build_text_threat_model(run.threat_model, **run.threat_model_options)
    attack = build_text_attack(run.attack, **run.attack_options)
    defense = defense if defense is not None else build_defense(run.defense, **run.defense_options)
    if threat.kind not in defense.applies_to:
        raise ConfigError(f"defense '{defense.name}' does not apply to '{threat.kind}' ({run.threat_model})")
    rows = []
    for b in range(run.batches):
        # labels: the classifier's topic groups (data.text.TOPIC_GROUPS); the LM's loss does not read them
        ids, labels = data.private_labelled_batch(run.batch_size, run.seq_len, seed=run.seed + b)
        obs, client = threat.observe(model, ids, defense, seed=run.seed + b, client_id=b, labels=labels)
        start = time.perf_counter()
        error = None
        try:
            known = copy.deepcopy(defense) if run.adaptive else None
            rec = attack.reconstruct(obs, client, run.seq_len, seed=run.seed + b, defense=known)
            scored = score_text(rec.ids, ids, data.decode)
            extras = {k: v for k, v in rec.extras.items() if isinstance(v, (int, float, str))}
        except Exception as e:  # noqa: BLE001 - an attack that errors is a gap to report, never a row to drop
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            scored = [{"sequence": i, "token_accuracy": float("nan"), "exact_sequence": float("nan"), "rouge1": float("nan"),
                       "rouge2": float("nan"), "rougeL": float("nan"), "private_text": data.decode(ids[i].tolist()),
                       "reconstructed_text": ""} for i in range(ids.shape[0])]
            extras = {}
        wall = time.perf_counter() - start
        for r in scored:
            rows.append({**{k: v for k, v in asdict(run).items() if not k.endswith("_options")},
                         "attack_options": attack.describe(), "threat_model_options": threat.describe(),
                         "defense_options": defense.describe(), "defense": defense.name, "batch": b,
                         "wall_time_s": wall, "error": error, "torch": torch.__version__, **extras, **r})
    return rows
