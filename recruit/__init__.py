"""recruit: find, screen and invite trial participants from UK primary-care records."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recruit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
