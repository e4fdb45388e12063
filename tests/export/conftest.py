"""The npm runtime and a static file server for the export tests of browser and JS targets (the
digits packages come from tests/plugins/digits.py)."""

from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="session")
def npm_dir() -> Path:
    """The pinned npm packages (onnxruntime-web/node, @tensorflow/tfjs, playwright-core)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the web and tfjs targets need Node.js and npm (apt-get install nodejs npm)")
    from ember.export.web import ensure_npm_runtime

    return ensure_npm_runtime()


@pytest.fixture
def static_server():
    """``serve(folder) -> "http://127.0.0.1:PORT"``: a static file server for the test's duration."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
