"""`from mnist_edge.runtime import Predictor`: the documented place of the inference API. The code
lives in the torch-free subpackage, mnist_edge.edge.runtime."""

from .edge.runtime import *  # noqa: F403
from .edge.runtime import __all__  # noqa: F401
