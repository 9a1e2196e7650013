"""gogate: the BuzzChat WebSocket gateway.

Clients hold a WebSocket and authenticate with a JWT; the gateway validates it with the
backend, forwards the user's writes to the backend, and broadcasts the results to every online
member of the chat, on every device.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
