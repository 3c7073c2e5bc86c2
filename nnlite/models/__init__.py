"""The containers: ``Sequential`` (a chain of layers) and the graph ``Model`` built from
``Input``s, each a Layer with Keras's ``fit``, ``evaluate``, ``predict`` (from
``nnlite.training``) and ``save`` (to ``nnlite.files``); ``loading`` gives ``nnlite.load``.
May import: core, kernels, layers, training, optim, files, datasets."""
