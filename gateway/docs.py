"""The API docs page: Swagger UI (assets from the swagger-ui-py package) rendering the generated OpenAPI document."""
from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

DOCS_PATH = "/docs"
# file → content type; the assets are copied next to envoy.yaml, so a gateway container without Python can serve them
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
PAGE = {"index.html": "text/html; charset=utf-8", "init.js": "text/javascript; charset=utf-8"}

_INDEX = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="{docs}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{docs}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{docs}/swagger-ui-bundle.js"></script>
  <script src="{docs}/init.js"></script>
</body>
</html>
"""
_INIT = """window.ui = SwaggerUIBundle({{ url: {openapi!r}, dom_id: "#swagger-ui", deepLinking: true }});\n"""


def assets_dir() -> Path:
    """Where the installed swagger-ui-py package keeps Swagger UI's distribution files."""
    return Path(str(importlib.resources.files("swagger_ui") / "static"))


def write_docs(out: Path, *, openapi_path: str, title: str) -> Path:
    """Write the docs page and its assets into out (a directory); returns out."""
    out.mkdir(parents=True, exist_ok=True)
    source = assets_dir()
    for name in ASSETS:
        shutil.copyfile(source / name, out / name)
    (out / "index.html").write_text(_INDEX.format(title=title, docs=DOCS_PATH))
    (out / "init.js").write_text(_INIT.format(openapi=openapi_path))
    return out
