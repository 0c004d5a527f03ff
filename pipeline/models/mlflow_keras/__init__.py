"""The ``keras_module`` MLflow imports to load the project's Keras models.

The keras family (``MLFLOW_KERAS_MODULE`` in pipeline/models/keras/family.py) has
``pipeline.tracking.log_keras_model`` name this package as the tensorflow flavor's
``keras_module`` (in ``MLmodel`` and ``data/keras_module.txt``), and the ``pipeline`` package
is shipped beside the model (``code_paths``). ``mlflow.pyfunc.load_model`` and
``mlflow.tensorflow.load_model`` import it, then call ``<it>.models.load_model(path,
custom_objects=...)``: ``models.load_model`` adds the project's custom layers, so a model that
has them loads in any process, with nothing pickled beside it. Only ``keras`` is imported.
"""
