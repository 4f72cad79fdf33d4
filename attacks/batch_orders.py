"""Which mini-batch each trial image falls into, when the client shuffles (`DataLoader(shuffle=True)`)
and nobody but the client knows the order.

A fixed-order replay puts trial image i into the same slot every epoch. With images as free variables,
what that assumes is which LABELS share a mini-batch (an image's label is tied to it), and with
momentum it also assumes which mini-batch comes first: SGD(momentum 0.9) over two steps sends
−lr·(1.9·g₁ + g₂), so the first batch weighs nearly twice the second. Plain SGD's −lr·(g₁ + g₂) is
almost symmetric in the order, which is why an attacker told the momentum but replaying the wrong
order did worse than one replaying plain SGD (docs/flower.md: 1 − cos of the momentum replay in a
wrong order 0.19-0.31, of plain SGD 0.12, of the momentum replay in the right order 1e-16). The cure is
to search the order: restart r replays its own arrangement, and the restart with the lowest matching
loss wins (Dimitrov et al., TMLR 2022, §4 draw one random arrangement per run)."""
from __future__ import annotations

import itertools

import torch


def label_arrangements(labels: torch.Tensor, batch_size: int, epochs: int, count: int, seed: int) -> list[list[torch.Tensor]]:
    """`count` arrangements of `labels` over the slots of every epoch (per restart, one label tensor per
    epoch), distinct up to the order within a mini-batch: all combinations when they are at most `count`
    (repeated in turn to fill `count`), else the stored order first and then distinct random ones."""
    generator = torch.Generator().manual_seed(seed)
    options = _epoch_arrangements(labels.tolist(), batch_size, generator)
    combos = _combinations([len(options)] * epochs, count, generator)
    return [[torch.tensor(options[i], dtype=labels.dtype) for i in combo] for combo in combos]


def visiting_orders(labels: torch.Tensor, batch_size: int, epochs: int, count: int, seed: int) -> list[list[torch.Tensor]]:
    """`count` visiting orders of ONE set of trial images (per restart, one index permutation per epoch):
    the first epoch's distinct label arrangements (images with the same label are interchangeable while
    they are free variables), then, for every later epoch, the distinct ways to split the images into
    mini-batches (now which image meets which matters). Stored order first; all combinations when they
    are at most `count`, else distinct random ones."""
    generator = torch.Generator().manual_seed(seed)
    values, n = labels.tolist(), len(labels)
    first = [_indices_for(values, arrangement) for arrangement in _epoch_arrangements(values, batch_size, generator)]
    later = [list(a) for a in _epoch_arrangements(list(range(n)), batch_size, generator)] if epochs > 1 else []
    combos = _combinations([len(first)] + [len(later)] * (epochs - 1), count, generator)
    return [[torch.tensor(first[c[0]])] + [torch.tensor(later[i]) for i in c[1:]] for c in combos]


def _combinations(sizes: list[int], count: int, generator) -> list[tuple[int, ...]]:
    """`count` index tuples (one per restart) over options of the given sizes, the all-zero (stored) one first."""
    total = 1
    for size in sizes:
        total *= size
    if total <= count:
        combos = list(itertools.product(*[range(s) for s in sizes]))
    else:
        combos = [(0,) * len(sizes)]
        for _ in range(100 * count):  # bounded: random picks until `count` distinct ones
            if len(combos) == count:
                break
            if len(set(sizes)) == 1:  # one draw for all epochs, as the order-invariant attack always drew them
                combo = tuple(torch.randint(sizes[0], (len(sizes),), generator=generator).tolist())
            else:
                combo = tuple(int(torch.randint(s, (1,), generator=generator)) for s in sizes)
            if combo not in combos:
                combos.append(combo)
    return [combos[r % len(combos)] for r in range(count)]


def _indices_for(labels: list[int], arrangement: tuple) -> list[int]:
    """An index permutation of `labels` that lays them out as `arrangement` (each index used once)."""
    free = list(range(len(labels)))
    order = []
    for value in arrangement:
        index = next(i for i in free if labels[i] == value)
        free.remove(index)
        order.append(index)
    return order


def _epoch_arrangements(labels: list[int], batch_size: int, generator, exhaustive_up_to: int = 8) -> list[tuple]:
    """One epoch's distinct label arrangements, the stored one first: all of them for up to
    `exhaustive_up_to` images (8! orders), else those among 4096 random orders."""
    stored = _canonical(labels, batch_size)
    if len(labels) <= exhaustive_up_to:
        orders = itertools.permutations(range(len(labels)))
    else:
        orders = (torch.randperm(len(labels), generator=generator).tolist() for _ in range(4096))
    found = dict.fromkeys([stored, *(_canonical([labels[i] for i in order], batch_size) for order in orders)])
    return list(found)


def _canonical(sequence: list[int], batch_size: int) -> tuple[int, ...]:
    """An arrangement with each mini-batch's labels sorted: two arrangements that differ only within a
    mini-batch train identically (the mean loss of a batch does not depend on its order)."""
    return tuple(v for start in range(0, len(sequence), batch_size) for v in sorted(sequence[start:start + batch_size]))
