import atexit
import os
import shutil
import tempfile

# Hermetic cache: trained victims and utility results of a test session never leak into ~/.cache,
# and the folder goes when the session does (subprocesses that share it have finished by then).
if "FEDLEAK_CACHE" not in os.environ:
    os.environ["FEDLEAK_CACHE"] = tempfile.mkdtemp(prefix="fedleak-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FEDLEAK_CACHE"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: tiny test models gain nothing from two, and oversubscribed threads slow torch ~10×.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from fedleak.data.datasets import load_dataset
    return load_dataset("digits")


@pytest.fixture
def lenet_victim(digits):
    from fedleak.threat_models.victim import VictimSpec, build_victim
    return build_victim(VictimSpec(model="lenet"), digits)


@pytest.fixture
def convnet_victim(digits):
    from fedleak.threat_models.victim import VictimSpec, build_victim
    return build_victim(VictimSpec(model="convnet", options={"width": 8}), digits)
