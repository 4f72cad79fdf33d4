"""Threat models, registered by name. A new one is one file plus one line below."""
from fedleak.core.components import applicability
from fedleak.core.errors import ConfigError
from fedleak.core.registry import Registry
from fedleak.threat_models.base import FedAvg, FedSGD, ThreatModel
from fedleak.threat_models.hyperfl import HyperFL
from fedleak.threat_models.malicious import MaliciousServer
from fedleak.threat_models.secure_aggregation import SecureAggregation
from fedleak.threat_models.vfl import VFL

THREAT_MODELS: Registry[ThreatModel] = Registry("threat model")
THREAT_MODELS.register(FedSGD)
THREAT_MODELS.register(FedAvg)
THREAT_MODELS.register(HyperFL)
THREAT_MODELS.register(VFL)
THREAT_MODELS.register(SecureAggregation)
THREAT_MODELS.register(MaliciousServer)


def build_threat_model(name: str, training, defense=None, **options) -> ThreatModel:
    """The named threat model with its protocol options (errors name `threat_model.options.<key>`);
    a defense that does not apply to what this threat model shares is refused."""
    if defense is not None:
        check_applies(name, defense)
    return THREAT_MODELS.get(name).from_options(options, "threat_model.options", training)


def not_applicable(threat_model: str, component) -> str | None:
    """Why a defense or attack (class or instance) does not run under `threat_model`: it does not
    declare the kind of observation that threat model shares, or it crafts the model the server
    sends (`crafts_model`) and the threat model's server sends the global one. None when it runs."""
    protocol = THREAT_MODELS.get(threat_model)
    reason = applicability(component, protocol.kind)
    if reason:
        return f"{reason}, which threat model '{threat_model}' shares"
    if getattr(component, "crafts_model", False) and not protocol.server_crafts_model:
        return (f"{component.section} '{component.name}' crafts the model the server sends; "
                f"threat model '{threat_model}' has an honest server")
    return None


def runs_under(component) -> list[str]:
    """The registered threat models a defense or attack runs under."""
    return [n for n in THREAT_MODELS.names() if not_applicable(n, component) is None]


def check_applies(threat_model: str, component) -> None:
    reason = not_applicable(threat_model, component)
    if reason:
        raise ConfigError(f"{reason}; it runs under {', '.join(runs_under(component)) or 'no registered threat model'}")


__all__ = ["THREAT_MODELS", "ThreatModel", "FedSGD", "FedAvg", "build_threat_model"]
