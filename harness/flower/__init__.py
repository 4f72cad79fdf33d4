"""Auditing Flower apps and saved client updates: the app folder, Flower's simulation, the update
audit and the ladder (docs/flower.md). Only `simulation` imports flwr."""
