"""gogate: the BuzzChat WebSocket gateway.

Clients hold a WebSocket and authenticate with a JWT; the gateway validates it with the
backend, forwards the user's writes to the backend, and broadcasts the results to every online
member of the chat, on every device.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the version of the installed distribution, declared once in pyproject.toml
    __version__ = version("gogate")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"
__all__ = ["__version__"]
