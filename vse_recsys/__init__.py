"""vse_recsys: VSE-ens label ranking with an adaptive negative sampler, as an implicit model."""

from .model import VSEEns

__version__ = "0.1.0"
__all__ = ["VSEEns", "__version__"]
