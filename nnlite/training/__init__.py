"""The training loop and what plugs into it: ``trainer`` (``fit``, ``evaluate``, ``predict``,
the ``Trainer`` a container inherits), ``callbacks``, ``schedules`` (learning rates),
``loop`` (the epochs; a diverged epoch undone, Ctrl-C), ``feed`` (datasets and iterators of
batches), ``parallel`` (``fit(threads=n)``), ``generation`` (sampling text), ``curves``.
May import: core, kernels, layers."""
