"""The monitoring engine: plain Python and numpy, no transport."""
