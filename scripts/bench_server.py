"""moto's S3 behind a keep-alive HTTP/1.1 server, for scripts/bench.

moto_server (werkzeug's development server) sends `Connection: close` on every answer
(S3-NOTES 38); real S3 keeps connections open, and connection reuse only shows against a
server that does too. This serves the same WSGI application as moto_server under
waitress, which keeps HTTP/1.1 connections alive. Usage: bench_server.py PORT [THREADS].
Logs one line per request to stdout, as moto_server does, so the harness can count them.
"""
import os
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from waitress import serve

port = int(sys.argv[1])
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
# As moto/server.py sets them up.
os.environ.setdefault("MOTO_PORT", str(port))
moto_app = DomainDispatcherApplication(create_backend_app)
moto_app.debug = True


def app(environ, start_response):
    """moto, with one log line per request: `"METHOD PATH PROTOCOL" STATUS`."""
    status_of = []

    def start(status, headers, exc_info=None):
        status_of.append(status.split(" ", 1)[0])
        return start_response(status, headers, exc_info)

    result = moto_app(environ, start)
    sys.stdout.write(f'"{environ["REQUEST_METHOD"]} {environ.get("PATH_INFO", "")} '
                     f'{environ.get("SERVER_PROTOCOL", "")}" {status_of[0] if status_of else "-"}\n')
    sys.stdout.flush()
    return result


serve(app, host="127.0.0.1", port=port, threads=threads, connection_limit=1000,
      channel_timeout=120, ident="moto-keepalive")
