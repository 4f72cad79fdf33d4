"""Generator priors for the generative attacks: the block-wise interface, fedleak's own DCGAN
(trained by `fedleak prior train`, shipped for `digits`), and adapters that expose a user's
BigGAN-deep or StyleGAN2 module through the same interface."""
from fedleak.attacks.generators.base import GenerativePrior
from fedleak.attacks.generators.dcgan import DCGANConfig, DCGANGenerator
from fedleak.attacks.generators.store import load_prior, save_prior

__all__ = ["DCGANConfig", "DCGANGenerator", "GenerativePrior", "load_prior", "save_prior"]
