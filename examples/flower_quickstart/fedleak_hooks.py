"""The auditor's hooks for digitsapp (docs/flower.md): what `fedleak audit-flower` needs beyond the wire.
They sit next to the app, not in it: the app's own code runs unmodified.

    fedleak audit-flower examples/flower_quickstart --hooks fedleak_hooks --run-config "..."

Hooks that take `run_config` get the app's run config, the one its ServerApp and ClientApps run with."""
from digitsapp import task

from fedleak.models.functional import LocalTraining

DATASET = "digits"
MODEL = "quickstart-cnn"


def build_model():
    """The architecture; the weights come from what the server sends."""
    return task.Net()


def private_data(partition_id: int, num_partitions: int, run_config: dict):
    """Client `partition_id`'s images in [0,1] and labels: the ground truth, for scoring only."""
    return task.partition(partition_id, num_partitions, run_config["images-per-client"])


def normalisation():
    return task.MEAN, task.STD


def local_training(run_config: dict) -> LocalTraining:
    """What the server knows of the clients' training: the learning rate it sends, the run config's
    epochs and batch size, and the client code's SGD(momentum=0.9) over a shuffling DataLoader."""
    return LocalTraining(lr=run_config["learning-rate"], epochs=run_config["local-epochs"],
                         batch_size=run_config["batch-size"], momentum=0.9, shuffle=True)
