"""storesync: keep certificate trust stores in agreement."""

__version__ = "0.1.0"
