"""nasfleet: train weight-sharing supernets at scale and find the subnets worth deploying.

The distribution maps the repository's top-level folders into this namespace:
``core/`` (this package) is ``nasfleet``, ``supernet/`` is ``nasfleet.supernet``,
``strategies/`` is ``nasfleet.strategies``, ``orchestrator/`` is ``nasfleet.orchestrator`` and
``comm/`` is ``nasfleet.comm``. No folder of the checkout is named ``nasfleet``, so the checkout
never shadows an installed copy.
"""

from nasfleet.errors import NasfleetError

__version__ = "0.1.0"
__all__ = ["NasfleetError", "__version__"]
