"""Accuracy analysis: per-layer sensitivity (:mod:`.sensitivity`) and the accuracy budget (:mod:`.budget`)."""
