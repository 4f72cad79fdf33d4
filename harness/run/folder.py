"""Whose results an output folder holds: one rule for every command that writes a folder.

fedleak writes only into a new or empty folder, or one that a fedleak command wrote (its record,
`.fedleak-run.json`, says which command and run). A folder holding anything fedleak did not write
is refused whatever the flags (a user's own report.md must not be replaced or removed): the error
names those files. A folder holding ANOTHER run's results is refused with one line saying which
flag applies: `--resume` (a matrix: add this one to it, reusing the stored cells it shares) or
`--overwrite` (remove what fedleak wrote there, then run). Rerunning the same command into its
folder resumes (a matrix) or redoes (a single run) it, as always; so does the same command after a
run that failed half-way (a full disk), since the record is written before anything else.

A matrix may go on in a folder when its config (preset applied; the gate aside, which only judges
stored rows) is the stored one's, or when it contains every cell the stored one had (a matrix grown
by an image, a seed or a defense loses no row); any other run when its identity (config hash) is the
stored one's. A folder holding only stored cells (a CI cache restores just `cells/`) holds no earlier
run. Folders written before the record existed are recognised by their results.parquet/matrix.json."""
from __future__ import annotations

import dataclasses
import fnmatch
import shutil
from pathlib import Path

from fedleak.core.errors import ConfigError, FedleakError, StorageError
from fedleak.core.io import read_frame, read_json, write_json

MODES = ("same", "resume", "overwrite")
RECORD = ".fedleak-run.json"
FORMAT = "fedleak-output-folder/1"
# what each kind of folder holds, as written by fedleak (names or glob patterns)
RUN_OUTPUTS = ("results.parquet", "results.csv", "images.pt", "grid.*", "report.md", "compare")
MATRIX_OUTPUTS = ("results.parquet", "results.csv", "utility.csv", "failures.json", "matrix.json", "summary.json",
                  "junit.xml", "checks.json", "verdicts.json", "verdicts.csv", "budget_check.*", "report", "compare",
                  "cells", ".locks")
OUTPUTS = {"run": RUN_OUTPUTS, "matrix": MATRIX_OUTPUTS,
           "updates": ("updates", "globals"),  # audit-flower --save-updates (threat_models.update_files)
           "demo": ("demo-dlg", "demo-ig", "report.md"),
           "report": ("report.md", "report.html", "*.png", "*.pdf", "*.svg", "*.csv"),
           "compare": ("compare.md", "compare.html", "compare.csv")}
# left by fedleak whatever the kind: a CI cache's stored cells, atomic writes cut short, check_writable's probe
ALWAYS = (RECORD, ".*.tmp", ".write-test-*")


VIEW = "view"  # the identity of report/compare pages: views of stored results, rewritten freely, no flags


@dataclasses.dataclass(frozen=True)
class Owner:
    """What is about to write a folder: the command (named in messages), the kind of folder it
    writes (OUTPUTS), and the run's identity (its config hash; equal identities are the same run)."""
    command: str
    kind: str
    identity: str
    extra: dict = dataclasses.field(default_factory=dict)  # kept in the record (a matrix: its config and cells)


