"""Scores of a text reconstruction, one row per private sequence (the unit of harm is one person's text).

* `token_accuracy`: share of positions whose token id is right (same length, position by position).
* `exact_sequence`: 1.0 when the whole sequence is right token for token, else 0.0; its mean over a batch is
  the exact-sequence rate.
* `rouge1`, `rouge2`, `rougeL`: ROUGE F-measures of the decoded text against the private text, from
  Google's `rouge-score` package (its default tokenizer: lower-cased alphanumeric words, no stemming),
  as DAGER and LAMP report them.

A reconstruction may hold several candidates (K >= B) in any order: each private sequence is scored
against its own best distinct candidate, the matching that maximises total token accuracy
(Hungarian, rectangular), as metrics.image matches images.
"""
from __future__ import annotations

import numpy as np
import torch

from fedleak.core.errors import ConfigError

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def _scorer():
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        raise ConfigError(f"text scores need the 'rouge-score' package (pip install 'fedleak[text]'): {e}") from None
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures of `prediction` against `reference`."""
    scores = _scorer().score(reference, prediction)  # rouge-score's order: (target, prediction)
    return {k: float(scores[k].fmeasure) for k in ROUGE_KEYS}


def match_sequences(candidates: torch.Tensor, private: torch.Tensor) -> list[int]:
    """For each private sequence, the index of its distinct candidate, maximising total token accuracy."""
    from scipy.optimize import linear_sum_assignment
    if candidates.dim() != 2 or private.dim() != 2 or candidates.shape[1] != private.shape[1]:
        raise ConfigError(f"text scores: candidates {tuple(candidates.shape)} and private {tuple(private.shape)} "
                          "must be (K, L) and (B, L) token ids of one length")
    if candidates.shape[0] < private.shape[0]:
        raise ConfigError(f"text scores: {candidates.shape[0]} candidates for {private.shape[0]} private sequences")
    acc = (private[:, None, :] == candidates[None, :, :]).float().mean(-1).numpy()
    rows, cols = linear_sum_assignment(-acc)
    return [int(c) for _, c in sorted(zip(rows, cols))]


def score_text(candidates: torch.Tensor, private: torch.Tensor, decode) -> list[dict]:
    """One dict per private sequence: token_accuracy, exact_sequence, rouge1/2/L, both texts and the matched candidate."""
    candidates, private = candidates.cpu().long(), private.cpu().long()
    match = match_sequences(candidates, private)
    rows = []
    for i, j in enumerate(match):
        truth, guess = private[i], candidates[j]
        text_true, text_guess = decode(truth.tolist()), decode(guess.tolist())
        rows.append({"sequence": i, "candidate": j, "token_accuracy": float((truth == guess).float().mean()),
                     "exact_sequence": float(bool((truth == guess).all())), **rouge(text_guess, text_true),
                     "private_text": text_true, "reconstructed_text": text_guess})
    return rows


def summarise(rows: list[dict]) -> dict[str, float]:
    """Batch means, and the worst case for the person most exposed (max token accuracy)."""
    keys = ("token_accuracy", "exact_sequence", *ROUGE_KEYS)
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["max_token_accuracy"] = float(max(r["token_accuracy"] for r in rows))
    return out
