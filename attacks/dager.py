"""DAGER: exact recovery of a batch of token sequences from a transformer's gradient (Petrov et al.,
"DAGER: Exact Gradient Inversion for Large Language Models", NeurIPS 2024, Sec. 4-5).

The gradient of a linear layer y = x W is X^T dY: its column space is spanned by the layer's inputs
x_i (one per token of the batch), so while B x L stays below the input width d the gradient is low-rank
and a vector is one of the inputs only if it lies in that span (Sec. 4, Lemma 5.1). In GPT-2 the
input of the first attention projection `h.0.attn.c_attn` at position p is LN_1(wte[v] + wpe[p]),
a function of one token and its position, so every (token, position) pair of the vocabulary can be
tested: those whose distance to the span is ~0 are the batch's tokens at that position (the span
test, `LayerSpan`). A token repeated at two positions puts the difference of their position
embeddings into the span, so the batch's tokens of one position may pass at another: the sets are
supersets, and assembly sorts them out. The second layer's input at position p depends on the tokens 0..p of its own
sequence only (causal attention), so sequences are assembled left to right: a prefix extended by a
token of the next position's set is kept only if its second-layer input lies in the span of
`h.1.attn.c_attn`'s gradient (Sec. 5.2, decoder case), a beam of at most `beam` prefixes.

Two details of a causal-LM loss the paper's classification setting does not have: the last position
of every sequence has no loss term, so its input gets no gradient and the span test cannot see the
last token. It is the label of position L-2 instead: with tied embeddings (GPT-2) the embedding
gradient row of that token holds -hf_{L-2}/N (hf: the final LayerNorm's output), so once the first
L-1 tokens are known the attacker subtracts the gradient the known part explains and reads the last
token off the residual rows (`last_token="gradient"`); where the embedding gradient is not shared
(LoRA) it takes the model's own most likely next token (`"model"`) and the record says so.

Without the embedding gradient (LoRA) the last label still shapes every shared gradient, linearly: its
term −logit[v]/N = −hf_{L-2}·wte[v]/N back-propagates as M_b wte[v]/N, M_b the Jacobian of sequence b's
hf_{L-2} with respect to the shared parameters (d backward passes), and the batch gradient is a sum over
sequences, so each sequence's label is the token whose M_b wte[v] best explains what the known part
leaves (`last_token="fit"`, a few sweeps of coordinate descent; `"model"`: the LM's own guess).

LoRA (`h.l.attn.c_attn.lora_A/B`, Sec. 5.3): grad A = Σ a_i x_i^T spans the same inputs (zero in
round 0, where B = 0), grad B = Σ dy_i (A x_i)^T spans their projections A x_i in R^r: the test
runs on A z, so the rank limit is the adapter rank r instead of d.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fedleak.attacks.text_base import TEXT_ATTACKS, TextAttack, TextReconstruction, encoder_of, observed, transformer_of
from fedleak.core.components import GRADIENT, UPDATE
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_choice, check_integer, check_number
from fedleak.models.text import is_encoder
from fedleak.threat_models.observation import Observation


@dataclass(frozen=True)
class DagerOptions:
    # singular values below rank_tol x the largest are noise: float32 gradients of the shipped LM have a
    # floor near 2e-8 to 4e-8, true directions down to ~6e-8 in the second layer (docs/text.md)
    rank_tol: float = 1e-7
    tau_first: float = 1e-3     # relative distance to the first layer's span below which a token is in the batch
    tau_second: float = 1e-3    # the same for a prefix at the second layer
    beam: int = 64              # prefixes kept per position (DAGER's search is exhaustive over the span-passing set)
    # where the chosen sequences do not explain the gradients (a true prefix fell out of the beam), the
    # assembly runs once more with this beam (0: never)
    retry_beam: int = 256
    complete_tol: float = 1e-9  # relative squared residual below which the chosen sequences explain both layers' gradients
    max_per_position: int = 256  # candidate tokens kept per position (the nearest): bounds work once the span is full
    last_token: str = "auto"    # gradient | fit | model | auto (gradient where the embedding gradient is shared, else fit)
    # tau_first and tau_second on the BERT classifier: its untrained gradients are weak beside float32 rounding,
    # true inputs sit up to 7e-3 from the span, inputs of a wrong token or sequence >= 0.28 (B <= 4, docs/text.md)
    tau_encoder: float = 3e-2
    # and its rank tolerance: at 1e-7 the shipped classifier's span lost true directions (rank 60 of B·L = 64 at
    # B = 4; true tokens up to 0.22 from it), at 1e-9 it keeps them all (rank 64, true tokens within 0.07)
    rank_tol_encoder: float = 1e-9

    def __post_init__(self):
        for key in ("rank_tol", "tau_first", "tau_second", "complete_tol", "tau_encoder", "rank_tol_encoder"):
            check_number(key, getattr(self, key), low=0, low_open=True)
        for key in ("beam", "max_per_position"):
            check_integer(key, getattr(self, key), low=1)
        check_integer("retry_beam", self.retry_beam, low=0)
        check_choice("last_token", self.last_token, ("auto", "gradient", "fit", "model"))


def input_basis(inputs_by_columns: torch.Tensor, rank_tol: float, max_rank: int) -> torch.Tensor:
    """Orthonormal basis (float64, in_dim x r) of the column space of a gradient laid out as
    (in_dim, anything): the span of the layer inputs that produced it."""
    u, s, _ = torch.linalg.svd(inputs_by_columns.double(), full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return u[:, :0]
    r = int((s > rank_tol * s[0]).sum())
    return u[:, :min(r, max_rank)]


def span_distance(basis: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||z − P z|| / ||z|| for each row of z (..., in_dim), P the projection onto span(basis)."""
    z = z.double()
    residual = z - (z @ basis) @ basis.T
    return residual.norm(dim=-1) / z.norm(dim=-1).clamp_min(1e-30)


