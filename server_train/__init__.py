"""The server side (torch): synthetic data (``synth``), models, training, evaluation, and the
``train``/``eval``/``bench``/``export`` subcommands; ``release`` turns checkpoints into model cards
through ``export``. The top layer: it may import every other package, and none imports it."""
