"""The city's domain, the ground floor: kinds and districts, the clock, settings, the version.

Nothing here imports another room of the platform.
"""
