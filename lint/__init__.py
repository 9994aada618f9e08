"""Checks that ``make lint`` runs beside ruff: import-linter contracts of ptsq's own."""
