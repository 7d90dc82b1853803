"""Applications: the ``systolic8`` command (:mod:`sw.apps.cli`) and its subcommands, one module each, and the
command-line entry points that run whole models (``python -m sw.apps.tiny``)."""
