"""alignlib: the helper package of the notebook course on reward models and REINFORCE.

Importing it does nothing but define names; the modules read bottom-up (docs/architecture.md).
"""

__version__ = "0.1.0"
