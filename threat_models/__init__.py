"""Threat models, registered by name. A new one is one file plus one line below."""
from harness.registry import Registry
from threat_models.base import FedAvg, FedSGD, ThreatModel

THREAT_MODELS: Registry[ThreatModel] = Registry("threat model")
THREAT_MODELS.register("fedsgd", FedSGD)
THREAT_MODELS.register("fedavg", FedAvg)

__all__ = ["THREAT_MODELS", "ThreatModel", "FedSGD", "FedAvg"]
