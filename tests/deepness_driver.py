"""Runs the QGIS Deepness plugin's own code on an ONNX model, headless, as a user would in its dock.

Not a test module: tests/test_deepness.py runs it with the Python of the Deepness venv (QGIS's
/usr/bin/python3 with --system-site-packages, plus Deepness's pinned onnxruntime, opencv and numpy;
made by .ci/install-deepness). Nothing of geo_ppp is imported here.

    python tests/deepness_driver.py DEEPNESS_SRC MODEL.onnx RASTER.tif RESULT.npy

Steps, all through Deepness's code: the dock widget (with a stand-in for QGIS's ``iface``) loads
the model the way "Browse" does (model factory by the metadata's model type, input and output
shapes), clicks "Load default parameters", takes the raster layer as its input (entire layer), builds
the segmentation parameters from its widgets, and runs the segmentation map processor, whose result
is turned into the class layers (one vector layer per class, added to the project). Prints one JSON
line after ``DEEPNESS_JSON:``; saves the class image (Deepness's values: class index + 1) to RESULT.npy.
"""

from __future__ import annotations

import json
import sys
import time
from unittest import mock

MARKER = "DEEPNESS_JSON:"


def _ui_settings(dock) -> dict:
    """The dock's processing settings as a user sees them."""
    return {
        "resolution_cm_px": dock.doubleSpinBox_resolution_cm_px.value(),
        "tile_size_px": dock.spinBox_tileSize_px.value(),
        "overlap_percent": dock.spinBox_processingTileOverlapPercentage.value(),
        "threshold_enabled": dock.checkBox_pixelClassEnableThreshold.isChecked(),
        "threshold": dock.doubleSpinBox_probabilityThreshold.value(),
        "model_type": dock.comboBox_modelType.currentText(),
    }


def main(src: str, model_path: str, raster: str, result_path: str) -> dict:
    sys.path.insert(0, src)
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

    app = QgsApplication([], True)
    app.initQgis()
    import numpy as np
    import onnxruntime
    from deepness.common.processing_parameters.map_processing_parameters import ProcessedAreaType
    from deepness.deepness_dockwidget import DeepnessDockWidget
    from deepness.processing.map_processor.map_processing_result import MapProcessingResultSuccess
    from deepness.processing.models.model_types import ModelDefinition

    out: dict = {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    layer = QgsRasterLayer(raster, "naip")
    if not layer.isValid():
        raise SystemExit(f"QGIS cannot open {raster}")
    QgsProject.instance().addMapLayer(layer)

    iface = mock.MagicMock()
    dock = DeepnessDockWidget(iface)
    dock.lineEdit_modelPath.setText(model_path)
    dock._load_model_and_display_info()  # what choosing the file with "Browse" does
    model = dock._model
    out["model_class"] = type(model).__name__
    out["input_shape"] = list(model.get_input_shape())
    out["output_shapes"] = [list(s) for s in model.get_output_shapes()]
    out["model_info"] = dock.label_modelInfo.text()
    out["before_defaults"] = _ui_settings(dock)
    dock.pushButton_loadDefaultModelParameters.click()  # "Load default parameters"
    out["after_defaults"] = _ui_settings(dock)

    dock.mMapLayerComboBox_inputLayer.setLayer(layer)
    dock.comboBox_processedAreaSelection.setCurrentText(ProcessedAreaType.ENTIRE_LAYER.value)
    params = dock.get_inference_parameters()
    out["overlap_px"] = params.processing_overlap_px
    out["batch_size"] = params.batch_size
    processor_class = ModelDefinition.get_definition_for_params(params).map_processor_class
    out["processor"] = processor_class.__name__
    processor = processor_class(rlayer=layer, vlayer_mask=None, map_canvas=iface.mapCanvas(), params=params)
    start = time.perf_counter()
    processor.run()  # what QGIS's task manager calls in its worker thread
    result = processor._processing_result
    out["seconds"] = round(time.perf_counter() - start, 2)
    if not isinstance(result, MapProcessingResultSuccess):
        out["error"] = f"{result.message}: {type(result.exception).__name__}: {result.exception}"
        return out
    result.gui_delegate()  # the class layers, as the finished task adds them in the GUI thread
    image = processor.get_result_img()
    np.save(result_path, np.asarray(image))
    out["result_shape"] = list(image.shape)
    group = QgsProject.instance().layerTreeRoot().findGroup("model_output")
    layers = [node.layer() for node in group.findLayers()] if group else []
    out["class_layers"] = {
        lyr.name(): lyr.featureCount() for lyr in layers if isinstance(lyr, QgsVectorLayer)
    }
    out["message"] = result.message
    return out


if __name__ == "__main__":
    report = main(*sys.argv[1:5])
    print(MARKER + json.dumps(report), flush=True)
