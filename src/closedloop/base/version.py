"""The version of the closedloop package (``closedloop.__version__``), where any part can read it."""

__version__ = "0.1.0"
