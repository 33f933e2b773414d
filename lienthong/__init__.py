"""lienthong: the inter-agency data integration platform's core library.

Submodules own one concern each: settings, warehouse database, data contracts, administrative units,
standardization, quality, publication, and the demo/CLI entry points.
"""

__version__ = "0.1.0"