def claim_folder(out: Path, owner: Owner, mode: str = "same", differs=None, flag: str = "--output") -> None:
    """Check `out` against the rule above, then record `owner` as what it holds. `differs(record)`:
    why the stored run of the same command is another one (None: it is this one); default: identities
    differ. `mode`: "same" refuses another run's folder, "resume" (matrices) goes on in it,
    "overwrite" removes what fedleak wrote there first."""
    out = Path(out)
    if mode not in MODES:
        raise ConfigError(f"existing output mode: expected one of {', '.join(MODES)}, got {mode!r}")
    resumable = owner.kind == "matrix"
    if mode == "resume" and not resumable:
        raise ConfigError(f"--resume: only a matrix goes on in another run's folder; `fedleak {owner.command}` takes "
                          "--overwrite")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    # a record alone (a run refused or stopped before it wrote anything) holds no earlier run
    record = _record(out) if any(not _always(e) for e in entries) else None
    stored_kind = record["kind"] if record else None
    if record is None and entries and set(entries) <= {"cells", ".locks", *[e for e in entries if _always(e)]}:
        stored_kind = "matrix" if owner.kind == "matrix" else None  # a CI cache: stored cells, no earlier run
    foreign = [e for e in entries if not _always(e) and not _matches(e, OUTPUTS.get(stored_kind, ()))]
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise ConfigError(f"{flag} {out} holds files fedleak did not write ({shown}); fedleak writes only into a new "
                          f"or empty folder or one of its own runs, and --overwrite would not remove them: give "
                          f"another {flag}")
    if record is not None:
        other = _describe(record)
        # matrices of evaluate-defense and of `fedleak matrix` go on in each other's folders, cell by cell
        command_differs = record["command"] not in ("legacy", owner.command) and owner.kind != "matrix"
        if command_differs or record["kind"] != owner.kind:
            reason = f"holds the results of {other}, not of `fedleak {owner.command}`"
        else:
            reason = differs(record) if differs else (
                None if record.get("identity") == owner.identity else
                f"holds the results of a different run (config {record.get('identity') or 'not recorded'}, this one "
                f"{owner.identity})")
        resumes = resumable and record["kind"] == "matrix"
        if reason and (mode == "same" or (mode == "resume" and not resumes)):
            how = ("pass --resume to add this one to it (its stored cells are kept and reused), --overwrite to "
                   "replace it (its stored cells are removed), or" if resumes else
                   "give" if owner.identity == VIEW else "pass --overwrite to replace them, or")
            raise ConfigError(f"{flag} {out} {reason}; {how} another {flag}")
        if mode == "overwrite":
            _remove(out, OUTPUTS[record["kind"]])
    write_json(out / RECORD, {"format": FORMAT, "command": owner.command, "kind": owner.kind,
                              "identity": owner.identity, **owner.extra})


def check_run_folder(out: Path, config_hash: str, overwrite: bool = False, command: str = "attack") -> None:
    """claim_folder for a single run (attack, demo, audit-flower, audit-updates)."""
    claim_folder(out, Owner(command, "run", config_hash), "overwrite" if overwrite else "same")


def _always(name: str) -> bool:
    return _matches(name, ALWAYS)


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _describe(record: dict) -> str:
    if record.get("command") in (None, "legacy"):
        return {"matrix": "a matrix", "updates": "a run's saved client updates"}.get(record["kind"], "a single run")
    return f"`fedleak {record['command']}`" + (" (a matrix)" if record["kind"] == "matrix" and
                                                record["command"] != "matrix" else "")


def _record(out: Path) -> dict | None:
    """What the folder's record says; for a folder written before records, what its results say."""
    path = out / RECORD
    if path.is_file():
        try:
            record = read_json(path, "output folder record")
        except FedleakError:
            record = None
        if isinstance(record, dict) and record.get("kind") in OUTPUTS and isinstance(record.get("command"), str):
            return record
        raise ConfigError(f"{path} is not a fedleak output record (edited or damaged): move or delete the folder, "
                          "or give another --output")
    if (out / "matrix.json").is_file():
        stored = _read_record(out / "matrix.json")
        stored = stored if isinstance(stored, dict) else {}
        return {"command": "legacy", "kind": "matrix", "matrix": stored.get("matrix"), "cells": stored.get("cells")}
    if (out / "updates").is_dir() and any((out / "updates").glob("*.npz")):  # a recording tap's save_to=
        return {"command": "legacy", "kind": "updates", "identity": None}
    if (out / "results.parquet").is_file():
        try:
            hashes = set(read_frame(out / "results.parquet", "results")["config_hash"])
        except (FedleakError, KeyError):
            return None  # not results fedleak wrote: the folder's files are the user's
        return {"command": "legacy", "kind": "run", "identity": ", ".join(sorted(map(str, hashes)))}
    return None


def _read_record(path: Path):
    try:
        return read_json(path, "matrix record")
    except FedleakError:
        return None


def _remove(out: Path, patterns: tuple[str, ...]) -> None:
    """Only the files fedleak itself writes: whatever else the folder holds stays."""
    for path in sorted(out.iterdir()):
        if not _matches(path.name, patterns) or path.name == RECORD:
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as e:
            raise StorageError(f"--overwrite: cannot remove {path}: {e.strerror or e}") from None
