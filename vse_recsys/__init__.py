"""vse_recsys: label ranking for implicit feedback as implicit models: VSE-ens (matrix
factorisation with an adaptive negative sampler) and EASE (closed-form label-label)."""

from .ease import EASE
from .model import VSEEns

__version__ = "0.1.0"
__all__ = ["EASE", "VSEEns", "__version__"]
