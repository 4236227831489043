"""slrpipe: self-supervised sign language recognition from 2D pose, as a DVC pipeline."""

__version__ = "0.1.0"
