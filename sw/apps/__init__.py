"""Applications: the ``systolic8`` command (:mod:`sw.apps.cli`) and its subcommands, one module each."""
