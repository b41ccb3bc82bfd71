"""Just enough Markdown for the spec's clause texts and the conventions tables: paragraphs, indented
and fenced code, bullet lists, pipe tables, `code`, **bold**, *emphasis* and [links](url). Everything
is escaped first, so no text from a page or a results file can inject markup into the report."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_INLINE = [
    (re.compile(r"`([^`]+)`"), lambda m: f"<code>{m[1]}</code>"),
    (
        re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)"),
        lambda m: f'<a href="{m[2]}" rel="noreferrer">{m[1]}</a>',
    ),
    (re.compile(r"\*\*([^*]+)\*\*"), lambda m: f"<strong>{m[1]}</strong>"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), lambda m: f"<em>{m[1]}</em>"),
]


def inline(text: str) -> Markup:
    html = str(escape(text))
    code: list[str] = []

    def keep(match):  # code spans first, so nothing inside them is read as emphasis or links
        code.append(f"<code>{match[1]}</code>")
        return f"\x00{len(code) - 1}\x00"

    html = _INLINE[0][0].sub(keep, html)
    for pattern, repl in _INLINE[1:]:
        html = pattern.sub(repl, html)
    return Markup(re.sub(r"\x00(\d+)\x00", lambda m: code[int(m[1])], html))


def cells(row: str) -> list[str]:
    """The cells of one pipe-table row (`\\|` is a literal bar)."""
    row = row.strip().removeprefix("|")
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [p.strip().replace("\\|", "|") for p in re.split(r"(?<!\\)\|", row)]


def table(lines: list[str]) -> Markup:
    head, body = cells(lines[0]), [cells(line) for line in lines[2:]]
    out = [
        '<div class="scroll"><table><thead><tr>',
        *(f'<th scope="col">{inline(c)}</th>' for c in head),
        "</tr></thead><tbody>",
    ]
    for row in body:
        out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>")
    return Markup("".join(out) + "</tbody></table></div>")


def render(text: str) -> Markup:
    """Block-level Markdown to HTML."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), len(lines))
            out.append(f"<pre><code>{escape(chr(10).join(lines[i + 1 : j]))}</code></pre>")
            i = j + 1
        elif line.startswith("    "):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append(
                f"<pre><code>{escape(chr(10).join(line[4:] for line in lines[i:j]).rstrip())}</code></pre>"
            )
            i = j
        elif line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(str(table(lines[i:j])))
            i = j
        elif re.match(r"\s*[-*] ", line):
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                if re.match(r"\s*[-*] ", lines[i]):
                    items.append(re.sub(r"^\s*[-*] ", "", lines[i]))
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
        else:
            j = i
            while (
                j < len(lines)
                and lines[j].strip()
                and not lines[j].startswith(("```", "    ", "|"))
                and not re.match(r"\s*[-*] ", lines[j])
            ):
                j += 1
            out.append(f"<p>{inline(' '.join(line.strip() for line in lines[i:j]))}</p>")
            i = j
    return Markup("\n".join(out))
