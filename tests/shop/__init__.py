"""A small shop made for the frame and loop tests: a generic repository and services that loop over it."""
