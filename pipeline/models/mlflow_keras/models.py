"""Import path that logged models name: see pipeline/models/keras/flavor.py."""

from pipeline.models.keras.flavor import CUSTOM_OBJECTS, load_model  # noqa: F401
