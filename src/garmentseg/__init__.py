"""garmentseg."""
