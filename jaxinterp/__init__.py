"""jaxinterp: understanding vision networks with pure, composable JAX functions."""

__version__ = "0.1.0"
