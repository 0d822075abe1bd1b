"""Pure functions over parameter pytrees (masks, codebooks, coding)."""
