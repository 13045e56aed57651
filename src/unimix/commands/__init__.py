"""The ``unimix`` sub-commands, one module each (see :mod:`unimix.cli`)."""