class LayerSpan:
    """The span test of one layer's attention projection: full (c_attn.weight) or LoRA (A and B)."""

    def __init__(self, observation: Observation, layer: int, rank_tol: float, max_rank: int, model=None):
        self.tests: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (basis, map applied to z first)
        self.gradients: list[torch.Tensor] = []  # each test's gradient (in_dim x anything), unit Frobenius norm
        encoder = model is not None and is_encoder(model)
        # BERT: query and value gradients of a layer below the last are Σ_i dy_i x_i^T over every position. The
        # key's is not: softmax's scores sum to one, so Σ_j dk_j = 0 per sequence and the key gradient spans
        # x_j minus their mean only (measured: rank B (L − 1), true tokens 0.6 from it). The last layer feeds the
        # pooler through position 0 alone: its query sees x_0, its keys and values one mix Σ_j a_0j x_j per
        # sequence, so it has no per-token span at all. nn.Linear stores (out, in), GPT-2's Conv1D (in, out).
        if encoder and layer >= encoder_of(model).config.num_hidden_layers - 1:
            raise ConfigError(f"attack 'dager': layer {layer} is the classifier's last: its gradient mixes the tokens")
        prefixes = [f"encoder.layer.{layer}.attention.self.{n}" for n in ("query", "value")] if encoder \
            else [f"h.{layer}.attn.c_attn"]
        laid_out = []
        for prefix in prefixes:
            full = observed(observation, f"{prefix}.weight")
            grad_a = observed(observation, f"{prefix}.lora_A.default.weight")
            grad_b = observed(observation, f"{prefix}.lora_B.default.weight")
            if full is not None and full.dim() == 2 and "lora" not in _name_of(observation, f"{prefix}.weight"):
                laid_out.append((full.T if encoder else full, None))  # (in, out) = X^T dY
            if grad_a is not None and grad_a.abs().max() > 0:
                laid_out.append((grad_a.T, None))  # (r, in) = Σ a_i x_i^T
            if grad_b is not None:
                a = next(v for k, v in observation.global_params.items() if k.endswith(f"{prefix}.lora_A.default.weight"))
                laid_out.append((grad_b.T, a.double()))  # (out, r) = Σ dy_i (A x_i)^T
        for grad, a in laid_out:
            self.tests.append((input_basis(grad, rank_tol, max_rank), a))
            grad = grad.double()
            self.gradients.append(grad / grad.norm().clamp_min(1e-300))
        if not self.tests:
            raise ConfigError(f"attack 'dager': the update holds no gradient of layer {layer}'s attention projection "
                              f"('{prefixes[0]}.weight' or its LoRA adapters)")
        self.rank = max(b.shape[1] for b, _ in self.tests)
        # a span of (nearly) the whole space passes every token: LayerNorm's outputs can fill d − 1
        # dimensions at most when its bias is zero, so d − 1 counts as full
        self.full = all(b.shape[1] >= b.shape[0] - 1 for b, _ in self.tests)

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """The largest distance over the layer's tests (a true input passes all of them)."""
        out = None
        for basis, a in self.tests:
            zz = z.double() if a is None else z.double() @ a.T
            d = span_distance(basis, zz)
            out = d if out is None else torch.maximum(out, d)
        return out

    def unexplained(self, inputs: torch.Tensor) -> float:
        """How much of the layer's gradient the span of `inputs` (n, in_dim) leaves out: the squared Frobenius
        norm of each (unit-norm) gradient's part outside that span, summed over the tests. The inputs of the
        whole batch explain all of it (~1e-15 in float32); a batch with one sequence missing or wrong leaves
        that sequence's directions out (>= 1e-5 on the shipped LM, docs/text.md)."""
        out = 0.0
        for (_, a), grad in zip(self.tests, self.gradients):
            zz = inputs.double() if a is None else inputs.double() @ a.T
            q, _ = torch.linalg.qr(zz.T)
            out += float((grad - q @ (q.T @ grad)).norm() ** 2)
        return out


