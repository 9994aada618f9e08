"""Runnable examples for ptsq (not part of the installed library)."""
