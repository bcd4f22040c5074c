"""lrplan: plan a large training run's learning rate and loss from a few small runs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrplan")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
