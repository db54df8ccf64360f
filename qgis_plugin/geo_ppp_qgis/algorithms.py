"""The Processing algorithms: ``geoppp:segment`` and ``geoppp:evaluate``.

Each builds a geo-ppp command line from its parameters and runs it through :mod:`.runner`: progress
comes tile by tile from ``--progress jsonl``, Cancel stops the process and keeps its work dir (the
same run then resumes), and geo_ppp's own error message becomes the algorithm's error.
"""

import json
import os
import shlex

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from .runner import Cancelled, GeoPPPFailed, GeoPPPNotFound, find_executable, run, segment_command
from .settings import executable_setting

DEVICES = ["auto", "cpu", "cuda"]
#: geo-ppp segment --method (labels shown in QGIS, values passed on)
METHODS = ["pnp", "distill", "qr"]
METHOD_LABELS = [
    "pnp: plug-and-play per tile under the diffusion prior",
    "distill: plug-and-play on a sample of tiles, then a fast segmenter maps the region",
    "qr: a segmenter trained from the weak labels alone (implicit posterior)",
]


def _file_of(layer):
    """The file behind a layer (``path|layername=...`` -> ``path``)."""
    source = layer.source().split("|")[0]
    if not os.path.exists(source):
        raise QgsProcessingException(
            f"layer {layer.name()!r} is not a file geo_ppp can read ({source}); save it as a GeoTIFF or "
            "GeoPackage first"
        )
    return source


def _executable():
    try:
        return find_executable(executable_setting())
    except GeoPPPNotFound as err:
        raise QgsProcessingException(str(err)) from None


def _run(cmd, feedback):
    """Run a geo-ppp command, reporting to ``feedback``; returns (report, stdout)."""
    feedback.pushCommandInfo(" ".join(shlex.quote(c) for c in cmd))

    def on_event(event, report):
        kind = event.get("event")
        if kind == "plan":
            feedback.pushInfo(f"{report.total} tiles planned (work dir {event.get('workdir')})")
        elif kind == "tile":
            feedback.setProgress(report.percent)
        elif kind == "stage" and event.get("done") == event.get("total"):
            feedback.pushInfo(f"{event.get('stage')}: {event.get('done')} of {event.get('total')} done")
        elif kind == "outputs":
            feedback.pushInfo("wrote " + ", ".join(event.get("outputs", {}).values()))
        elif kind == "log" and event.get("level") in ("warning", "error", "critical"):
            feedback.pushWarning(str(event.get("message", "")))

    def on_message(line):
        if not line.startswith("Error:"):  # the error itself becomes the algorithm's error
            feedback.pushInfo(line)

    try:
        return run(cmd, on_event=on_event, on_message=on_message, is_cancelled=feedback.isCanceled)
    except GeoPPPFailed as err:
        raise QgsProcessingException(str(err)) from None
    except Cancelled as err:
        raise QgsProcessingException(str(err)) from None


class _LoadStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies geo_ppp's ``.qml`` to the map layer Processing loads (kept alive by the class)."""

    instances = []

    def __init__(self, qml):
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        """Load the style beside the map."""
        if layer is not None and layer.isValid() and os.path.exists(self.qml):
            layer.loadNamedStyle(self.qml)
            layer.triggerRepaint()

    @classmethod
    def create(cls, qml):
        """A post-processor that outlives this call."""
        cls.instances.append(cls(qml))
        return cls.instances[-1]


