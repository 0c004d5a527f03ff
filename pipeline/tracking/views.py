"""The experiment's saved view "Figures" in MLflow's UI: the runs' charts with each logged image
(``log_images``) drawn as a picture, without the run-parameter list MLflow's image cards put
above it (docs/decisions/0006-mlflow-ui-figures-and-landing.md says why this way).

MLflow's saved views (3.15+, the runs page's "Views" menu) are experiment tags
``mlflow.sharedViewState.<id>`` whose value is an envelope ``{"name", "createdAt", "state"}``;
``state`` is the serialized page state (compressed by the UI; plain JSON is read too), opened by
``#/experiments/<id>/runs?viewStateShareKey=<id>``. The layout written here is MLflow 3.17's
(``RunsChartsImageCardConfig.showRunParams``, a section's ``columns`` and ``cardHeight``):
``make screens`` checks that it still draws.
"""

from __future__ import annotations

import json
import time

VIEW_ID = "figures"
VIEW_NAME = "Figures"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's EXPERIMENT_PAGE_VIEW_STATE_SHARE_TAG_PREFIX
VIEW_TAG = VIEW_TAG_PREFIX + VIEW_ID
SECTION = "pipeline-figures"  # the uuid of the view's chart section
CARD_HEIGHT = 440  # pixels: room for a run's name and its picture


def query(experiment_id: str) -> str:
    """The address (after ``<base>/#/``) that opens the view on the charts of the training
    view."""
    return (
        f"experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}"
        "&workflowType=machine_learning&compareRunsMode=CHART"
    )


def image_card(key: str) -> dict:
    """An image chart of the image ``key`` at step 0, without the run's params above it."""
    return {
        "type": "IMAGE",
        "uuid": f"pipeline-image-{key}",
        "displayName": key,
        "isGenerated": False,
        "deleted": False,
        "metricSectionId": SECTION,
        "runsCountToCompare": 10,
        "imageKeys": [key],
        "step": 0,
        "showRunParams": False,
    }


def state(keys: tuple[str, ...]) -> dict:
    """The page state of the view: one section of image charts, one chart a row; MLflow adds
    the metric charts itself."""
    return {
        "compareRunCharts": [image_card(k) for k in keys],
        "compareRunSections": [
            {
                "uuid": SECTION,
                "name": VIEW_NAME,
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
                "columns": 1,
                "cardHeight": CARD_HEIGHT,
            }
        ],
    }


def envelope(keys: tuple[str, ...], now_ms: int | None = None) -> str:
    """The tag value of the view showing images ``keys``."""
    created = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"name": VIEW_NAME, "createdAt": created, "state": json.dumps(state(keys))})


def image_keys(tag_value: str) -> tuple[str, ...]:
    """The image keys the view ``tag_value`` draws (empty when it is not one of ours: e.g.
    saved over from the UI, whose state is compressed)."""
    try:
        view = json.loads(json.loads(tag_value)["state"])
        cards = view["compareRunCharts"]
        return tuple(c["imageKeys"][0] for c in cards if c.get("type") == "IMAGE")
    except (ValueError, KeyError, TypeError, IndexError):
        return ()
