"""Aggregations of merged matrix results (harness.matrix.results): pure functions of the rows.

Leakage reads "the attacker's best": higher PSNR/SSIM and lower LPIPS mean more was rebuilt.
Within one context (dataset, model, victim state, threat model, knowledge), an image is attacked
by every attack, mode and seed; "best per cell" takes the strongest attack row's median, "best
per image" takes, for each image, the strongest result any attack got on it (the per-sample worst
case of AutoAttack), then the median over images. What a defense setting buys, with its checks, is
its verdict (harness.verdict.judge, reports.verdicts), not a table here."""
from __future__ import annotations

import json

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
    """One context per dataset, model, victim state, threat model (with its options: the same
    protocol over 1 and 4 clients is two settings) and knowledge. A threat model that the matrix
    runs with several option sets is named with them (`threat_model_label`)."""
    results = results.assign(threat_model_params=threat_model_params_text(results))
    variants = results.groupby("threat_model")["threat_model_params"].nunique()
    out = []
    for values, frame in results.groupby(CONTEXT + ["threat_model_params"], sort=False):
        context = dict(zip(CONTEXT + ["threat_model_params"], values))
        name, params = context["threat_model"], context["threat_model_params"]
        context["threat_model_label"] = threat_model_label(name, params, variants[name])
        out.append((context, frame))
    return out


def threat_model_label(name: str, params: str, option_sets: int) -> str:
    """A threat model's name, with its options where the run has it with several option sets."""
    return f"{name} ({options_text(params)})" if option_sets > 1 else name


def context_title(context: dict) -> str:
    return (f"{context['dataset']} / {context['model']} ({context['victim_state']}), "
            f"{context.get('threat_model_label', context['threat_model'])}, {context['knowledge_preset']} attacker")


def threat_model_params_text(results: pd.DataFrame) -> pd.Series:
    """The rows' threat-model options as JSON text, one value per option set ("{}" for rows written before they were recorded)."""
    if "threat_model_params" not in results.columns:
        return pd.Series("{}", index=results.index)
    return results["threat_model_params"].map(lambda v: v if isinstance(v, str) else json.dumps(v or {}, sort_keys=True))


def options_text(params: str) -> str:
    """A threat model's options (JSON text) as k=v, ..."""
    return ", ".join(f"{k}={v}" for k, v in json.loads(params).items()) or "defaults"


def model_check_table(results: pd.DataFrame) -> pd.DataFrame:
    """Where a client-side model check ran (`model_flagged` set): per threat model and model the
    server sent ("global", or the attack that crafted it), how many client rounds were checked and
    the share flagged: the false-positive rate on the global model, the detection rate otherwise."""
    if "model_flagged" not in results.columns or results["model_flagged"].isna().all():
        return pd.DataFrame()
    checked = results[results["model_flagged"].notna()]
    labels = {params: label for ctx, _ in contexts(checked)
              for params, label in [((ctx["threat_model"], ctx["threat_model_params"]), ctx["threat_model_label"])]}
    checked = checked.assign(threat_model_params=threat_model_params_text(checked))
    rounds = checked.drop_duplicates(["cell", "batch"])  # one verdict per client round
    rows = []
    for (name, params, sent), group in rounds.groupby(["threat_model", "threat_model_params", "model_sent"], sort=False):
        flagged = group["model_flagged"].astype(bool)
        rows.append({"threat model": labels[(name, params)], "model sent": sent, "rounds checked": len(group),
                     "flagged": int(flagged.sum()),
                     "rate": float(flagged.mean()), "reading": "false positives" if sent == "global" else "detection"})
    return pd.DataFrame(rows)


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
