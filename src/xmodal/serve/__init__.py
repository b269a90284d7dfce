"""HTTP serving: the search API and web page, and the Immich-compatible machine-learning endpoint."""

from xmodal.serve.app import create_app
from xmodal.serve.server import make_server, run_server

__all__ = ["create_app", "make_server", "run_server"]
