"""The ``ptsq`` command line: thin commands over the library."""
