"""Built-in plugins. Each module registers itself through the ``itool`` entry-point group."""
