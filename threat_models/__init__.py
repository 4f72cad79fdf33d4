"""Threat models, registered by name. A new one is one file plus one line below."""
from fedleak.core.registry import Registry
from fedleak.threat_models.base import FedAvg, FedSGD, ThreatModel
from fedleak.threat_models.hyperfl import HyperFL
from fedleak.threat_models.vfl import VFL

THREAT_MODELS: Registry[ThreatModel] = Registry("threat model")
THREAT_MODELS.register("fedsgd", FedSGD)
THREAT_MODELS.register("fedavg", FedAvg)
THREAT_MODELS.register("hyperfl", HyperFL)
THREAT_MODELS.register("vfl", VFL)


def build_threat_model(name: str, training, defense=None, **options) -> ThreatModel:
    """The named threat model with its protocol options; a defense that only exists inside one
    protocol (`Defense.requires_threat_model`) is refused under any other."""
    from functools import partial
    from fedleak.core.options import call_with_options
    from fedleak.core.errors import ConfigError
    required = getattr(defense, "requires_threat_model", None)
    if required and name != required:
        raise ConfigError(f"defense '{defense.name}' runs only under threat model '{required}' "
                          f"(set threat_model.name = \"{required}\"), not '{name}'")
    return call_with_options(partial(THREAT_MODELS.get(name), training), options, f"threat model '{name}'")

__all__ = ["THREAT_MODELS", "ThreatModel", "FedSGD", "FedAvg", "build_threat_model"]
