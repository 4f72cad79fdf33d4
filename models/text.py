"""The text victim: a small GPT-2-architecture causal language model built from a `transformers`
config (nothing downloaded), pretrained here on the train split of data.text for a CPU-bounded
number of steps and cached in FEDLEAK_CACHE as tensors (core.io: loaded weights_only, a tampered or
foreign entry is rebuilt with a warning).

Dropout is off (attn/resid/embd pdrop = 0): a client's gradient is then a function of its batch and
the weights alone, as in DAGER's and LAMP's evaluation. Attention is the eager implementation, so
second derivatives (gradient matching attacks) run on every backend.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch

from fedleak.core.errors import ConfigError
from fedleak.core.io import cache_dir, cached_tensors, digest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every model here is built from a config


@dataclass(frozen=True)
class TextLMSpec:
    vocab_size: int = 2048
    width: int = 128          # embedding width d: DAGER's span test needs B x L < d
    layers: int = 2
    heads: int = 4
    context: int = 64         # positions (GPT-2's n_positions)

    def __post_init__(self):
        for key in ("vocab_size", "width", "layers", "heads", "context"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be >= 1, got {getattr(self, key)}")
        if self.width % self.heads:
            raise ConfigError(f"model.width: must be a multiple of model.heads ({self.heads}), got {self.width}")


@dataclass(frozen=True)
class Pretraining:
    """The CPU-bounded pretraining budget (defaults: about two minutes on two shared cores)."""
    steps: int = 1200
    batch_size: int = 16
    seq_len: int = 32
    lr: float = 3e-3
    seed: int = 0


def build_lm(spec: TextLMSpec, seed: int = 0):
    """A randomly initialised GPT2LMHeadModel of `spec` (float32, eval mode, no dropout)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=spec.vocab_size, n_positions=spec.context, n_embd=spec.width, n_layer=spec.layers,
                        n_head=spec.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    return model.eval()


def lm_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """The client's fine-tuning loss: mean next-token cross-entropy over the batch (HF's shifted labels)."""
    return model(input_ids=ids, labels=ids).loss


def pretrain(model, train_ids: torch.Tensor, budget: Pretraining, progress: bool = False, loss_fn=None):
    """AdamW with a cosine schedule on random windows of the train stream; `loss_fn(model, batch, generator)`
    is the objective (default: the LM's next-token loss)."""
    loss_fn = loss_fn or (lambda m, batch, _: lm_loss(m, batch))
    g = torch.Generator().manual_seed(budget.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / budget.steps)))
    model.train()
    last = float("nan")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs faster on one thread than on shared cores
    try:
        last = _steps(model, train_ids, budget, g, opt, sched, progress, loss_fn)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return last


