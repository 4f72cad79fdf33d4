"""The leakage ladder in the matrix (issue 21; the audits' ladder is harness.flower.ladder): with
`ladder = true`, every FedAvg context that trains in several steps
gets rungs 1-3 as extra cells: the same attacks, undefended, on the same images, with the context's
training cut to one full-batch step (rungs 1 and 2) or to one epoch (rung 3); the context's own
undefended cells are the last rung. Their rows go to ladder.{csv,parquet,md} of the matrix folder, not
to its results: a rung is a different setting, so it is no positive control of the context's verdicts
(that stays the context's own undefended run); it shows where rebuilding stops."""
from __future__ import annotations

from dataclasses import replace

from fedleak.harness.matrix.cells import Cell, _victims, expansion
from fedleak.harness.matrix.config import DefenseEntry, ImagesConfig


def matrix_ladder_cells(matrix, main_cells) -> list:
    """The ladder's cells of `matrix` (harness.matrix.config.MatrixConfig with `ladder`): per FedAvg context
    whose client takes more than one step, rungs 1-3 undefended, every attack entry that runs there; a rung
    that is a cell of the matrix itself is left out."""
    if not matrix.ladder:
        return []
    known = {c.key for c in main_cells}
    cells: dict[str, Cell] = {}
    b = matrix.images.batch_size
    for threat in matrix.threat_models:
        if threat.name != "fedavg":
            continue
        training = threat.local_training()
        if training.steps(b) <= 1:
            continue  # one step: the context is rung 2 itself
        one_step = replace(threat, epochs=1, local_batch_size=None, shuffle=False)
        rungs = [(1, "1 image, 1 step", one_step, 1), (2, f"{b} images, 1 step", one_step, b)]
        if threat.epochs > 1:
            epoch = replace(threat, epochs=1)
            rungs.append((3, f"{b} images, {epoch.local_training().steps(b)} steps (1 epoch)", epoch, b))
        for rung, label, entry, batch_size in rungs:
            rung_matrix = replace(matrix, threat_models=[entry], defenses=[DefenseEntry("none")], ladder=False,
                                  images=ImagesConfig(list(matrix.images.indices) or _preset_images(matrix), batch_size))
            for cell in expansion(rung_matrix)[0]:
                if cell.key not in known:
                    cells.setdefault(cell.key, replace(cell, labels={**cell.labels, "ladder_rung": rung,
                                                                     "ladder_label": label}))
    return list(cells.values())


def _preset_images(matrix) -> list[int]:
    """The images the matrix's own cells hold (its preset's count in whole batches), so every rung has them all."""
    return sorted({i for a in matrix.attacks for i in _victims(matrix, matrix.budget(a, matrix.preset).images)})
