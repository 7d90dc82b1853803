"""Applications on top of the toolkit: the systolic8 command and its subcommands."""