def room(*spans: LayerSpan) -> int:
    """How many inputs the spans' tests can hold before they fill their space: the smallest input dimension
    less one (LayerNorm's outputs fill d − 1 at most). At B·L inputs or more any batch explains the gradients."""
    return min(b.shape[0] for span in spans for b, _ in span.tests) - 1


def _name_of(observation: Observation, suffix: str) -> str:
    return next((n for n in observation.param_names if n.endswith(suffix)), "")


@torch.no_grad()
def first_layer_inputs(model, positions: int) -> torch.Tensor:
    """(positions, V, d): the input of block 0's attention projections for every (position, token): GPT-2's
    LN_1(wte[v] + wpe[p]); BERT's embedding LayerNorm(word[v] + position[p] + token_type[0]) (post-LN: the
    embeddings' output is the first layer's input; one token type, as the client's batches have)."""
    if is_encoder(model):
        e = encoder_of(model).embeddings
        emb = (e.word_embeddings.weight[None, :, :] + e.position_embeddings.weight[:positions, None, :]
               + e.token_type_embeddings.weight[0])
        return e.LayerNorm(emb)
    t = transformer_of(model)
    emb = t.wte.weight[None, :, :] + t.wpe.weight[:positions, None, :]
    return t.h[0].ln_1(emb)


