"""Where alert events go: the log, a JSONL file, a webhook (POST with retries, nothing lost).

A sink has ``emit(event)`` and ``close()``. An event is a JSON-serialisable dict; the
monitor gives each one an ``id`` so a receiver can drop a repeated delivery.
"""

import collections
import json
import logging
import os
import time
import urllib.error
import urllib.request

from tfdeploy.errors import DeliveryError

log = logging.getLogger("tfdeploy.monitor")


class LogSink:
    """Log each event on the ``tfdeploy.monitor`` logger (alerts as warnings)."""

    def __init__(self, logger=None):
        self.logger = logger or log

    def emit(self, event):
        level = logging.WARNING if event.get("event") == "alert" else logging.INFO
        self.logger.log(level, "%s %s %s", event.get("time"), str(event.get("event")).upper(),
                        json.dumps(event, sort_keys=True, default=str))

    def close(self):
        pass


class JsonlSink:
    """Append each event as one JSON line to ``path`` (flushed and fsynced per event)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def emit(self, event):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self):
        pass


class WebhookSink:
    """POST each event as JSON to ``url``; retried with backoff, delivered in order.

    A delivery that fails (no connection, a timeout, HTTP 429 or 5xx) is
    retried ``retries`` times with exponential backoff. An event still not
    delivered stays queued, and every later `emit` first re-sends the queue in
    order, so a receiver that comes back gets every alert; `close` keeps
    trying for ``close_timeout`` seconds and raises `DeliveryError` if events
    are still pending (they are in ``pending``). Any other 4xx is a bad request
    that retrying cannot fix: it raises at once.

    Args:
        url: the receiver, ``http(s)://host:port/path``.
        retries: re-sends of one event per attempt. Defaults to 5.
        backoff: seconds before the first re-send, doubled each time (at most
            5 s). Defaults to 0.2.
        timeout: seconds per request. Defaults to 5.
        close_timeout: seconds `close` keeps re-sending. Defaults to 30.
        headers: extra HTTP headers (e.g. authorisation). Defaults to None.

    Raises:
        ValueError: a URL that is not http(s).
    """

    def __init__(self, url, retries=5, backoff=0.2, timeout=5.0, close_timeout=30.0,
                 headers=None):
        if not str(url).startswith(("http://", "https://")):
            raise ValueError(f"webhook url must start with http:// or https://, received "
                             f"{url!r}.")
        self.url, self.retries, self.backoff = str(url), int(retries), float(backoff)
        self.timeout, self.close_timeout = float(timeout), float(close_timeout)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.pending = collections.deque()
        self.delivered = 0
        self.attempts = 0

    def _post(self, event):
        self.attempts += 1
        request = urllib.request.Request(self.url, data=json.dumps(event, default=str).encode(),
                                         headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                return False
            raise DeliveryError(f"Webhook {self.url} refused an alert with HTTP {exc.code} "
                                f"({exc.reason}); check the URL and the receiver's "
                                "authorisation.") from exc
        except (urllib.error.URLError, OSError):
            return False

    def _flush(self, retries):
        while self.pending:
            delay = self.backoff
            for attempt in range(retries + 1):
                if self._post(self.pending[0]):
                    break
                if attempt < retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
            else:
                return False
            self.pending.popleft()
            self.delivered += 1
        return True

    def emit(self, event):
        self.pending.append(event)
        if not self._flush(self.retries):
            log.error("webhook %s unreachable after %d retries; %d alert(s) queued for the "
                      "next delivery", self.url, self.retries, len(self.pending))

    def close(self):
        deadline = time.monotonic() + self.close_timeout
        while self.pending and time.monotonic() < deadline:
            if not self._flush(self.retries):
                time.sleep(min(self.backoff, max(0.0, deadline - time.monotonic())))
        if self.pending:
            raise DeliveryError(f"Webhook {self.url}: {len(self.pending)} alert(s) still "
                                f"undelivered after {self.close_timeout:g} s of retries; they "
                                "are in WebhookSink.pending (and in the JSONL sink, if one is "
                                "set).")
