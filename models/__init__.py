"""Victim architectures and the client computations written against explicit parameters."""
