"""English text for the language-model victim, shipped with every Python: CPython's
`pydoc_data.topics` (the help() pages of the language reference, ~465k characters).

Two disjoint splits, by page: every `HELD_OUT_EVERY`-th distinct page (sorted by text) is held out,
and the client's private sentences come from those pages only, less any sentence a training page
holds verbatim; the rest trains the tokenizer and the
language model (and is what an attacker may hold as auxiliary text). A "reconstruction" of a
sentence the model was trained on would measure memory, not leakage.

The tokenizer is a byte-level BPE trained here with `tokenizers` on the train split and cached as
its JSON (core.io: a tampered entry is rebuilt, never executed). Nothing is downloaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from fedleak.core.errors import ConfigError, DataError
from fedleak.core.io import cache_dir, cached_json, digest

HELD_OUT_EVERY = 5
# the classifier's label: which of TOPIC_GROUPS contiguous groups of the (alphabetically sorted) held-out
# help pages a sentence comes from, a coarse topic label every sentence honestly has
TOPIC_GROUPS = 4
END_OF_TEXT = "<|endoftext|>"


def _clean(text: str) -> str:
    # pydoc pages are indented, hard-wrapped reST; one space per run of whitespace reads as prose
    return re.sub(r"\s+", " ", text).strip()


@lru_cache(maxsize=1)
def topic_texts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train texts, held-out texts), one cleaned string per pydoc topic."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions strip it
        raise DataError(f"dataset 'text': this Python has no pydoc_data.topics ({e})") from None
    # several topic names share one page (e.g. keywords and their statement): split distinct pages
    pages = sorted({_clean(topics[n]) for n in topics})
    train = tuple(p for i, p in enumerate(pages) if i % HELD_OUT_EVERY)
    held = tuple(p for i, p in enumerate(pages) if not i % HELD_OUT_EVERY)
    return train, held


def sentences(text: str) -> list[str]:
    """Sentence-like pieces: split after . ! ? followed by a space and a capital or a quote."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", text) if s.strip()]


def train_tokenizer(texts, vocab_size: int):
    """A byte-level BPE (GPT-2's scheme) trained on `texts`; deterministic for the same input."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


@dataclass
class TextData:
    """The tokenizer, the train split as one token stream, and the held-out sentences as token lists."""
    tokenizer: object              # tokenizers.Tokenizer
    train_ids: torch.Tensor        # (N,) long: train topics joined by END_OF_TEXT
    victim_ids: list[list[int]]    # one token list per held-out sentence
    vocab_size: int
    corpus_digest: str
    victim_labels: list[int] = field(default_factory=list)  # per held-out sentence: its page's topic group

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def private_batch(self, batch_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
        """(B, L) token ids: the first `seq_len` tokens of B distinct held-out sentences at least that
        long, drawn with `seed` (a client's private batch)."""
        return self.private_labelled_batch(batch_size, seq_len, seed)[0]

    def private_labelled_batch(self, batch_size: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The same batch as `private_batch` and (B,) topic-group labels (TOPIC_GROUPS classes)."""
        labels = self.victim_labels or [0] * len(self.victim_ids)
        pool: dict[tuple, int] = {}
        # distinct sequences: a repeated sentence would let "exact recovery" count one sequence twice
        for s, y in zip(self.victim_ids, labels):
            if len(s) >= seq_len:
                pool.setdefault(tuple(s[:seq_len]), y)
        if batch_size > len(pool):
            raise ConfigError(f"dataset 'text': {batch_size} sequences of {seq_len} tokens asked for, "
                              f"the held-out split has {len(pool)}")
        seqs, ys = list(pool), list(pool.values())
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(seqs), generator=g)[:batch_size]
        return (torch.tensor([list(seqs[int(i)]) for i in pick], dtype=torch.long),
                torch.tensor([ys[int(i)] for i in pick], dtype=torch.long))


@lru_cache(maxsize=4)
def load_text(vocab_size: int = 2048) -> TextData:
    """The shipped text split and its tokenizer (trained once, cached in FEDLEAK_CACHE)."""
    if vocab_size < 300:
        raise ConfigError(f"dataset 'text': vocab_size must be >= 300 (256 bytes + merges), got {vocab_size}")
    train, held = topic_texts()
    corpus = digest([train, held])
    path = cache_dir() / "text" / f"tokenizer-{digest([corpus, vocab_size])}.json"

    def problem(value):
        return None if isinstance(value, dict) and isinstance(value.get("tokenizer"), str) else "not a tokenizer entry"

    from tokenizers import Tokenizer
    entry = cached_json(path, lambda: {"tokenizer": train_tokenizer(train, vocab_size).to_str()}, "a text tokenizer", problem)
    try:
        tok = Tokenizer.from_str(entry["tokenizer"])
    except Exception:  # noqa: BLE001 - a foreign JSON: rebuild rather than fail
        path.unlink(missing_ok=True)
        entry = cached_json(path, lambda: {"tokenizer": train_tokenizer(train, vocab_size).to_str()}, "a text tokenizer", problem)
        tok = Tokenizer.from_str(entry["tokenizer"])
    eot = tok.token_to_id(END_OF_TEXT)
    stream: list[int] = []
    for text in train:
        stream.extend(tok.encode(text).ids)
        stream.append(eot)
    # boilerplate ("Changed in version 3.8: ...") recurs across pages: a private sentence the
    # training text holds verbatim would measure memory, so it is left out
    victims, labels = [], []
    for page, text in enumerate(held):
        for s in sentences(text):
            if not any(s in t for t in train):
                victims.append(tok.encode(s).ids)
                labels.append(page * TOPIC_GROUPS // len(held))
    return TextData(tok, torch.tensor(stream, dtype=torch.long), victims, tok.get_vocab_size(), corpus, labels)
