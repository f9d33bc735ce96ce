"""The intake benchmark's baseline: a Flask endpoint that answers 200 and does no work.

Served by the same gunicorn settings as the bridge (`-c python:bridge.process.gunicorn_conf`). It reads the
body, as any endpoint must (closing a socket with unread bytes turns the close into a reset), and
answers the same JSON shape as the bridge's intake.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask("bare")


@app.post("/webhooks/github")
def github() -> tuple[Response, int]:
    request.get_data(cache=False)
    return jsonify({"status": "accepted", "event_id": 0}), 200


@app.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})
