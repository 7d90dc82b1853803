"""Applications built on the toolkit: command-line entry points that run whole models (``python -m sw.apps.tiny``)."""
