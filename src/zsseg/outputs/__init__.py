"""Writing results: label PNGs, overlays with a legend, JSON records; every file marked as
zsseg's and written atomically."""
