"""The "geo_ppp" Processing provider (id ``geoppp``); it registers the executable setting (settings.py)."""

from qgis.core import QgsProcessingProvider

from .algorithms import EvaluateAlgorithm, SegmentAlgorithm
from .settings import EXE_SETTING


class GeoPPPProvider(QgsProcessingProvider):
    """geo_ppp's algorithms: segment and evaluate."""

    def id(self):  # noqa: D102
        return "geoppp"

    def name(self):  # noqa: D102
        return "geo_ppp"

    def longName(self):  # noqa: D102, N802
        return "geo_ppp: land cover from weak labels with a diffusion prior"

    def load(self):  # noqa: D102
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:
            return super().load()
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                EXE_SETTING,
                "geo-ppp executable (default: $GEO_PPP_EXE, else geo-ppp on PATH)",
                "",
                valuetype=Setting.FILE,
            )
        )
        ProcessingConfig.readSettings()
        return super().load()

    def unload(self):  # noqa: D102
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(EXE_SETTING)
        except ImportError:
            pass
        super().unload()

    def loadAlgorithms(self):  # noqa: D102, N802
        self.addAlgorithm(SegmentAlgorithm())
        self.addAlgorithm(EvaluateAlgorithm())
