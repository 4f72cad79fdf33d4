"""digitsapp: a Flower / PyTorch app, written like Flower's quickstart-pytorch example."""
