"""The example's ClientApp: receive the global weights, train on the private batch, send the weights back."""
from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedleak.examples.flower_app import task

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    torch.set_num_threads(1)  # simulated clients share the machine's cores
    model = task.build_model()
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    images, labels = task.private_data(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    loss = task.train(model, task.normalise(images), labels)
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(images)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=message)
