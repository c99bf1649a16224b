"""Thresholds of the field, one definition each: tasks judge success by them and rewards shape towards them.

A base module: it imports nothing, so the task registry stays cheap to import.
"""

LOW_HHI = 1250.0
"""Herfindahl-Hirschman index (production) at or below which a crystal's supply counts as low-risk:
the US DoJ/FTC bound of an unconcentrated market."""

BAND_GAP_WINDOW = (1.5, 3.0)
"""eV: the band gaps PerovskiteBandGap asks for (visible-light absorbers)."""

STABLE_E_HULL = 0.1
"""eV/atom above the convex hull at or below which a crystal counts as stable: MatInvent's `is_stable`
and MatterGen's SUN threshold."""
