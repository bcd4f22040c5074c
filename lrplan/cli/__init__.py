"""The ``lrplan`` command line: parse arguments, call the library, render the result.

The only package that imports click. `main` is the console entry point (``lrplan``); it sets
JAX's flags (x64, one CPU device per chain) before anything imports JAX. Library modules are
imported inside the commands, so ``lrplan --help`` stays fast.
"""

from lrplan.cli.main import cli, main, setup_jax

__all__ = ["cli", "main", "setup_jax"]
