"""fedleak: how much of a federated-learning client's private data an attacker rebuilds from what
the client shares, and what each defense really buys.

Layers, bottom to top (each imports only from those below it; the import-linter contract in
pyproject.toml, run by `make test`, keeps it so):

    core           errors, registry, options, io
    data, models, metrics   datasets and client partitions; victim architectures and the functional
                   client loop; PSNR / SSIM / LPIPS
    defenses       what a client does to its update before sending it
    threat_models  what the server observes (FedSGD, FedAvg, HyperFL, VFL) and the attacker's replay
    attacks        reconstructions from an observation
    reports        pure views of stored results
    harness        the application: runner, matrix, gate, evaluate-defense, Flower audit, CLI
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("fedleak")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+source"