def _steps(model, train_ids, budget, g, opt, sched, progress, loss_fn):
    last = float("nan")
    for step in range(budget.steps):
        start = torch.randint(0, len(train_ids) - budget.seq_len - 1, (budget.batch_size,), generator=g)
        batch = torch.stack([train_ids[s:s + budget.seq_len] for s in start.tolist()])
        loss = loss_fn(model, batch, g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        last = loss.item()
        if progress and step % 100 == 0:
            print(f"pretrain step {step}: loss {last:.3f}", flush=True)
    return last


def _check_fits(data, spec, budget: Pretraining) -> None:
    if spec.vocab_size != data.vocab_size:
        raise ConfigError(f"model.vocab_size: {spec.vocab_size} differs from the tokenizer's {data.vocab_size}")
    if budget.seq_len > spec.context:
        raise ConfigError(f"pretraining seq_len {budget.seq_len} exceeds the model's context {spec.context}")


def _weights_of(expected: dict):
    """A cache entry's check: a state dict of exactly these names and shapes (anything else is rebuilt)."""
    def problem(value):
        state = value.get("state") if isinstance(value, dict) else None
        if not isinstance(state, dict) or {k: getattr(v, "shape", None) for k, v in state.items()} != expected:
            return "not this model's weights"
        return None
    return problem


def pretrained_lm(data, spec: TextLMSpec | None = None, budget: Pretraining | None = None, progress: bool = False):
    """The shipped LM: `spec` pretrained on `data`'s train split, cached by (spec, budget, corpus)."""
    spec = spec or TextLMSpec(vocab_size=data.vocab_size)
    budget = budget or Pretraining()
    _check_fits(data, spec, budget)
    key = digest([asdict(spec), asdict(budget), data.corpus_digest, "gpt2-v1"])
    path = cache_dir() / "text" / f"lm-{key}.pt"
    model = build_lm(spec, seed=budget.seed)
    expected = {k: v.shape for k, v in model.state_dict().items()}

    def build():
        model_ = build_lm(spec, seed=budget.seed)
        loss = pretrain(model_, data.train_ids, budget, progress)
        return {"state": {k: v.detach().clone() for k, v in model_.state_dict().items()},
                "final_loss": torch.tensor(loss)}

    entry = cached_tensors(path, build, "a pretrained text LM", _weights_of(expected))
    model.load_state_dict(entry["state"])
    model.final_loss = float(entry["final_loss"])
    return model.eval()


@dataclass(frozen=True)
class TextClassifierSpec:
    """The encoder victim: a BERT-architecture sequence classifier (post-LN encoder, learned absolute
    positions, one token type) over the shipped tokenizer's vocabulary, read at position 0 (the pooler)."""
    vocab_size: int = 2048
    width: int = 128
    layers: int = 3           # the last layer reaches the pooler through position 0 only: DAGER's second-layer
    heads: int = 4            # test needs a layer below it (attacks/dager.py)
    context: int = 64
    num_labels: int = 4

    def __post_init__(self):
        for key in ("vocab_size", "width", "layers", "heads", "context"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be >= 1, got {getattr(self, key)}")
        if self.num_labels < 2:
            raise ConfigError(f"model.num_labels: must be >= 2, got {self.num_labels}")
        if self.width % self.heads:
            raise ConfigError(f"model.width: must be a multiple of model.heads ({self.heads}), got {self.width}")


def build_classifier(spec: TextClassifierSpec, seed: int = 0):
    """A randomly initialised BertForSequenceClassification of `spec` (float32, eval mode, no dropout)."""
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(vocab_size=spec.vocab_size, hidden_size=spec.width, num_hidden_layers=spec.layers,
                        num_attention_heads=spec.heads, intermediate_size=4 * spec.width,
                        max_position_embeddings=spec.context, type_vocab_size=1, num_labels=spec.num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval()


def base_model(model):
    """The transformers model itself: a peft-wrapped one (LoRA) unwrapped."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_encoder(model) -> bool:
    """Whether `model` (peft-wrapped or not) is the BERT classifier rather than the causal LM."""
    return getattr(base_model(model).config, "model_type", "") == "bert"


def text_loss(model, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The client's loss: the LM's next-token loss, or the classifier's mean cross-entropy on `labels`."""
    if is_encoder(model):
        if labels is None:
            raise ConfigError("text batch: the BERT classifier's loss needs the batch's labels")
        return model(input_ids=ids, labels=labels).loss
    return lm_loss(model, ids)


def _masked_lm_loss(mask_id: int):
    """BERT's masked-LM objective: 15 % of positions are predicted, their input replaced by `mask_id` (the
    tokenizer's only special token stands for [MASK])."""
    def loss(model, batch, g):
        masked = torch.rand(batch.shape, generator=g) < 0.15
        return model(input_ids=batch.masked_fill(masked, mask_id), labels=batch.masked_fill(~masked, -100)).loss
    return loss


CLASSIFIER_PRETRAINING = Pretraining(steps=300, batch_size=16, seq_len=32, lr=3e-3)


def pretrained_classifier(data, spec: TextClassifierSpec | None = None, budget: Pretraining | None = None):
    """The shipped encoder classifier: `spec`'s encoder pretrained with masked-LM on `data`'s train split
    (`budget`, default CLASSIFIER_PRETRAINING: well under a minute on one core), cached like the LM; the
    pooler and the classification head stay at their random initialisation (the client fine-tunes them).
    Pretraining matters to DAGER: at BERT's initialisation (std 0.02) attention adds almost nothing to the
    residual stream, so a layer's input barely depends on the rest of the sequence and sequences cannot be
    told apart from mixtures of the batch's tokens (docs/text.md)."""
    from transformers import BertForMaskedLM
    spec = spec or TextClassifierSpec(vocab_size=data.vocab_size)
    budget = budget or CLASSIFIER_PRETRAINING
    _check_fits(data, spec, budget)
    key = digest([asdict(spec), asdict(budget), data.corpus_digest, "bert-mlm-v1"])
    path = cache_dir() / "text" / f"bert-{key}.pt"
    model = build_classifier(spec, seed=budget.seed)
    expected = {k: v.shape for k, v in model.bert.state_dict().items() if not k.startswith("pooler.")}

    def build():
        torch.manual_seed(budget.seed)
        mlm = BertForMaskedLM(build_classifier(spec, seed=budget.seed).config)
        loss = pretrain(mlm, data.train_ids, budget, loss_fn=_masked_lm_loss(mask_id=0))
        return {"state": {k: v.detach().clone() for k, v in mlm.bert.state_dict().items()}, "final_loss": torch.tensor(loss)}

    entry = cached_tensors(path, build, "a pretrained text classifier", _weights_of(expected))
    model.bert.load_state_dict(entry["state"], strict=False)
    model.final_loss = float(entry["final_loss"])
    return model.eval()
