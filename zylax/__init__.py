"""zylax: make image models small enough to ship inside a phone app."""

__version__ = "0.1.0"
