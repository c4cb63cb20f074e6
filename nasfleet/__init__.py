"""nasfleet: train weight-sharing supernets at scale and find the subnets worth deploying.

The distribution maps the repository's top-level folders into this namespace:
``supernet/`` is ``nasfleet.supernet``, ``strategies/`` is ``nasfleet.strategies``,
``orchestrator/`` is ``nasfleet.orchestrator`` and ``comm/`` is ``nasfleet.comm``.
"""

from nasfleet.errors import NasfleetError

__version__ = "0.1.0"
__all__ = ["NasfleetError", "__version__"]
