#!/usr/bin/env python3
"""A small demo API for `make run`: echoes requests and misbehaves on purpose.

  /boom   500 with a Java stack trace and leaky headers (the errors filter masks it)
  /leak   404 whose body is a Python traceback (masked: it looks like a leak)
  /gone   a clean 404 (passes unchanged)
  other   200 echo of method, path and the headers the upstream received
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

JAVA_TRACE = (
    "java.lang.NullPointerException: customer was null\n"
    "\tat com.acme.orders.OrderService.place(OrderService.java:42)\n"
    "\tat com.acme.orders.OrderController.post(OrderController.java:17)\n"
)
PY_TRACE = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/views.py", line 12, in get_user\n'
    "KeyError: 'user_id'\n"
)


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-upstream/1.0"

    def _send(self, status, body, ctype, extra=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-powered-by", "Express")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path == "/boom":
            self._send(500, JAVA_TRACE, "text/plain", [("x-backend-host", "orders-7f9c.internal")])
        elif path == "/leak":
            self._send(404, PY_TRACE, "text/plain")
        elif path == "/gone":
            self._send(404, '{"error":"no such order"}', "application/json")
        else:
            echo = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_len": len(body),
            }
            self._send(200, json.dumps(echo, indent=2) + "\n", "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, fmt, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 10080
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