class SegmentAlgorithm(QgsProcessingAlgorithm):
    """Imagery + weak labels -> a land-cover map (COG with its style), and optional products."""

    IMAGES = "IMAGES"
    WEAK = "WEAK_LABELS"
    FIELD = "LABEL_FIELD"
    LEGEND = "LEGEND"
    AOI = "AOI"
    STEPS = "STEPS"
    TILE_SIZE = "TILE_SIZE"
    SEED = "SEED"
    DEVICE = "DEVICE"
    METHOD = "METHOD"
    SEGMENTER = "SEGMENTER"
    OUTPUT = "OUTPUT"
    PROBABILITIES = "PROBABILITIES"
    VECTOR = "VECTOR"
    QUICKLOOK = "QUICKLOOK"

    def name(self):  # noqa: D102
        return "segment"

    def displayName(self):  # noqa: D102, N802
        return "Segment land cover"

    def shortHelpString(self):  # noqa: D102, N802
        return (
            "Infers a land-cover map of the imagery from coarse weak labels (e.g. NLCD 30 m, any CRS, raster "
            "or polygons with a class field) under geo_ppp's diffusion prior. Runs the geo-ppp executable "
            "(set under Settings > Options > Processing > Providers > geo_ppp, or GEO_PPP_EXE). Cancel "
            "keeps the tiles done: running the same again resumes."
        )

    def createInstance(self):  # noqa: D102, N802
        return SegmentAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: D102, N802
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.IMAGES, "Imagery (R, G, B[, NIR])", QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterMapLayer(self.WEAK, "Weak labels (class-code raster or polygons)")
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD,
                "Class field (polygon weak labels)",
                parentLayerParameterName=self.WEAK,
                type=QgsProcessingParameterField.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.LEGEND, "Legend (name or JSON file)", "chesapeake")
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.AOI, "Area of interest", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STEPS, "Plug-and-play steps (0: the prior's tuned value)", defaultValue=0, minValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (pixels)", defaultValue=256, minValue=32)
        )
        self.addParameter(QgsProcessingParameterNumber(self.SEED, "Seed", defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, "Method", METHOD_LABELS, defaultValue=0))
        self.addParameter(
            QgsProcessingParameterFile(
                self.SEGMENTER,
                "Saved segmenter folder (maps with it instead: no plug-and-play, no training)",
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Land-cover map"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.PROBABILITIES, "Class probabilities", optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.VECTOR,
                "Class polygons",
                QgsProcessing.TypeVectorPolygon,
                optional=True,
                createByDefault=False,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.QUICKLOOK, "Quicklook", "PNG files (*.png)", optional=True, createByDefault=False
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: D102, N802
        images = [_file_of(lyr) for lyr in self.parameterAsLayerList(parameters, self.IMAGES, context)]
        if not images:
            raise QgsProcessingException("choose at least one imagery layer")
        weak = self.parameterAsLayer(parameters, self.WEAK, context)
        if weak is None:
            raise QgsProcessingException("choose the weak-label layer")
        field = self.parameterAsString(parameters, self.FIELD, context) or None
        aoi_layer = self.parameterAsVectorLayer(parameters, self.AOI, context)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        probabilities = self.parameterAsOutputLayer(parameters, self.PROBABILITIES, context) or None
        vector = self.parameterAsOutputLayer(parameters, self.VECTOR, context) or None
        quicklook = self.parameterAsFileOutput(parameters, self.QUICKLOOK, context) or None
        if vector is not None and not vector.lower().endswith(".gpkg"):
            vector = os.path.splitext(vector.split("|")[0])[0] + ".gpkg"
        steps = self.parameterAsInt(parameters, self.STEPS, context)
        cmd = segment_command(
            _executable(),
            images,
            [_file_of(weak)],
            out,
            label_attribute=field,
            legend=self.parameterAsString(parameters, self.LEGEND, context) or "chesapeake",
            aoi=_file_of(aoi_layer) if aoi_layer is not None else None,
            steps=steps or None,
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            method=METHODS[self.parameterAsEnum(parameters, self.METHOD, context)],
            segmenter=self.parameterAsFile(parameters, self.SEGMENTER, context) or None,
            probabilities=probabilities,
            vector=vector,
            quicklook=quicklook,
        )
        report, _ = _run(cmd, feedback)
        qml = os.path.splitext(out)[0] + ".qml"
        if context.willLoadLayerOnCompletion(out):
            context.layerToLoadOnCompletionDetails(out).setPostProcessor(_LoadStyle.create(qml))
        results = {self.OUTPUT: out}
        if probabilities:
            results[self.PROBABILITIES] = probabilities
        if vector:
            results[self.VECTOR] = vector
        if quicklook:
            results[self.QUICKLOOK] = quicklook
        feedback.pushInfo(
            f"{report.stats.get('ran', 0)} tiles ran, {report.stats.get('skipped', 0)} skipped, "
            f"{report.stats.get('resumed', 0)} resumed"
        )
        return results


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    """Score a map against a truth raster: accuracy, mean IoU, per-class IoU."""

    PRED = "PREDICTION"
    TRUTH = "TRUTH"
    LEGEND = "LEGEND"
    ACCURACY = "ACCURACY"
    MIOU = "MIOU"
    REPORT = "REPORT"

    def name(self):  # noqa: D102
        return "evaluate"

    def displayName(self):  # noqa: D102, N802
        return "Evaluate a land-cover map"

    def shortHelpString(self):  # noqa: D102, N802
        return "Scores a predicted class map against a truth raster (read on the truth's grid)."

    def createInstance(self):  # noqa: D102, N802
        return EvaluateAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: D102, N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.PRED, "Predicted map"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.TRUTH, "Truth"))
        self.addParameter(
            QgsProcessingParameterString(self.LEGEND, "Legend (default: the map's own)", optional=True)
        )
        self.addOutput(QgsProcessingOutputNumber(self.ACCURACY, "Overall accuracy"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Mean IoU"))
        self.addOutput(QgsProcessingOutputString(self.REPORT, "Scores (JSON)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: D102, N802
        pred = _file_of(self.parameterAsRasterLayer(parameters, self.PRED, context))
        truth = _file_of(self.parameterAsRasterLayer(parameters, self.TRUTH, context))
        cmd = [_executable(), "evaluate", pred, truth, "--json"]
        legend = self.parameterAsString(parameters, self.LEGEND, context)
        if legend:
            cmd += ["--legend", legend]
        _, stdout = _run(cmd, feedback)
        try:
            scores = json.loads(stdout)
        except json.JSONDecodeError:
            raise QgsProcessingException(f"geo-ppp evaluate printed no scores: {stdout[-500:]}") from None
        feedback.pushInfo(f"accuracy {scores['accuracy']:.1%}, mean IoU {scores['miou']:.1%}")
        return {self.ACCURACY: scores["accuracy"], self.MIOU: scores["miou"], self.REPORT: json.dumps(scores)}
