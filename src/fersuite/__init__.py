"""fersuite: efficient facial expression recognition experiments."""

__version__ = "0.1.0"
