"""The operations console."""
