"""The scratch family: a CNN in pure NumPy, built from the architecture spec of params.yaml.

``layers`` (the plain layers: forward/backward with caches), ``fused`` (the fast
conv-ReLU-pool path, apart from them), ``ops`` (array kernels both use), ``network`` (spec ->
layers, flat parameters, save/load), ``optim`` (SGD, momentum, Adam), ``family``
(train/load/predict for the stages), ``callbacks`` (what training does after each epoch),
``flavor`` (the MLflow model, logged as code).
"""
