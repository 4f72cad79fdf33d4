"""Threat models, registered by name. A new one is one file plus one line below."""
from fedleak.core.components import applicability
from fedleak.core.errors import ConfigError
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
    """The named threat model with its protocol options (errors name `threat_model.options.<key>`);
    a defense that does not apply to what this threat model shares is refused."""
    if defense is not None:
        check_applies(name, defense)
    return THREAT_MODELS.get(name).from_options(options, "threat_model.options", training)


def not_applicable(threat_model: str, component) -> str | None:
    """Why a defense or attack (class or instance) does not run under `threat_model`: it does not
    declare the kind of observation that threat model shares. None when it does."""
    reason = applicability(component, THREAT_MODELS.get(threat_model).kind)
    return f"{reason}, which threat model '{threat_model}' shares" if reason else None


def check_applies(threat_model: str, component) -> None:
    reason = not_applicable(threat_model, component)
    if reason:
        fitting = [n for n in THREAT_MODELS.names() if THREAT_MODELS.get(n).kind in component.applies_to]
        raise ConfigError(f"{reason}; it runs under {', '.join(fitting) or 'no registered threat model'}")


__all__ = ["THREAT_MODELS", "ThreatModel", "FedSGD", "FedAvg", "build_threat_model"]
