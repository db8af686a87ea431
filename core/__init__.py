"""itool: iterative reinforced fine-tuning of tool-using LLMs, as a plugin framework."""

from itool.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