@torch.no_grad()
def second_layer_inputs(model, ids: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """(n, L, d): the input of block 1's attention projections (GPT-2: block 1's LN_1 of block 0's output;
    BERT: block 0's output); `chunk` sequences at a time (a wide beam extends ~20k prefixes a position: all
    at once held 4.8 GB)."""
    out = []
    if is_encoder(model):
        e = encoder_of(model)
        for part in ids.split(chunk):
            out.append(e(input_ids=part, output_hidden_states=True).hidden_states[1])
        return torch.cat(out)
    t = transformer_of(model)
    for part in ids.split(chunk):
        hidden = t(input_ids=part, output_hidden_states=True).hidden_states[1]
        out.append(t.h[1].ln_1(hidden))
    return torch.cat(out)


@TEXT_ATTACKS.register
class Dager(TextAttack):
    name = "dager"
    options_class = DagerOptions
    applies_to = (GRADIENT, UPDATE)

    adaptive = True

    def reconstruct(self, observation, model, seq_len, seed=0, defense=None):
        """`defense` (adaptive mode, a defense other than none): the span tests run on the server's decoding of
        what was sent with a perturbation in mind: the span is the leading B·(L−1) singular directions (the
        batch's known size) whatever their spectrum, the `2 B` nearest tokens per position are candidates
        (no threshold), and the beam keeps the nearest prefixes without a threshold; the B chosen are still
        those that explain most of both layers' gradients."""
        self.check_observation(observation)
        o = self.options
        if defense is not None and defense.name != "none":
            robust = {**dataclasses.asdict(o), "rank_tol": 1e-300, "tau_first": 1e300, "tau_second": 1e300,
                      "max_per_position": min(o.max_per_position, 2 * observation.num_examples), "retry_beam": 0}
            rec = type(self).from_options(robust, "attack.options").reconstruct(observation, model, seq_len, seed)
            rec.extras["defense_replay"] = "decoded update, noise-robust span test"
            return rec
        B, L = observation.num_examples, seq_len
        encoder = is_encoder(model)
        # positions whose input gets a gradient: the LM's last has no loss term; the classifier's pooler
        # reads position 0 of the last layer, which attends to every position
        seen = L if encoder else L - 1
        max_rank = B * seen
        if encoder:  # max / min: the noise-robust replay's thresholds (1e300, 1e-300) stay
            o = dataclasses.replace(o, tau_first=max(o.tau_first, o.tau_encoder), tau_second=max(o.tau_second, o.tau_encoder),
                                    rank_tol=min(o.rank_tol, o.rank_tol_encoder))
        first = LayerSpan(observation, 0, o.rank_tol, max_rank, model)
        # token sets per position (Sec. 5.1): distance of every (position, token) to the first layer's span
        dist = first.distance(first_layer_inputs(model, seen))            # (seen, V)
        sets = []
        for p in range(seen):
            order = torch.argsort(dist[p])
            passing = order[dist[p][order] < o.tau_first][:o.max_per_position]
            sets.append(passing if passing.numel() else order[:1])
        extras = {"first_layer_rank": first.rank, "tokens_per_position": [int(s.numel()) for s in sets],
                  "min_distance_per_position": [float(dist[p].min()) for p in range(seen)]}
        extras["span_full"] = first.full
        try:
            second = LayerSpan(observation, 1, o.rank_tol, max_rank, model)
        except ConfigError:
            second = None
        # the encoder's searches tell sequences apart only while B·L inputs cannot span the space; beyond it
        # they only spend time (B = 8 at L = 16 on the shipped classifier: minutes a batch, nothing found)
        saturated = encoder and B * seen >= room(first)
        if second is None or first.full or saturated:
            # a full first-layer span says nothing, and without a second layer there is nothing to assemble
            # with: the nearest token at every position (right for B = 1 unless a token repeats)
            prefixes = torch.stack([s[:1] for s in sets], dim=1).expand(B, seen)
            extras["assembly"] = "nearest"
        elif encoder:
            prefixes, unexplained = self._assemble_encoder(model, sets, first, second, B, seed, o.tau_second)
            if unexplained > o.complete_tol and B > 1:
                prefixes, unexplained = self._refine_batch(model, sets, first, second, prefixes, unexplained, seed,
                                                           o.complete_tol)
                extras["batch_search"] = True
            extras["assembly"] = "second-layer span, coordinate search"
            extras["second_layer_rank"] = second.rank
            extras["unexplained"] = unexplained
        else:
            prefixes, unexplained = self._assemble(model, sets, first, second, B, o.beam)
            if unexplained > o.complete_tol and o.retry_beam > o.beam:
                prefixes, unexplained = self._assemble(model, sets, first, second, B, o.retry_beam)
                extras["beam_retried"] = True
            extras["assembly"] = "second-layer span"
            extras["second_layer_rank"] = second.rank
            extras["unexplained"] = unexplained
        if encoder:
            extras["last_token"] = "span"  # every position is in the span: nothing left to read elsewhere
            return TextReconstruction(prefixes, extras)
        last, how = self._last_tokens(observation, model, prefixes)
        extras["last_token"] = how
        return TextReconstruction(torch.cat([prefixes, last[:, None]], dim=1), extras)

    def _assemble(self, model, sets, first: LayerSpan, second: LayerSpan, B: int, beam: int) -> tuple[torch.Tensor, float]:
        """B sequences of len(sets) tokens, and how much of the two layers' gradients they leave unexplained.

        Left to right, a prefix extended by a token of the next position's set is kept while the new
        position's second-layer input passes the span test (tau_second); the beam keeps the `beam` whose
        new position lies nearest the span. Ranking by the path's worst distance instead loses true prefixes
        near the rank limit: a true sequence's input at one position can sit at 4.6e-4 (its direction is weak
        in the gradient), behind dozens of false extensions of other true prefixes (B = 8, L = 16).
        Of the complete candidates, B are chosen (`_choose`) by whether their inputs explain both layers'
        gradients, which a batch with a false or missing sequence does not."""
        o = self.options
        # the choice can tell a batch only while B·(L−1) inputs cannot span the whole space (d − 1 for
        # LayerNorm outputs); beyond it any B candidates explain the gradients and the beam ranks by the path's
        # worst distance, as the test's thresholds do (measured at B = 8, L = 17: 4 of 16 exact with the step
        # ranking and swap search, 12 of 16 without; docs/text.md)
        decisive = B * len(sets) < room(first, second)
        prefixes = sets[0][:, None]
        step = second.distance(second_layer_inputs(model, prefixes)[:, -1])
        worst = step
        for p in range(len(sets)):
            if p > 0:
                n, k = prefixes.shape[0], sets[p].numel()
                prefixes = torch.cat([prefixes.repeat_interleave(k, 0), sets[p].repeat(n)[:, None]], dim=1)
                step = second.distance(second_layer_inputs(model, prefixes)[:, -1])
                worst = torch.maximum(worst.repeat_interleave(k), step)
            order = torch.argsort(step if decisive else worst)
            keep = order[step[order] < o.tau_second]
            if keep.numel() < 1:
                keep = torch.argsort(worst)[:B]  # nothing passes (noise, a full span): the attack goes on with its best guesses
            keep = keep[:beam]
            prefixes, step, worst = prefixes[keep], step[keep], worst[keep]
        prefixes = prefixes[torch.argsort(worst)]
        if prefixes.shape[0] < B:
            # fewer distinct sequences than B: the batch repeats one (or the beam lost some); fill with the best
            prefixes = torch.cat([prefixes, prefixes[:1].expand(B - prefixes.shape[0], -1)])
        if not decisive:
            return prefixes[:B], 0.0  # 0: nothing to retry for, the choice cannot tell
        return self._choose(model, prefixes, first, second, B)

    def _assemble_encoder(self, model, sets, first: LayerSpan, second: LayerSpan, B: int, seed: int,
                          tau: float) -> tuple[torch.Tensor, float]:
        """B sequences for a bidirectional encoder, whose second-layer input at a position depends on the whole
        sequence, so no prefix can be tested on its own (the decoder's left-to-right beam does not apply).
        A true sequence is a choice of one token from each position's set whose every second-layer input lies
        in the second layer's span; a wrong token moves its own position's input off it, and the others' as far
        as attention mixes the sequence (little at BERT's random initialisation: a sequence that is half one
        true sequence and half another sat 0.01-0.02 from the span, the true ones 0.007; docs/text.md). So from a
        start (one token of each set) a coordinate search replaces one position at a time by the token of its
        set that brings the sequence's inputs nearest the span (summed over positions), until nothing changes;
        starts cycle through the sets (start i takes the i-th nearest token at every position), then random
        choices, until B distinct sequences pass (tau_second) or the starts run out (4 B + max set size).
        Of those found, B are chosen by what they explain of both layers' gradients (`_choose`). A local search,
        not an exhaustive one over the product of the sets: it can stop at a mixture, which the final check
        (`unexplained`) then shows."""
        L = len(sets)
        g = torch.Generator().manual_seed(seed)

        def score(candidates):
            return second.distance(second_layer_inputs(model, candidates)).sum(-1)   # (K, L) -> (K,)

        def search(seq):
            best = float(score(seq[None])[0])
            for _ in range(4 * L):
                changed = False
                for p in range(L):
                    if sets[p].numel() < 2:
                        continue
                    trial = seq[None].repeat(sets[p].numel(), 1)
                    trial[:, p] = sets[p]
                    values = score(trial)
                    i = int(values.argmin())
                    if float(values[i]) < best - 1e-12 and int(trial[i, p]) != int(seq[p]):
                        seq, best, changed = trial[i].clone(), float(values[i]), True
                if not changed:
                    break
            return seq

        widest = max(int(s.numel()) for s in sets)
        found: dict[tuple, torch.Tensor] = {}
        passing = 0
        for start in range(4 * B + widest):
            if start < widest:
                seq = torch.stack([s[start % s.numel()] for s in sets])
            else:
                seq = torch.stack([s[torch.randint(s.numel(), (1,), generator=g)[0]] for s in sets])
            seq = search(seq)
            found.setdefault(tuple(seq.tolist()), seq)
            candidates = torch.stack(list(found.values()))
            worst = second.distance(second_layer_inputs(model, candidates)).max(-1).values
            passing = int((worst < tau).sum())
            if passing >= B and start + 1 >= widest:
                break
        candidates = candidates[torch.argsort(worst)]
        if candidates.shape[0] < B:
            candidates = torch.cat([candidates, candidates[:1].expand(B - candidates.shape[0], -1)])
        decisive = B * L < room(first, second)
        if not decisive or candidates.shape[0] == B:
            return candidates[:B], 0.0 if not decisive else self._unexplained(model, candidates[:B], first, second)
        return self._choose(model, candidates, first, second, B)

    @staticmethod
    def _refine_batch(model, sets, first: LayerSpan, second: LayerSpan, batch: torch.Tensor, best: float, seed: int,
                      tol: float, starts: int | None = None) -> tuple[torch.Tensor, float]:
        """A coordinate search over whole batches where the per-sequence search stopped at mixtures. One
        sequence's second-layer distance does not tell a true sequence from a mixture of two on the encoder
        (measured on the shipped classifier, B = 2: the true sequences sat 0.16 from the span at their worst
        position, a half-and-half mixture 0.14), but what the batch leaves unexplained of both layers'
        gradients does (the true batch 6e-14, the mixture 0.41). Moves: swap two sequences' tokens at one
        position, swap their suffixes from one position (a mixture is undone in one step), replace a token
        by another of its position's set; a move is kept when it lowers the unexplained part. From the
        batch found so far, then from `starts` random batches drawn from the sets (default 24 / B: at B = 2,
        4 starts rebuilt 2 of 8 sequences of the shipped text exactly and 12 rebuilt 7; a start costs ~B² more
        as B grows); the best batch wins."""
        B, L = batch.shape
        starts = max(1, 24 // B) if starts is None else starts
        x1 = first_layer_inputs(model, L)                                    # (L, V, d), once for every trial

        def unexplained(b):
            return Dager._unexplained(model, b, first, second, x1)

        def moves(b, p):
            for i in range(B):
                for j in range(i + 1, B):
                    if b[i, p] != b[j, p]:
                        t = b.clone()
                        t[i, p], t[j, p] = b[j, p], b[i, p]
                        yield t
                    if p > 0:
                        t = b.clone()
                        t[i, p:], t[j, p:] = b[j, p:], b[i, p:]
                        yield t
                for token in sets[p].tolist():
                    if token != int(b[i, p]):
                        t = b.clone()
                        t[i, p] = token
                        yield t

        def search(b, value):
            for _ in range(4 * L):
                changed = False
                for p in range(L):
                    for trial in moves(b, p):
                        v = unexplained(trial)
                        if v < value:
                            b, value, changed = trial, v, True
                if not changed or value < tol:
                    break
            return b, value

        g = torch.Generator().manual_seed(seed)
        winner, low = search(batch.clone(), best)  # `best`: what the batch found so far leaves unexplained
        for _ in range(starts):
            if low < tol:
                break
            start = torch.stack([torch.stack([s[torch.randint(s.numel(), (1,), generator=g)[0]] for s in sets])
                                 for _ in range(B)])
            found, value = search(start, unexplained(start))
            if value < low:
                winner, low = found, value
        return winner, low

    @staticmethod
    def _unexplained(model, chosen: torch.Tensor, first: LayerSpan, second: LayerSpan,
                     x1: torch.Tensor | None = None) -> float:
        """What the batch `chosen` leaves unexplained of both layers' gradients; `x1`: first_layer_inputs of the
        batch's length, where a caller scores many batches."""
        positions = chosen.shape[1]
        x1 = (first_layer_inputs(model, positions) if x1 is None else x1)[torch.arange(positions)[None, :], chosen]
        x2 = second_layer_inputs(model, chosen)
        return first.unexplained(x1.reshape(-1, x1.shape[-1])) + second.unexplained(x2.reshape(-1, x2.shape[-1]))

    @staticmethod
    def _choose(model, candidates: torch.Tensor, first: LayerSpan, second: LayerSpan, B: int) -> tuple[torch.Tensor, float]:
        """The B candidates whose inputs leave the least of both layers' gradients unexplained: from the B
        with the smallest worst distance, swap one chosen for one left out while that lowers it (DAGER's
        span test run backwards: a batch's sequences must account for every direction of the gradient)."""
        positions = candidates.shape[1]
        x1 = first_layer_inputs(model, positions)                           # (positions, V, d)
        first_in = x1[torch.arange(positions)[None, :], candidates]           # (K, positions, d)
        second_in = second_layer_inputs(model, candidates)                   # (K, positions, d)

        def unexplained(chosen):
            idx = torch.tensor(chosen)
            return (first.unexplained(first_in[idx].reshape(-1, first_in.shape[-1]))
                    + second.unexplained(second_in[idx].reshape(-1, second_in.shape[-1])))

        chosen = list(range(B))
        best = unexplained(chosen)
        improved = True
        while improved:
            improved = False
            for i in range(B):
                for j in range(candidates.shape[0]):
                    if j in chosen:
                        continue
                    trial = chosen[:i] + [j] + chosen[i + 1:]
                    value = unexplained(trial)
                    if value < best:
                        best, chosen, improved = value, trial, True
        return candidates[chosen], best

    def _last_tokens(self, observation, model, prefixes):
        how = self.options.last_token
        wte_grad = observed(observation, "wte.weight")
        if how == "auto":
            how = ("gradient" if wte_grad is not None else "fit") if observation.kind == GRADIENT else "model"
        if how == "gradient" and wte_grad is None:
            raise ConfigError("attack 'dager': last_token = 'gradient' needs the shared token-embedding gradient (wte.weight)")
        if how == "model":
            with torch.no_grad():
                return model(input_ids=prefixes).logits[:, -1].argmax(-1), how
        if how == "fit":
            return last_tokens_by_linear_fit(model, prefixes, observation), how
        return last_tokens_from_embedding_gradient(model, prefixes, wte_grad), how


def last_tokens_from_embedding_gradient(model, prefixes: torch.Tensor, wte_grad: torch.Tensor, refine: int = 8) -> torch.Tensor:
    """The label of position L-2 of each sequence (its last token) from the tied embedding gradient.

    First guess: residual = observed − ∇(the loss with that label's term −logit[v] left out) is
    −Σ_b e_{v_b} hf_b^T / N on the rows of tokens that are not inputs of the batch, so each sequence
    takes the row most aligned with −hf_b. A token that is also an input has the input-embedding
    gradient in its row, which depends on the label through the backward pass: each sequence's
    `refine` best rows and every input token are then tried with the exact per-sequence gradient (the
    batch gradient is a sum over sequences), keeping the one that leaves the smallest residual."""
    t = transformer_of(model)
    B, seen = prefixes.shape
    n = B * seen
    wte = t.wte.weight
    with torch.enable_grad():
        out = model(input_ids=prefixes, output_hidden_states=True)
        logits, hf = out.logits, out.hidden_states[-1]
        known = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), prefixes[:, 1:].reshape(-1),
                                                  reduction="sum") if seen > 1 else logits.sum() * 0
        known = (known + torch.logsumexp(logits[:, -1], dim=-1).sum()) / n
        (g_known,) = torch.autograd.grad(known, wte)
    residual = (wte_grad - g_known).double()
    target = -hf[:, -1].detach().double()
    cos = (target @ residual.T) / (target.norm(dim=-1, keepdim=True) * residual.norm(dim=-1)[None, :]).clamp_min(1e-30)
    guess = cos.argmax(-1)
    if refine < 1:
        return guess

    def sequence_gradient(seq):
        with torch.enable_grad():
            logits = model(input_ids=seq[None]).logits[0]
            loss = torch.nn.functional.cross_entropy(logits[:-1], seq[1:], reduction="sum") / n
            return torch.autograd.grad(loss, wte)[0].double()

    inputs = torch.unique(prefixes)
    full = torch.cat([prefixes, guess[:, None]], dim=1)
    grads = [sequence_gradient(full[b]) for b in range(B)]
    total = sum(grads)
    observed_grad = wte_grad.double()
    for b in range(B):
        rest = total - grads[b]
        candidates = torch.unique(torch.cat([cos[b].topk(refine).indices, inputs]))
        best, best_err, best_grad = guess[b], None, grads[b]
        for v in candidates.tolist():
            seq = full[b].clone()
            seq[-1] = v
            g = sequence_gradient(seq)
            err = float((observed_grad - rest - g).norm())
            if best_err is None or err < best_err:
                best, best_err, best_grad = torch.tensor(v), err, g
        guess[b], full[b, -1] = best, best
        total, grads[b] = rest + best_grad, best_grad
    return guess


