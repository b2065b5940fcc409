"""The files predict.py writes: predictions.csv and .json, overlay figures, 3D Slicer markups.

Every file is written atomically; an output folder that already holds predictions is refused,
so earlier results are never overwritten.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference.image_prediction import ImageInfo, ImagePredictions
from utils.atomic_files import atomic_path, write_text_atomic
from utils.errors import DataError
from utils.image_io import read_image
from utils.result_figures import file_stem, save_prediction_figure

SLICER_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/"
    "Schema/markups-schema-v1.0.3.json#"
)


def check_output_folder(folder: Path) -> None:
    """Refuse a folder that already holds predictions (they would be overwritten)."""
    if (Path(folder) / "predictions.csv").exists() or (Path(folder) / "predictions.json").exists():
        raise DataError(f"{folder} already holds predictions; choose another -o or delete them")


def _plain(value: Any) -> Any:
    """A table value as JSON: NaN → null, numpy scalars → Python numbers."""
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def predictions_json(result: ImagePredictions, model: str) -> dict[str, Any]:
    """predictions.json: per image its id, file, size (H, W), pixel size and its table rows
    (without ``id`` and ``image``), plus the images that failed."""
    rows = result.table.to_dict(orient="records")
    by_id: dict[str, list[dict]] = {info.id: [] for info in result.images}
    for row in rows:
        by_id[row["id"]].append({k: _plain(v) for k, v in row.items() if k not in ("id", "image")})
    return {
        "model": model,
        "coordinates": "x = column, y = row, in pixels of the image file; integers are pixel "
        "centres",
        "images": [
            {
                "id": info.id,
                "image": str(info.path),
                "size": list(info.original_size),
                "pixel_size": list(info.pixel_size) if info.pixel_size else None,
                "predictions": by_id[info.id],
            }
            for info in result.images
        ],
        "failed": [{"image": str(path), "error": reason} for path, reason in result.failed],
    }


def slicer_markups(info: ImageInfo, rows: pd.DataFrame) -> dict[str, Any]:
    """A 3D Slicer markups file (``.mrk.json``) of one image's predictions: one point list per
    method, one control point per landmark (label: its name, else its JSON index).

    Positions are ``[x * sx, y * sy, 0]`` in LPS: the pixel's position in an image whose
    origin is at 0 with pixel size (sx, sy) mm, which is where Slicer shows a PNG, TIFF or
    JPEG loaded as a volume (pixel size 1 mm: then a unit is a pixel). A DICOM image with a
    patient position and orientation is shown in patient space; these points are in its
    pixel grid, not moved there.
    """
    sx, sy = info.pixel_size or (1.0, 1.0)
    markups = []
    for method, group in rows.groupby("method", sort=False):
        points = []
        for n, row in enumerate(group.itertuples(index=False), start=1):
            label = getattr(row, "landmark_name", None) or str(row.landmark)
            points.append(
                {
                    "id": str(n),
                    "label": str(label),
                    "description": f"landmark {row.landmark}, uncertainty {row.uncertainty:.6g}",
                    "position": [float(row.pred_x) * sx, float(row.pred_y) * sy, 0.0],
                    "positionStatus": "defined",
                }
            )
        markups.append(
            {
                "type": "Fiducial",
                "name": f"{info.id} {method}",
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "controlPoints": points,
            }
        )
    return {"@schema": SLICER_SCHEMA, "markups": markups}


def write_prediction_files(
    result: ImagePredictions,
    folder: Path,
    model: str,
    figures: bool = False,
    slicer: bool = False,
) -> list[Path]:
    """Write predictions.csv and predictions.json into ``folder``, with ``figures`` one
    overlay PNG per image (figures/<id>.png, every method's first rows: the first method),
    with ``slicer`` one markups file per image (slicer/<id>.mrk.json). Returns the files."""
    folder = Path(folder)
    check_output_folder(folder)
    written = [folder / "predictions.csv", folder / "predictions.json"]
    with atomic_path(written[0]) as temporary:
        result.table.to_csv(temporary, index=False)
    write_text_atomic(written[1], json.dumps(predictions_json(result, model), indent=1) + "\n")
    if result.table.empty:
        return written
    groups = dict(tuple(result.table.groupby("id", sort=False)))
    first_method = result.table["method"].iloc[0]
    for info in result.images:
        rows = groups[info.id]
        stem = file_stem(info.id)
        if slicer:
            path = folder / "slicer" / f"{stem}.mrk.json"
            write_text_atomic(path, json.dumps(slicer_markups(info, rows), indent=1) + "\n")
            written.append(path)
        if figures:
            shown = rows[rows["method"] == first_method]
            path = folder / "figures" / f"{stem}.png"
            with atomic_path(path) as temporary:
                save_prediction_figure(
                    read_image(info.path).pixels,
                    shown[["pred_x", "pred_y"]].to_numpy(float),
                    None,
                    list(shown["landmark"]),
                    f"{info.id} ({first_method})",
                    temporary,
                )
            written.append(path)
    return written
