"""nginx configuration shared by the HTTP backend and the nginx stream pair.

Every nginx here runs in the foreground with one worker, its own prefix
directory under the run's temp dir, and no access log, so the backend costs as
little as nginx can and the stream pair is configured like the other peers.
"""

from __future__ import annotations

from pathlib import Path

from bench.procs import Proc, ProcessSet

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def main_block(prefix: Path, *, stream: bool) -> str:
    """The top of nginx.conf: one worker, foreground, files under `prefix`."""
    load = f"load_module {STREAM_MODULE};\n" if stream and STREAM_MODULE.exists() else ""
    return (f"{load}user root;\nworker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log warn;\nworker_rlimit_nofile 20000;\n"
            "events { worker_connections 16384; multi_accept on; }\n")


def start_nginx(procs: ProcessSet, name: str, conf_text: str, workdir: Path) -> Proc:
    """Write <workdir>/<name>/nginx.conf and start nginx on it (prefix there)."""
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    return procs.start(name, ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")])
