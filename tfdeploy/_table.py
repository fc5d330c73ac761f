"""The one fixed-width text table renderer (compression report, plans, verify, bench, quickstart).

    print(render(["layer", "params"], [["conv1", 80], ["dense", 650]], align="lr"))
"""


def render(header, rows, align=None, sep="  ", rule="-", rule_sep=None, title=None):
    """Render ``rows`` under ``header`` as aligned text.

    Args:
        header: column titles.
        rows: lists of cells (anything ``str`` accepts), one per column.
        align: one character per column, "l" (left) or "r" (right). Defaults to
            all left.
        sep: text between columns. Defaults to two spaces.
        rule: character of the line under the header; "" for none. Defaults to "-".
        rule_sep: text between columns on the rule line. Defaults to ``sep`` with
            every character replaced by ``rule`` when ``sep`` is blank, else ``sep``.
        title: a line printed above the header. Defaults to None.

    Returns:
        The table as one string (trailing blanks removed from every line).
    """
    header = [str(c) for c in header]
    cells = [[str(c) for c in row] for row in rows]
    align = align or "l" * len(header)
    if len(align) != len(header) or any(len(r) != len(header) for r in cells):
        raise ValueError(f"A table of {len(header)} columns needs {len(header)} cells per row "
                         f"and alignment characters, received align={align!r}.")
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(row):
        return sep.join(c.rjust(w) if a == "r" else c.ljust(w)
                        for c, w, a in zip(row, widths, align)).rstrip()

    lines = [title] if title else []
    lines.append(line(header))
    if rule:
        joiner = rule_sep if rule_sep is not None else (
            rule * len(sep) if not sep.strip() else sep)
        lines.append(joiner.join(rule * w for w in widths))
    lines += [line(r) for r in cells]
    return "\n".join(lines)
