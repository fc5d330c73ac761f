"""Read labelled text: Keras's ``text_dataset_from_directory`` layout, CSV and JSON Lines.

Three layouts, one result (texts, integer labels, class names):

- a directory ``DIR/<class>/*.txt`` (one document per file, as
  ``keras.utils.text_dataset_from_directory`` reads it);
- a ``.csv`` file with a header holding the columns ``text`` and ``label``;
- a ``.jsonl`` file, one JSON object per line with the keys ``text`` and ``label``.

Labels may be class names (strings, sorted to make indices) or integers
(``0 .. n-1``, kept as they are). Every problem raises `TextDataError` naming
the file, the line and the fix.
"""

import csv
import io
import json
import os

import numpy as np

from tfdeploy.errors import TextDataError

TEXT_COLUMN, LABEL_COLUMN = "text", "label"
FILE_FORMATS = (".csv", ".jsonl")


def _read_utf8(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise TextDataError(
            f"{path!r} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}, "
            f"line {line}). Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`.") \
            from None
    return text


def _from_directory(directory):
    class_names = sorted(d for d in os.listdir(directory)
                         if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
    if not class_names:
        raise TextDataError(
            f"Text directory {directory!r} has no class sub-folders. Put each class's .txt "
            "files in their own folder: DIR/<class>/*.txt (Keras's text_dataset_from_directory "
            "layout).")
    texts, labels, empty = [], [], []
    for index, name in enumerate(class_names):
        folder = os.path.join(directory, name)
        files = sorted(f for f in os.listdir(folder)
                       if f.endswith(".txt") and not f.startswith("."))
        if not files:
            empty.append(name)
        for fname in files:
            texts.append(_read_utf8(os.path.join(folder, fname)))
            labels.append(index)
    if empty:
        raise TextDataError(
            f"Class folder(s) {empty} in {directory!r} contain no .txt files. Add documents "
            "or remove the empty folders.")
    return texts, labels, class_names


def _rows_csv(path, content, fields, optional=()):
    reader = csv.DictReader(io.StringIO(content))
    columns = reader.fieldnames or []
    missing = [c for c in fields if c not in columns]
    if missing:
        raise TextDataError(
            f"CSV file {path!r} has no column(s) {missing}; its header is {columns}. The first "
            f"line must name the columns, including {list(fields)}.")
    rows = []
    for number, row in enumerate(reader, start=2):
        if any(row.get(f) is None for f in fields):
            raise TextDataError(f"{path!r} line {number}: the row has fewer fields than the "
                                "header; quote texts that contain commas.")
        rows.append((number, {**{f: row[f] for f in fields},
                              **{f: row.get(f) or None for f in optional}}))
    return rows


def _rows_jsonl(path, content, fields, optional=()):
    rows = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TextDataError(f"{path!r} line {number} is not valid JSON ({exc.msg}); each "
                                f"line must be one object with the keys {list(fields)}.") \
                from None
        if not isinstance(obj, dict):
            raise TextDataError(f"{path!r} line {number}: expected a JSON object, received "
                                f"{type(obj).__name__}.")
        missing = [k for k in fields if k not in obj]
        if missing:
            raise TextDataError(f"{path!r} line {number} has no key(s) {missing}; it has "
                                f"{sorted(obj)}. Each object needs {list(fields)}.")
        rows.append((number, {**{f: obj[f] for f in fields},
                              **{f: obj.get(f) for f in optional}}))
    return rows


def read_records(path, fields, optional=()):
    """Read the ``fields`` of every record of a UTF-8 ``.csv`` (with header) or ``.jsonl`` file.

    Args:
        path: the file.
        fields: the column names / keys every record must have.
        optional: column names / keys a record may have; a record without one
            (or with an empty CSV cell) gets None there. Defaults to ().

    Returns:
        A list of ``(line_number, {field: value})``.

    Raises:
        TextDataError: missing file, unknown extension, bad encoding, bad JSON,
            missing columns/keys, or no records at all.
    """
    if not os.path.isfile(path):
        raise TextDataError(f"File {path!r} does not exist (expected a .csv or .jsonl file with "
                            f"the fields {list(fields)}).")
    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_FORMATS:
        raise TextDataError(
            f"Cannot read {path!r}: unknown extension {ext or 'none'!r}. Supported files end "
            f"in {list(FILE_FORMATS)}.")
    content = _read_utf8(path)
    rows = (_rows_csv if ext == ".csv" else _rows_jsonl)(path, content, tuple(fields),
                                                         tuple(optional))
    if not rows:
        raise TextDataError(f"{path!r} holds no records. Add rows with the fields "
                            f"{list(fields)}.")
    return rows


def _labels_of(path, rows):
    raw = [label for _, _, label in rows]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        n = max(raw) + 1
        if min(raw) < 0:
            raise TextDataError(f"{path!r}: integer labels must be >= 0, found {min(raw)}.")
        return raw, [str(i) for i in range(n)]
    bad = [(n, v) for n, _, v in rows if not isinstance(v, (str, int)) or isinstance(v, bool)
           or (isinstance(v, str) and not v.strip())]
    if bad:
        number, value = bad[0]
        raise TextDataError(f"{path!r} line {number}: label {value!r} is not a class name or "
                            "integer (empty labels are not allowed).")
    names = sorted({str(v).strip() for v in raw})
    index = {n: i for i, n in enumerate(names)}
    return [index[str(v).strip()] for v in raw], names


def read_texts(path):
    """Read labelled texts from a class directory, a ``.csv`` or a ``.jsonl`` file.

    Args:
        path: a directory ``DIR/<class>/*.txt``, or a ``.csv`` / ``.jsonl`` file
            with ``text`` and ``label`` fields.

    Returns:
        ``(texts, labels, class_names)``: a list of str, an int64 array, and the
        class names in index order.

    Raises:
        TextDataError: missing path, unknown extension, bad encoding, missing
            columns/keys, an empty file, empty texts or bad labels.
    """
    if os.path.isdir(path):
        texts, labels, class_names = _from_directory(path)
        rows = [(i + 1, t, label) for i, (t, label) in enumerate(zip(texts, labels))]
    elif os.path.isfile(path):
        rows = [(n, r[TEXT_COLUMN], r[LABEL_COLUMN])
                for n, r in read_records(path, (TEXT_COLUMN, LABEL_COLUMN))]
        labels, class_names = _labels_of(path, rows)
        texts = [t for _, t, _ in rows]
    else:
        raise TextDataError(
            f"Text data {path!r} does not exist. Pass a directory DIR/<class>/*.txt or a "
            ".csv/.jsonl file with 'text' and 'label' fields; "
            "`tfdeploy.data.write_sentiment_corpus(DIR)` writes the bundled example.")
    for (number, text, _) in rows:
        if not isinstance(text, str):
            raise TextDataError(f"{path!r} line/file {number}: text must be a string, received "
                                f"{type(text).__name__}.")
        if not text.strip():
            raise TextDataError(f"{path!r} line/file {number}: the text is empty. Remove the "
                                "row or fill it in.")
    return list(texts), np.asarray(labels, dtype=np.int64), list(class_names)


def text_dataset(path, batch_size=32, shuffle=False, seed=0):
    """Load labelled texts as a batched ``tf.data.Dataset`` of ``(strings, labels)``.

    Args:
        path: a directory ``DIR/<class>/*.txt`` or a ``.csv`` / ``.jsonl`` file
            (see `read_texts`).
        batch_size: batch size. Defaults to 32.
        shuffle: reshuffle every epoch. Defaults to False.
        seed: shuffle seed. Defaults to 0.

    Returns:
        A ``tf.data.Dataset`` with attributes ``class_names``, ``num_examples``
        and ``texts`` / ``labels`` (the raw lists, for vocabularies and metrics).

    Raises:
        TextDataError: see `read_texts`; also a non-positive ``batch_size``.

    Example:
        >>> train = text_dataset("data/sentiment/train.jsonl", shuffle=True)
    """
    from tfdeploy._keras import tf

    if int(batch_size) <= 0:
        raise TextDataError(f"batch_size must be a positive integer, received {batch_size!r}.")
    texts, labels, class_names = read_texts(path)
    ds = tf.data.Dataset.from_tensor_slices((texts, labels))
    if shuffle:
        ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)
    ds.class_names, ds.num_examples = class_names, len(texts)
    ds.texts, ds.labels = texts, labels
    return ds
