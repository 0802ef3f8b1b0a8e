"""Slidewise: landslide susceptibility, mapping and detection for QGIS.

This file must stay light: the engine environment imports the package
``slidewise`` too, and it has no QGIS.
"""


def classFactory(iface):
    """QGIS entry point: create the plugin object."""
    from slidewise.plugin import SlidewisePlugin

    return SlidewisePlugin(iface)
