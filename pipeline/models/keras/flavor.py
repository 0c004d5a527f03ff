"""``load_model`` for MLflow's tensorflow flavor: Keras' own, in safe mode, with the custom
layers of ``pipeline/models/keras/layers.py`` and the schedule of ``schedule.py`` passed as
``custom_objects``. Imports keras and those two modules only: MLflow's serving environment
installs tensorflow-cpu, keras and numpy, nothing else."""

from __future__ import annotations

import keras

from pipeline.models.keras import layers, schedule

# every class those modules register with Keras, by its registered name ("pipeline>...")
CUSTOM_OBJECTS = {
    keras.saving.get_registered_name(obj): obj
    for module in (layers, schedule)
    for obj in vars(module).values()
    if isinstance(obj, type) and keras.saving.get_registered_name(obj).startswith("pipeline>")
}


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True, **kwargs):
    """``keras.saving.load_model`` with the project's custom layers known to it."""
    objects = CUSTOM_OBJECTS | dict(custom_objects or {})
    return keras.saving.load_model(
        filepath, custom_objects=objects, compile=compile, safe_mode=safe_mode, **kwargs
    )
