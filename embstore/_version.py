"""The installed version of embstore (imports nothing from the package: any module may use it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embstore")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"
