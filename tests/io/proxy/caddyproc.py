"""A real Caddy (``/usr/bin/caddy``, Debian's 2.6) for tests: started from a Caddyfile or
from JSON on free loopback ports (admin endpoint on its own free port), HOME and the XDG
directories inside the test's tmp dir (its autosave never touches the user's), always
stopped. Never touches a system caddy service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.procs import free_port as free_port  # re-exported: tests import it from here
from tests.procs import stop_process

CADDY = shutil.which("caddy") or "/usr/bin/caddy"


def dial(url: str) -> str:
    """``http://127.0.0.1:PORT`` → ``127.0.0.1:PORT``."""
    return url.split("://", 1)[1].rstrip("/")


def caddyfile(admin: int | None, http: int, v1: str, other: str | None = None,
              extra: str = "") -> str:
    """The v1/v2 setup of the README: ``/v1/*`` → v1 in a ``handle`` block of a site."""
    admin_line = f"admin 127.0.0.1:{admin}" if admin else "admin off"
    other_block = (f"\thandle /other/* {{\n\t\treverse_proxy {other}\n\t}}\n" if other else "")
    return (f"{{\n\t{admin_line}\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}}\n\n"
            f":{http} {{\n\thandle /v1/* {{\n\t\treverse_proxy {v1}\n\t}}\n{other_block}{extra}"
            f"\thandle {{\n\t\trespond \"no route\" 404\n\t}}\n}}\n")


def json_config(admin: int, http: int, v1: str, *, second_v1_route: bool = False
                ) -> dict[str, Any]:
    """A hand-written JSON config: ``@id`` routes with the reverse_proxy directly in them."""
    routes: list[dict[str, Any]] = [
        {"@id": "api", "match": [{"path": ["/v1/*"]}],
         "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": v1}]}],
         "terminal": True},
    ]
    if second_v1_route:
        routes.append({"match": [{"path": ["/v1/*"]}],
                       "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": v1}]}]})
    routes.append({"handle": [{"handler": "static_response", "status_code": 404,
                               "body": "no route"}]})
    return {"admin": {"listen": f"127.0.0.1:{admin}"},
            "apps": {"http": {"servers": {"api": {"listen": [f"127.0.0.1:{http}"],
                                                  "routes": routes,
                                                  "automatic_https": {"disable": True}}}}}}


class CaddyProcess:
    """``caddy run --config FILE`` in its own session; ``admin_url`` / ``proxy_url``."""

    def __init__(self, workdir: Path, *, text: str | None = None,
                 config: dict[str, Any] | None = None, admin: int | None = None,
                 http: int | None = None) -> None:
        self.workdir = workdir
        self.admin_port = admin
        self.http_port = http
        self.text, self.config = text, config
        self.proc: subprocess.Popen[bytes] | None = None
        self.path = workdir / ("Caddyfile" if text is not None else "caddy.json")
        self.logfile = workdir / "caddy.log"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        if self.text is not None:
            self.path.write_text(self.text, encoding="utf-8")
            argv = [CADDY, "run", "--config", str(self.path), "--adapter", "caddyfile"]
        else:
            self.path.write_bytes(orjson.dumps(self.config))
            argv = [CADDY, "run", "--config", str(self.path)]
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
                   XDG_DATA_HOME=str(home / "data"))
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.workdir, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        for _ in range(300):  # bounded: ready when the site answers (and the admin API)
            if self.proc.poll() is not None:
                break
            if self._up():
                return
            time.sleep(0.05)
        tail = self.logfile.read_text(errors="replace")[-2000:]
        self.stop()
        pytest.fail(f"caddy did not start ({argv}):\n{tail}", pytrace=False)

    def _up(self) -> bool:
        urls = [self.proxy_url + "/"]
        if self.admin_port and "admin off" not in (self.text or ""):
            urls.append(self.admin_url + "/config/")
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    pass
            except urllib.error.HTTPError:
                pass  # it answered
            except OSError:
                return False
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)

    def live_config(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.admin_url + "/config/", timeout=5) as resp:
            data: dict[str, Any] = orjson.loads(resp.read())
            return data


@contextmanager
def running_caddy(workdir: Path, **kwargs: Any) -> Iterator[CaddyProcess]:
    kwargs.setdefault("http", free_port())
    caddy = CaddyProcess(workdir, **kwargs)
    caddy.start()
    try:
        yield caddy
    finally:
        caddy.stop()


def start_caddyfile(workdir: Path, v1: str, *, admin_off: bool = False, other: str | None = None,
                    extra: str = "") -> Any:
    """Context manager: Caddy from a Caddyfile, ``/v1/*`` → ``v1`` (a dial address)."""
    admin = None if admin_off else free_port()
    http = free_port()
    return running_caddy(workdir, text=caddyfile(admin, http, v1, other, extra), admin=admin,
                         http=http)


def start_json(workdir: Path, v1: str, **kwargs: Any) -> Any:
    admin, http = free_port(), free_port()
    return running_caddy(workdir, config=json_config(admin, http, v1, **kwargs), admin=admin,
                         http=http)