def last_tokens_by_linear_fit(model, prefixes: torch.Tensor, observation: Observation, sweeps: int = 2) -> torch.Tensor:
    """The last token of each sequence from any shared FedSGD gradient (LoRA's adapters included): the
    observed gradient is Σ_b (k_b − M_b wte[v_b] / N), k_b the gradient of sequence b's loss with its last
    label's −logit term left out and M_b = ∂hf_{b,L-2}/∂θ^T (P x d); each v_b minimises the residual's
    norm, for all v at once, through d-sized products only (a_b = M_b^T base, C_bc = M_b^T M_c). The tied
    embedding is left out of the fit: its gradient depends on v through the row v as well."""
    t = transformer_of(model)
    named = dict(model.named_parameters())
    keep = [i for i, name in enumerate(observation.param_names) if not name.endswith(("wte.weight", "lm_head.weight"))]
    if not keep:
        raise ConfigError("attack 'dager': last_token = 'fit' needs a shared gradient other than the token embedding")
    params = [named[observation.param_names[i]] for i in keep]
    observed_grad = torch.cat([observation.update[i].reshape(-1).double() for i in keep])
    B, seen = prefixes.shape
    n = B * seen

    def flat(grads):
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])

    known, jac = [], []
    for b in range(B):
        with torch.enable_grad():
            out = model(input_ids=prefixes[b:b + 1], output_hidden_states=True)
            logits, hf = out.logits[0], out.hidden_states[-1][0, -1]
            loss = torch.logsumexp(logits[-1], dim=-1)
            if seen > 1:
                loss = loss + torch.nn.functional.cross_entropy(logits[:-1], prefixes[b, 1:], reduction="sum")
            known.append(flat(torch.autograd.grad(loss / n, params, retain_graph=True, allow_unused=True)).double())
            jac.append(torch.stack([flat(torch.autograd.grad(hf[i], params, retain_graph=True, allow_unused=True))
                                    for i in range(hf.shape[0])], dim=1))  # (P, d), float32
    base = observed_grad - sum(known)                                        # = −Σ_b M_b wte[v_b] / n
    a0 = [(m.double().T @ base) for m in jac]
    cross = [[(jac[b].T @ jac[c]).double() for c in range(B)] for b in range(B)]
    del jac
    wte = t.wte.weight.detach().double()                                    # (V, d)
    with torch.no_grad():
        guess = model(input_ids=prefixes).logits[:, -1].argmax(-1)
    for _ in range(sweeps):
        for b in range(B):
            # r = base + Σ_{c≠b} M_c w_c / n;  ||r + M_b w / n||² = ||r||² + 2 (M_b^T r)·w / n + wᵀ C_bb w / n²
            a = a0[b] + sum(cross[b][c] @ wte[guess[c]] for c in range(B) if c != b) / n
            score = 2 * (wte @ a) / n + ((wte @ cross[b][b]) * wte).sum(-1) / n ** 2
            guess[b] = score.argmin()
    return guess
