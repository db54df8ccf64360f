"""The plugin object: registers the Processing provider (also in ``qgis_process``, without a GUI)."""

from qgis.core import QgsApplication

from .provider import GeoPPPProvider


class GeoPPPPlugin:
    """Adds the geo_ppp provider to the Processing toolbox."""

    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 - QGIS API
        """Register the provider (called by QGIS and by qgis_process)."""
        if self.provider is not None:
            return
        self.provider = GeoPPPProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 - QGIS API
        """Nothing but the provider: the algorithms live in the toolbox."""
        self.initProcessing()

    def unload(self):
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
