"""Files: ``archive`` (zip archives read without trusting them, atomic writes), ``io``
(``save``, ``load``, checkpoints), ``architecture`` (a model as JSON and back), ``budget``
(what a loaded file may cost), ``safetensors`` (state dicts in PyTorch's files), ``onnx``.
Loading never executes code. May import: core, kernels, layers, training, optim."""
