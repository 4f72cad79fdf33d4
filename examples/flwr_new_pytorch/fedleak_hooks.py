"""The auditor's hooks for the app `flwr new myapp --framework PyTorch` made (flwr 1.24's template, the last
flwr release that ships its templates; 1.42's `flwr new` downloads apps from Flower Hub). They sit beside the
app, which runs unmodified (docs/flower.md, "An app as `flwr new` makes it"):

    cd examples/flwr_new_pytorch && fedleak audit-flower . --hooks fedleak_hooks --ladder

The template downloads CIFAR-10 through flwr_datasets; offline, `offline_data/flwr_datasets` stands in for it
with fedleak's 32x32 photo crops, first on sys.path from here (the simulation hands this process's sys.path to
its workers)."""
import sys
from pathlib import Path

_OFFLINE = str(Path(__file__).parent / "offline_data")
if _OFFLINE not in sys.path:
    sys.path.insert(0, _OFFLINE)

import torch  # noqa: E402
from flwr_datasets import FederatedDataset  # noqa: E402  the offline stand-in above
from myapp import task  # noqa: E402

from fedleak.models.functional import LocalTraining  # noqa: E402

DATASET = "photos"
MODEL = "quickstart-cnn"


def build_model():
    """The app's Net; the weights come from what the server sends."""
    return task.Net()


def normalisation():
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the template's Normalize


def private_data(partition_id: int, num_partitions: int):
    """The client's training images in [0,1] and labels, as its trainloader holds them (ground truth, for scoring)."""
    split = FederatedDataset(dataset="uoft-cs/cifar10", partitioners={}).load_partition(partition_id) \
        .train_test_split(test_size=0.2, seed=42)["train"]
    x = torch.as_tensor(split.pixels).permute(0, 3, 1, 2).float() / 255
    return x, torch.as_tensor(split.labels).long()


def local_training(run_config: dict) -> LocalTraining:
    """What the server knows of the clients' training: the lr it sends (run config `lr`), `local-epochs`, and the
    template's torch.optim.Adam(lr) over DataLoader(batch_size=32, shuffle=True)."""
    return LocalTraining(lr=run_config["lr"], epochs=run_config["local-epochs"], batch_size=32, optimizer="adam",
                         shuffle=True)
