"""Aggregations of merged matrix results (harness.matrix_results): pure functions of the rows.

Leakage reads "the attacker's best": higher PSNR/SSIM and lower LPIPS mean more was rebuilt.
Within one context (dataset, model, victim state, threat model, knowledge), an image is attacked
by every attack, mode and seed; "best per cell" takes the strongest attack row's median, "best
per image" takes, for each image, the strongest result any attack got on it (the per-sample worst
case of AutoAttack), then the median over images. What a defense setting buys, with its checks, is
its verdict (harness.verdict, reports.verdicts), not a table here."""
from __future__ import annotations

import pandas as pd

from fedleak.metrics.record import METRICS

CONTEXT = ["dataset", "model", "victim_state", "threat_model", "knowledge_preset"]
BEST_CELL = "best attack (per cell)"
BEST_IMAGE = "best attack (per image)"


def attack_row(frame: pd.DataFrame) -> pd.Series:
    return frame["attack_label"] + frame["adaptive"].map({True: " (adaptive)", False: ""})


def row_order(frame: pd.DataFrame) -> list[str]:
    """Attacks in matrix order, each non-adaptive before adaptive."""
    attacks = list(pd.unique(frame["attack_label"]))
    pairs = frame[["attack_label", "adaptive", "row"]].drop_duplicates()
    pairs = pairs.assign(order=pairs["attack_label"].map(attacks.index)).sort_values(["order", "adaptive"])
    return list(pairs["row"])


def contexts(results: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    out = []
    for values, frame in results.groupby(CONTEXT, sort=False):
        out.append((dict(zip(CONTEXT, values)), frame))
    return out


def context_title(context: dict) -> str:
    return (f"{context['dataset']} / {context['model']} ({context['victim_state']}), "
            f"{context['threat_model']}, {context['knowledge_preset']} attacker")


def best(values: pd.Series | pd.core.groupby.SeriesGroupBy, metric: str):
    return METRICS[metric].most_leaked(values)


def heat_table(frame: pd.DataFrame, metric: str, identical: set[tuple[str, str]] = frozenset()) -> pd.DataFrame:
    """Rows: attack (mode), then the two "best attack" rows; columns: defense settings in matrix
    order; values: median over images of the attack's best result per image (over seeds). An
    adaptive row is left empty where it repeated the non-adaptive one (`identical`: (attack label,
    defense label) pairs, reports.verdicts.identical_pairs), and dropped where it always did."""
    if identical:
        repeat = [(a, d) in identical for a, d in zip(frame["attack_label"], frame["defense_label"])]
        frame = frame[~(pd.Series(repeat, index=frame.index) & frame["adaptive"])]
    frame = frame.assign(row=attack_row(frame))
    per_image = best(frame.groupby(["row", "defense_label", "image_index"], sort=False)[metric], metric)
    table = per_image.groupby(["row", "defense_label"], sort=False).median().unstack("defense_label")
    table = table.reindex(index=row_order(frame), columns=pd.unique(frame["defense_label"]))
    table.loc[BEST_CELL] = best(table, metric)
    strongest = best(frame.groupby(["defense_label", "image_index"], sort=False)[metric], metric)
    table.loc[BEST_IMAGE] = strongest.groupby("defense_label", sort=False).median()
    return table


def with_utility(summary: pd.DataFrame, utility: pd.DataFrame, context: dict) -> pd.DataFrame:
    """Join a context's defense summary with its utility rows (accuracy, ε, ...) where measured."""
    if utility.empty:
        return summary
    keys = {k: context[k] for k in ("dataset", "model", "victim_state")}
    mask = pd.Series(True, index=utility.index)
    for k, v in keys.items():
        mask &= utility[k].astype(str) == str(v)
    drop = {"utility_key", *keys, *summary.columns} - {"defense_label", "defense"}  # the attacked round's numbers win
    extra = utility[mask].drop(columns=[c for c in utility.columns if c in drop])
    joined = summary.merge(extra.drop(columns="defense"), on="defense_label", how="left")
    # reference settings (measured, not attacked) follow, with their leakage left empty
    reference = extra[~extra["defense_label"].isin(summary["defense_label"])]
    return pd.concat([joined, reference], ignore_index=True) if len(reference) else joined
