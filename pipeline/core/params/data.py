"""``data``, ``datasets`` and ``validate``: where the images come from and what they must be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from pipeline.core.params._base import FROZEN, LIST, Schema, within


class FetchParams(Schema):
    timeout: float = 30.0  # seconds per HTTP request
    retries: int = 2  # extra attempts per mirror and file


class DataParams(Schema):
    source: Literal["mnist", "fashion_mnist", "idx_dir"] = "mnist"
    idx_dir: str | None = None
    fetch: FetchParams = Field(default_factory=FetchParams)


class ShareBounds(Schema):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> ShareBounds:
        if not 0 <= self.min <= self.max <= 1:
            raise ValueError(f"need 0 <= min <= max <= 1, got {self.min}, {self.max}")
        return self


class RowBounds(Schema):
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> RowBounds:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"need 0 <= min <= max, got {self.min}, {self.max}")
        return self


class ValidateParams(Schema):
    """Thresholds of the Great Expectations suite."""

    rows: Annotated[Mapping[Literal["train", "test"], RowBounds], FROZEN] = Field(
        {"train": {"min": 60000, "max": 60000}, "test": {"min": 10000, "max": 10000}},
        validate_default=True,
    )
    labels: Annotated[tuple[int, ...], LIST] = tuple(range(10))
    pixel_min: int = 0
    pixel_max: int = 255
    class_share: ShareBounds = ShareBounds(min=0.05, max=0.15)
    min_nonzero_pixels: int = 1  # an image with fewer ink pixels counts as blank
    max_train_test_overlap: Annotated[float, within("[0, 1]")] = 0.001  # test images in train
    image_shape: Annotated[tuple[int, int], LIST] = (28, 28)


class DatasetParams(Schema):
    classes: Annotated[tuple[int, ...], LIST]
    train_size: PositiveInt | None = None
    val_fraction: Annotated[float, within("(0, 1)")] = 0.1

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) < 2:
            raise ValueError(f"must list at least two classes, got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate classes in {list(v)}")
        if bad := [c for c in v if not 0 <= c <= 9]:
            raise ValueError(f"{bad} out of range 0..9")
        return v
