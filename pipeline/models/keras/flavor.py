"""``load_model`` for MLflow's tensorflow flavor: Keras' own, in safe mode, with the custom
layers of ``pipeline/models/keras/layers.py`` passed as ``custom_objects``."""

from __future__ import annotations

import keras

from pipeline.models.keras import layers as custom_layers

# every class custom_layers registers with Keras, by its registered name ("pipeline>...")
CUSTOM_OBJECTS = {
    keras.saving.get_registered_name(obj): obj
    for obj in vars(custom_layers).values()
    if isinstance(obj, type) and keras.saving.get_registered_name(obj).startswith("pipeline>")
}


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True, **kwargs):
    """``keras.saving.load_model`` with the project's custom layers known to it."""
    objects = CUSTOM_OBJECTS | dict(custom_objects or {})
    return keras.saving.load_model(
        filepath, custom_objects=objects, compile=compile, safe_mode=safe_mode, **kwargs
    )
