"""The plugin's Processing setting: the geo-ppp executable (Settings > Options > Processing > Providers).

Its own module, imported by both the provider (which registers the setting) and the algorithms
(which read it), so neither imports the other.
"""

#: the Processing setting naming the executable
EXE_SETTING = "GEO_PPP_EXECUTABLE"


def executable_setting():
    """The executable set in the Processing options, or None."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # Processing not loaded
        return None
    return ProcessingConfig.getSetting(EXE_SETTING) or None
