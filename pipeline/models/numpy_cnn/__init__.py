"""The scratch family: a CNN in pure NumPy, built from the architecture spec of params.yaml.

``layers`` (forward/backward with caches), ``network`` (spec -> layers, flat parameters,
save/load), ``optim`` (SGD, momentum, Adam), ``family`` (train/load/predict for the stages).
"""
