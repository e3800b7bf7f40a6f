"""pachhook: rebuild only the images that changed, update only the pipelines that use them."""

__version__ = "0.1.0"
