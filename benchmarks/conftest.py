"""pytest-benchmark suite (regression tracking for CI); the side-by-side table is benchmarks/run.py.

Not part of `make test`: pyproject's testpaths is ["tests"] and addopts disables benchmarks."""
import os
import sys
import tempfile
from pathlib import Path

# hermetic victim cache, like tests/conftest.py
os.environ.setdefault("FEDLEAK_CACHE", tempfile.mkdtemp(prefix="fedleak-bench-cache-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def convnet_case():
    from cases import build_case
    return build_case("convnet")


@pytest.fixture(scope="session")
def resnet18_case():
    from cases import build_case
    return build_case("resnet18")
