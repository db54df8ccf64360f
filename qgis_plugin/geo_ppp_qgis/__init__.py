"""geo_ppp's QGIS plugin: a Processing provider that runs the geo-ppp executable."""


def classFactory(iface):  # noqa: N802 - QGIS's entry point
    """QGIS calls this to load the plugin."""
    from .plugin import GeoPPPPlugin

    return GeoPPPPlugin(iface)
