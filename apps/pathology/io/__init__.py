"""Whole-slide images, annotations and result files of the pathology app.

One module per format:

* :mod:`.backends` - the slide readers (OpenSlide, tiffslide as fallback);
* :mod:`.slide` - :class:`Slide`, levels chosen by magnification through microns per pixel;
* :mod:`.annotations` - ASAP XML / QuPath GeoJSON polygons, rasterised to masks and traced back;
* :mod:`.pyramid` - tiled pyramidal TIFF writing (slides, masks, heatmaps), heatmap reading;
* :mod:`.submission` - Camelyon16 ``prob,X,Y`` lesion CSVs;
* :mod:`.qupath` - QuPath GeoJSON objects: detections (points) and probability contours (polygons);
* :mod:`.truth` - a slide's ground truth at the evaluation level.

Coordinates are ``(x, y)`` in level-0 pixels unless a name says otherwise;
arrays are ``(H, W)`` or ``(H, W, C)``.
"""
from .annotations import (
    EXCLUDE_GROUPS,
    TUMOUR_GROUPS,
    PointObject,
    Polygon,
    mask_to_polygons,
    rasterize,
    read_annotations,
    read_asap_xml,
    read_geojson,
    read_geojson_points,
    resize_mask,
    write_asap_xml,
)
from .pyramid import read_heatmap, write_pyramid_tiff
from .qupath import read_detections_geojson
from .slide import (
    MAX_WHOLE_LEVEL_PIXELS,
    SLIDE_SUFFIXES,
    LevelChoice,
    Slide,
    list_slides,
    mpp_for_magnification,
    open_slide,
)
from .submission import read_detections_csv, write_detections_csv
from .truth import ANNOTATION_SUFFIXES, SlideTruth, find_file, load_truth, truth_file

__all__ = [
    "Slide",
    "LevelChoice",
    "Polygon",
    "PointObject",
    "open_slide",
    "mpp_for_magnification",
    "read_annotations",
    "read_asap_xml",
    "read_geojson",
    "read_geojson_points",
    "write_asap_xml",
    "rasterize",
    "resize_mask",
    "mask_to_polygons",
    "write_pyramid_tiff",
    "read_heatmap",
    "write_detections_csv",
    "read_detections_csv",
    "read_detections_geojson",
    "SLIDE_SUFFIXES",
    "MAX_WHOLE_LEVEL_PIXELS",
    "TUMOUR_GROUPS",
    "EXCLUDE_GROUPS",
    "list_slides",
    "SlideTruth",
    "load_truth",
    "find_file",
    "truth_file",
    "ANNOTATION_SUFFIXES",
]
