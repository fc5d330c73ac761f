"""Follow a growing ``.jsonl`` or ``.csv`` file: the records appended since the last poll."""

import csv
import io
import json
import os

from tfdeploy.errors import TextDataError

FORMATS = (".jsonl", ".csv")


class Follower:
    """Read the complete records appended to a JSONL or CSV file since the last `poll`.

    Only whole lines are read (a line still being written waits for its
    newline). A CSV file's first line is its header. When the file shrinks
    (rotated or truncated) reading starts again from its beginning.

    Args:
        path: the file (it may not exist yet; `poll` returns nothing until it does).
        fields: keys / columns each record must have. Defaults to ("time", "text").
        optional: keys / columns kept when present (None otherwise).
            Defaults to ("label",).
        from_start: read what the file already holds on the first poll; False
            starts at its current end (``tail -f``). Defaults to True.

    Raises:
        TextDataError: an extension other than ``.jsonl``/``.csv``; from `poll`, a
            line that is not a JSON object or lacks a field (the line number says which).

    Example:
        >>> follower = Follower("news.jsonl")
        >>> for record in follower.poll():  # call again later for the new lines
        ...     print(record["time"], record["text"])
    """

    def __init__(self, path, fields=("time", "text"), optional=("label",), from_start=True):
        self.path = os.fspath(path)
        self.kind = os.path.splitext(self.path)[1].lower()
        if self.kind not in FORMATS:
            raise TextDataError(f"Cannot follow {self.path!r}: unknown extension "
                                f"{self.kind or 'none'!r}. Supported files end in {list(FORMATS)}.")
        self.fields, self.optional = tuple(fields), tuple(optional)
        self.offset = None if from_start else self._size()
        self.line = 0
        self.header = None
        self.partial = b""

    def _size(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def poll(self):
        """The records completed since the last call (a list, possibly empty)."""
        size = self._size()
        if self.offset is None:
            self.offset = 0
        if size < self.offset:  # truncated or replaced: start over
            self.offset, self.line, self.header, self.partial = 0, 0, None, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        out = []
        for raw in lines:
            self.line += 1
            text = raw.decode("utf-8", errors="strict").rstrip("\r")
            if not text.strip():
                continue
            record = self._record(text)
            if record is not None:
                out.append(record)
        return out

    def _record(self, text):
        if self.kind == ".csv":
            values = next(csv.reader(io.StringIO(text)))
            if self.header is None:
                self.header = values
                missing = [c for c in self.fields if c not in values]
                if missing:
                    raise TextDataError(f"{self.path!r}: the header {values} has no column(s) "
                                        f"{missing}; it must name {list(self.fields)}.")
                return None
            if len(values) < len(self.header):
                raise TextDataError(f"{self.path!r} line {self.line}: the row has fewer fields "
                                    "than the header; quote texts that contain commas.")
            row = dict(zip(self.header, values))
            return {**{f: row[f] for f in self.fields},
                    **{f: row.get(f) or None for f in self.optional}}
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TextDataError(f"{self.path!r} line {self.line} is not valid JSON ({exc.msg}); "
                                f"each line must be one object with {list(self.fields)}.") \
                from None
        if not isinstance(obj, dict) or any(f not in obj for f in self.fields):
            raise TextDataError(f"{self.path!r} line {self.line}: expected an object with the "
                                f"keys {list(self.fields)}, received {text[:80]!r}.")
        return {**{f: obj[f] for f in self.fields}, **{f: obj.get(f) for f in self.optional}}
