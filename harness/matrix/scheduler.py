"""Claim → compute → store, for every task not stored yet, with as many in flight as the backend
has slots. Tasks another live run holds are waited for rather than computed twice; tasks stored
by anyone (this run, an earlier one, a concurrent one) count as done. Tasks that depend on
others' results (the budget check, harness.matrix.budget_check) come from `follow_up`, asked after every
finished task and once more before the run ends; they go ahead of what is still pending."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from fedleak.harness.matrix.cell_store import CellStore
from fedleak.harness.matrix.cell_worker import CellOutcome
from fedleak.harness.matrix.progress import MatrixProgress

POLL_S = 2.0


@dataclass
class ScheduleResult:
    computed: list[str] = field(default_factory=list)   # stored by this run
    reused: int = 0                                     # stored before this run, or by another run
    failed: dict[str, CellOutcome] = field(default_factory=dict)


def run_tasks(tasks: list, store: CellStore, backend, progress: MatrixProgress, follow_up=None) -> ScheduleResult:
    """`follow_up(store)`, if given, returns tasks to add now (each at most once over the run)."""
    result = ScheduleResult()
    by_key = {t.key: t for t in tasks}
    pending = [t for t in tasks if not store.done(t.key)]
    result.reused = len(tasks) - len(pending)
    claims: dict = {}

    def add_follow_ups() -> None:
        nonlocal pending
        new = [t for t in (follow_up(store) if follow_up else []) if t.key not in by_key]
        by_key.update({t.key: t for t in new})
        fresh = [t for t in new if not store.done(t.key)]
        result.reused += len(new) - len(fresh)
        progress.grow(len(new), len(new) - len(fresh))
        pending = fresh + pending

    try:
        add_follow_ups()
        while pending or claims:
            pending = _start(pending, claims, store, backend, progress, result)
            if not claims:
                time.sleep(POLL_S)  # everything left is another run's; wait for it to finish or die
                add_follow_ups()
                continue
            for outcome in backend.wait(timeout=POLL_S):
                task = by_key[outcome.key]
                try:
                    _store(task, outcome, store, result)
                finally:
                    claims.pop(outcome.key).release()
                progress.advance(_line(task, outcome))
                add_follow_ups()
    except BaseException:
        backend.close(cancel=True)
        for claim in claims.values():
            claim.release()
        raise
    backend.close()
    return result


def _start(pending, claims, store, backend, progress, result) -> list:
    """Submit claimable tasks into free slots; returns what is still pending."""
    waiting = []
    for position, task in enumerate(pending):
        if len(claims) >= backend.slots:
            return waiting + pending[position:]
        if store.done(task.key):
            result.reused += 1
            progress.advance(f"{task.describe()}: stored by another run")
            continue
        claim = store.claim(task.key)
        if claim is None:
            waiting.append(task)
            continue
        if store.done(task.key):  # finished between the check and the claim
            claim.release()
            result.reused += 1
            progress.advance(f"{task.describe()}: stored by another run")
            continue
        claims[task.key] = claim
        backend.submit(task)
    return waiting


def _store(task, outcome: CellOutcome, store: CellStore, result: ScheduleResult) -> None:
    record = {**task.record(), "wall_time_s": round(outcome.wall_time_s, 3), "device": outcome.device}
    if outcome.error is None:
        if store.commit(task.key, outcome.files, record):
            result.computed.append(task.key)
        else:
            result.reused += 1
        return
    store.record_error(task.key, {**record, "error": outcome.error, "user_error": outcome.user_error,
                                  "not_applicable": outcome.not_applicable})
    result.failed[task.key] = outcome


def _line(task, outcome: CellOutcome) -> str:
    if outcome.error is not None:
        return f"{task.describe()}: FAILED: {outcome.error}"
    scores = ", ".join(f"{k} {v:.3g}" for k, v in outcome.scores.items())
    return f"{task.describe()}: {scores} ({outcome.wall_time_s:.1f} s)"
