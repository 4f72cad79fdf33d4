"""A small Flower app (Message API) for `fedleak audit-flower`: FedAvg over fedleak's LeNet on the
embedded digits, each client holding a few private held-out images.

    client_app.py  ClientApp: local SGD on the client's private batch, replies with its weights
    server_app.py  ServerApp: FedAvg for NUM_ROUNDS rounds over every client
    task.py        what both share (model, data, local training) and the auditor's hooks

Run it alone with `flwr`'s simulation, or audit it: `fedleak audit-flower` (see docs/flower.md)."""
