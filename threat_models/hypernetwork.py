"""HyperFL's networks (Guo et al., "A New Federated Learning Framework Against Gradient Inversion
Attacks", AAAI 2025, §3; methods.md §9): a CNN feature extractor whose weights θ are *generated*
by a hypernetwork from a private client embedding v, θ = h(v; φ), and a private linear classifier
head. Only φ is shared; v and the head stay on the client.

Parameter naming: the hypernetwork's parameters carry the prefix ``hypernetwork.``, so φ (what the
server averages and the attacker observes) is exactly the ``hypernetwork.*`` entries of
``HyperFLNet.named_parameters()`` and ``functional_call(net, φ, x)`` runs the net."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from fedleak.core.errors import DataError

FEATURE_DIM = 128
PHI_PREFIX = "hypernetwork."


class TargetCNN(nn.Module):
    """HyperFL's CNN without its classifier (official `cnn/models/cnn.py`): LeakyReLU and 2×2
    max-pool after every conv, then FC → 128 + LeakyReLU. Grey images get two convs (1→16 5×5;
    16→32 5×5 pad 1: FC 800→128 at 28×28), colour images three (…→16 5×5; 16→32 5×5 pad 1;
    32→64 3×3 pad 1: FC 576→128 at 32×32)."""

    def __init__(self, in_shape: tuple[int, int, int], feature_dim: int = FEATURE_DIM):
        super().__init__()
        c, h, w = in_shape
        plan = [(c, 16, 5, 0), (16, 32, 5, 1)] + ([] if c == 1 else [(32, 64, 3, 1)])
        self.num_convs = len(plan)
        for i, (cin, cout, kernel, pad) in enumerate(plan, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, padding=pad))
            h, w = (h + 2 * pad - kernel + 1) // 2, (w + 2 * pad - kernel + 1) // 2
            if h < 1 or w < 1:
                raise DataError(f"HyperFL CNN cannot take input shape {tuple(in_shape)}: too small for its {len(plan)} conv+pool stages")
        self.fc1 = nn.Linear(plan[-1][1] * h * w, feature_dim)

    def forward(self, x: torch.Tensor, trunk_only: bool = False) -> torch.Tensor:
        """Features (N,128); with trunk_only the flattened conv output that enters fc1, which a
        one-step HyperFL update leaks exactly for B=1 (attacks/hyperfl_leak.py)."""
        for i in range(1, self.num_convs + 1):
            x = F.max_pool2d(F.leaky_relu(getattr(self, f"conv{i}")(x)), 2)
        return x.flatten(1) if trunk_only else F.leaky_relu(self.fc1(x.flatten(1)))


class HyperNetwork(nn.Module):
    """v → a = ReLU(W₁v + b₁) → θ_k = W_k a + b_k, one separate Linear per generated tensor
    (official HyperFL layout; the per-tensor heads are what makes the one-step leak exact,
    see attacks/hyperfl_leak.py)."""

    def __init__(self, target_shapes: dict[str, torch.Size], embedding_dim: int, hidden_dim: int):
        super().__init__()
        self.target_shapes = dict(target_shapes)
        self.hidden = nn.Linear(embedding_dim, hidden_dim)
        # ModuleDict keys cannot contain dots
        self.heads = nn.ModuleDict({head_key(n): nn.Linear(hidden_dim, s.numel()) for n, s in self.target_shapes.items()})

    def hidden_code(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.relu(self.hidden(embedding))

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.hidden_code(embedding)
        return {n: self.heads[head_key(n)](a).view(s) for n, s in self.target_shapes.items()}


def head_key(target_name: str) -> str:
    return target_name.replace(".", "_")


class HyperFLNet(nn.Module):
    """Architecture of a HyperFL client, as the server knows it. Its own `embedding` and `head`
    are only the public initialisation (seeded by the build); every real client draws its own
    (threat_models/hyperfl.py), so holding this module tells the attacker nothing private."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, embedding_dim: int = 64, hidden_dim: int = 128):
        super().__init__()
        self.in_shape, self.num_classes = tuple(in_shape), num_classes
        self.extractor = TargetCNN(in_shape)
        shapes = {n: p.shape for n, p in self.extractor.named_parameters()}
        self.hypernetwork = HyperNetwork(shapes, embedding_dim, hidden_dim)
        self.embedding = nn.Parameter(torch.randn(embedding_dim))  # nn.Embedding's N(0,1), as in the official code
        self.head = nn.Linear(FEATURE_DIM, num_classes)
        for p in self.extractor.parameters():
            p.requires_grad_(False)  # placeholders: the real θ always comes from the hypernetwork

    @property
    def target_names(self) -> list[str]:
        return list(self.hypernetwork.target_shapes)

    def generate(self, phi: dict[str, torch.Tensor], embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ = h(v; φ) for φ given with or without the ``hypernetwork.`` prefix."""
        return functional_call(self.hypernetwork, strip(phi), (embedding,))

    def hidden_code(self, phi: dict[str, torch.Tensor], embedding: torch.Tensor) -> torch.Tensor:
        phi = strip(phi)
        return F.relu(F.linear(embedding, phi["hidden.weight"], phi["hidden.bias"]))

    def logits(self, theta: dict[str, torch.Tensor], head: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.features(theta, x), head["weight"], head["bias"])

    def features(self, theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.extractor, theta, (x,))

    def trunk_features(self, theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.extractor, theta, (x,), {"trunk_only": True})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # module calls (not named_parameters) so that functional_call(net, φ, x) sees the swapped φ
        return self.head(self.features(self.hypernetwork(self.embedding), x))

    def public_phi(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.named_parameters() if n.startswith(PHI_PREFIX)}


def strip(phi: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(n[len(PHI_PREFIX):] if n.startswith(PHI_PREFIX) else n): t for n, t in phi.items()}


def build_hyperfl_net(in_shape, num_classes: int, embedding_dim: int, hidden_dim: int, seed: int = 0) -> HyperFLNet:
    """Seeded like models.architectures.build_model: a private copy of the CPU RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return HyperFLNet(in_shape, num_classes, embedding_dim, hidden_dim)
