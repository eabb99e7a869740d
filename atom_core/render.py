"""Untrusted text, shown without making the browser fetch anything.

Model replies, reasoning, server error bodies, model and instance names and imported data are
written by someone else. Streamlit renders Markdown images everywhere Markdown goes (st.markdown,
alerts, captions, button labels, radio options, tooltips), and an image loads the moment it is
drawn: a prompt-injected model can put the conversation into an image URL and exfiltrate it.

`safe_markdown` is the one function that turns untrusted Markdown into Markdown that loads
nothing: it parses with markdown-it-py (CommonMark plus what GFM adds, as Streamlit's
react-markdown + remark-gfm reads it: tables, strikethrough, footnotes) and rewrites
every image — inline `![a](u)`, reference-style `![a][r]`, raw HTML `<img src=u>` — into a plain
link that shows the host, so nothing loads until the user clicks it. Other raw HTML is escaped so
it shows as text. Code spans and code blocks are never touched. The result is parsed again until
it holds no image and no raw HTML (a rewrite can expose new Markdown, e.g. the inside of an HTML
block); if that does not settle, every `![` and `<` is escaped outright. Last, every `![` left
outside code becomes `&#33;[`: two parsers can disagree on a construct (a footnote definition is a
link definition to CommonMark), but no image in any dialect starts without `![`. The differential
fuzzer (tests/unit/test_render_fuzz.py, bench/fuzz_render.py) checks this against the browser.

`plain_label` is for places that should show text literally (conversation titles, names in
labels and captions): every character that could make Markdown of one line is backslash-escaped
(inline syntax anywhere, block syntax at the start; `_` inside a word and `:` are left alone since
they make no Markdown a person would notice and load nothing).
Note: st.selectbox options are drawn as plain text by Streamlit (checked in Chromium with 1.67),
so they need neither function; radio options, button labels and tooltips are Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from markdown_it import MarkdownIt, rules_inline
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from mdit_py_plugins.footnote import footnote_plugin

IMAGE_MARK = "🖼"
_MAX_PASSES = 4
# What can make Markdown out of one line of text: inline syntax anywhere, block syntax at the start.
_LABEL_SPECIALS = re.compile(r"([\\`*\[\]!|<>~$&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_LABEL_LEADING = re.compile(r"^(\d*)([#+\-=.)])")
_MATH_OR_DIRECTIVE = re.compile(r"\$|:[A-Za-z]")
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


# -- public ----------------------------------------------------------------------------------------

def safe_markdown(text: str, *, show_images_from: Collection[str] = ()) -> str:
    """Markdown that renders like `text` but loads nothing: images become links showing their
    host, raw HTML shows as text. Images whose host is in `show_images_from` (the user asked
    for them) stay images. Pure and cheap enough to run on every redraw of a stream."""
    if "![" not in text and "<" not in text:
        return text  # CommonMark has no image without `![` and no tag without `<`
    allowed = frozenset(h.lower() for h in show_images_from)
    out = text
    for _ in range(_MAX_PASSES):
        if not _find_problems(out, allowed):
            return _escape_stray_images(out, allowed)
        out = _rewrite_once(out, allowed) or _escape_everything(out)
    return (_escape_stray_images(out, allowed) if not _find_problems(out, allowed)
            else _escape_everything(out))


def plain_label(text: str) -> str:
    """`text` shown literally where Streamlit renders Markdown (labels, captions, titles,
    tooltips): Markdown syntax escaped, line breaks as spaces, and no bidirectional override,
    embedding or isolate (U+202A-E, U+2066-9): one in a title reversed it on screen."""
    one_line = " ".join(text.translate(_BIDI_CONTROLS).split())
    return _LABEL_LEADING.sub(r"\1\\\2", _LABEL_SPECIALS.sub(r"\\\1", one_line), count=1)


def image_hosts(text: str) -> list[str]:
    """The hosts that images in `text` would load from, in order of first appearance (for a
    "show images from <host>" action). Relative or data: images are left out."""
    hosts: list[str] = []
    for src in _image_sources(text):
        host = _host(src)
        if host and host not in hosts:
            hosts.append(host)
    return hosts


# -- parsing ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Span:
    """Where an image or raw HTML token sits in its inline source (StateInline.src)."""

    token: Token
    start: int
    end: int


def _recording(rule: Callable[[StateInline, bool], bool]
               ) -> Callable[[StateInline, bool], bool]:
    def wrapped(state: StateInline, silent: bool) -> bool:
        start, count = state.pos, len(state.tokens)
        found = rule(state, silent)
        if found and not silent and len(state.tokens) > count:  # a lone backtick run is text
            token = state.tokens[-1]
            state.env.setdefault("atom_spans", {})[id(token)] = _Span(token, start, state.pos)
        return found
    return wrapped


@cache
def _parser() -> MarkdownIt:
    # GFM as Streamlit's renderer (react-markdown + remark-gfm) reads it: tables, strikethrough
    # and footnotes, whose definitions (`[^1]: ![f](u)`) CommonMark reads as link definitions.
    md = (MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
          .use(footnote_plugin))
    md.inline.ruler.at("image", _recording(rules_inline.image))
    md.inline.ruler.at("html_inline", _recording(rules_inline.html_inline))
    md.inline.ruler.at("backticks", _recording(rules_inline.backtick))
    return md


def _parse(text: str) -> tuple[list[Token], dict[int, _Span]]:
    """Block tokens, and where each image and raw HTML token sat in its inline source."""
    env: dict[str, Any] = {}
    tokens = _parser().parse(text, env)
    return tokens, env.get("atom_spans", {})


def _walk_inline(tokens: list[Token]) -> Iterator[Token]:
    for t in tokens:
        yield t
        if t.children:
            yield from _walk_inline(t.children)


def _image_sources(text: str) -> Iterator[str]:
    tokens, _ = _parse(text)
    for t in _walk_inline(tokens):
        if t.type == "image":
            yield str(t.attrGet("src") or "")
        elif t.type in ("html_inline", "html_block"):
            yield from (src for _, src, _ in _img_tags(t.content))


def _find_problems(text: str, allowed: frozenset[str]) -> bool:
    tokens, _ = _parse(text)
    for t in _walk_inline(tokens):
        if t.type == "image" and _host(str(t.attrGet("src") or "")) not in allowed:
            return True
        if t.type in ("html_inline", "html_block"):
            return True
    return False


# -- rewriting -------------------------------------------------------------------------------------

def _rewrite_once(text: str, allowed: frozenset[str]) -> str | None:
    """One pass: the text with every image and raw HTML rewritten, or None if it has none."""
    tokens, spans = _parse(text)
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in `text`
    for i, block in enumerate(tokens):
        if block.type == "html_block" and block.map:
            a, b = block.map
            edits.append((starts[a], starts[b], _neutral_html(text[starts[a]:starts[b]],
                                                              in_link=False)))
        if block.type != "inline" or not block.map or not block.children:
            continue
        found = _inline_edits(block, spans, allowed)
        if not found:
            continue
        cell = tokens[i - 1].type in ("th_open", "td_open")
        row = (block.map[0], block.map[0] + 1) if cell else (block.map[0], block.map[1])
        mapped = _to_source(block.content, lines, starts, row, found, cell=cell)
        if mapped is None:  # the inline source could not be found line by line: escape it all
            a, b = row
            edits.append((starts[a], starts[b], _escape_everything(text[starts[a]:starts[b]])))
        else:
            edits.extend(mapped)
    if not edits:
        return None
    out, last = [], 0
    for start, end, new in sorted(edits):
        if start < last:  # overlapping edits (cannot happen with a sane parse): skip the second
            continue
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)


def _escape_stray_images(text: str, allowed: frozenset[str]) -> str:
    """Every `![` left that is not code nor an image the user allowed becomes `&#33;[`.

    The token walk above sees what markdown-it sees; where the browser's parser (micromark,
    with GFM, math and directives) reads a construct differently, a `![` that markdown-it took
    for text could still start an image there. Every image in any Markdown dialect Streamlit
    draws starts with `![`, so escaping the `!` of each one outside code closes that gap
    whatever the dialect: the entity shows as `!` everywhere except in code spans and fenced
    code, which are left alone (the constructs both parsers read alike)."""
    if "![" not in text:
        return text
    # Math (`$…$`, `$$` blocks) and directives (`:name[…]`, `:::name`) are drawn by the
    # browser, not known to markdown-it: they change which backticks pair up and where a fence
    # ends. With either in the text, code is not trusted to be code (the fuzzer's finds).
    trust_code = _MATH_OR_DIRECTIVE.search(text) is None
    tokens, spans = _parse(text)
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    keep: list[tuple[int, int]] = []  # [start, end) ranges of `text` left as they are
    for i, block in enumerate(tokens):
        # An indented code block is not kept: Streamlit dedents and strips the text it is
        # given (clean_text), which can turn one into a paragraph the browser parses.
        if block.type == "fence" and block.map and trust_code:
            keep.append((starts[block.map[0]], starts[min(block.map[1], len(lines))]))
        if block.type != "inline" or not block.map or not block.children:
            continue
        ranges = [(span.start, span.end, "") for t in block.children
                  if (span := spans.get(id(t))) is not None
                  and ((t.type == "code_inline" and trust_code)
                       or (t.type == "image" and _host(str(t.attrGet("src") or "")) in allowed))]
        if not ranges:
            continue
        cell = tokens[i - 1].type in ("th_open", "td_open")
        row = (block.map[0], block.map[0] + 1) if cell else (block.map[0], block.map[1])
        mapped = _to_source(block.content, lines, starts, row, ranges, cell=cell)
        keep.extend((a, b) for a, b, _ in mapped or [])

    def escaped(m: re.Match[str]) -> str:
        at = m.start()
        return m.group(0) if any(a <= at < b for a, b in keep) else "&#33;["

    return re.sub(r"!\[", escaped, text)


def _inline_edits(block: Token, by_token: dict[int, _Span], allowed: frozenset[str]
                  ) -> list[tuple[int, int, str]]:
    """Edits in the inline source (block.content) of one paragraph, heading or table cell."""
    edits: list[tuple[int, int, str]] = []
    depth = 0  # inside a link, an image becomes text: a link can't hold another link
    for t in block.children or []:
        if t.type == "link_open":
            depth += 1
        elif t.type == "link_close":
            depth -= 1
        span = by_token.get(id(t))
        if span is None:
            continue
        if t.type == "image":
            src = str(t.attrGet("src") or "")
            if _host(src) in allowed and depth == 0:
                continue
            alt = "".join(c.content for c in _walk_inline(t.children or [])
                          if c.type in ("text", "code_inline"))
            edits.append((span.start, span.end, _image_link(src, alt, in_link=depth > 0)))
        elif t.type == "html_inline":
            edits.append((span.start, span.end, _neutral_html(t.content, in_link=depth > 0)))
    return edits


def _to_source(content: str, lines: list[str], starts: list[int], row: tuple[int, int],
               edits: list[tuple[int, int, str]], *, cell: bool
               ) -> list[tuple[int, int, str]] | None:
    """Maps edits in an inline source to the whole text. The inline source is the block's lines
    with their container prefixes ("> ", "- ", indentation, "# ") cut off, so each of its lines
    is found at the end (or, in a table row, inside) the matching source line."""
    offsets: list[int] = []  # source offset of each content line's first character
    for k, piece in enumerate(content.split("\n")):
        n = row[0] + k
        if n >= row[1] or n >= len(lines):
            return None
        line = lines[n].rstrip("\r\n")
        at = line.find(piece) if cell else line.rfind(piece)
        if at < 0:
            return None
        offsets.append(starts[n] + at)
    line_starts = [0]
    for piece in content.split("\n")[:-1]:
        line_starts.append(line_starts[-1] + len(piece) + 1)

    def source(pos: int) -> int:
        k = max(i for i, s in enumerate(line_starts) if s <= pos)
        return offsets[k] + (pos - line_starts[k])

    return [(source(s), source(e - 1) + 1, new) for s, e, new in edits]


# -- what images and HTML become -------------------------------------------------------------------

def _host(src: str) -> str:
    try:
        return (urlsplit(src).hostname or "").lower()
    except ValueError:
        return ""


def _image_link(src: str, alt: str, *, in_link: bool) -> str:
    host = _host(src)
    where = f"image from {host}" if host else "image"
    words = plain_label(f"{IMAGE_MARK} {alt.strip() or 'image'} ({where})")
    if in_link or not src or src.lower().startswith("data:"):
        return words  # nothing to open (or already inside a link): plain words
    return f"[{words}]({_destination(src)})"


def _destination(url: str) -> str:
    """A link destination that needs no brackets: no spaces, parentheses or angle brackets."""
    return "".join(c if c.isascii() and c not in " ()<>\\\"'`" and c.isprintable()
                   else "".join(f"%{b:02X}" for b in c.encode()) for c in url)


class _ImgTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []  # (raw tag text, src, alt)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            values = {k: v or "" for k, v in attrs}
            self.found.append((self.get_starttag_text() or "", values.get("src", ""),
                               values.get("alt", "")))

    handle_startendtag = handle_starttag


def _img_tags(html: str) -> list[tuple[str, str, str]]:
    p = _ImgTags()
    try:
        p.feed(html)
        p.close()
    except Exception:  # noqa: BLE001 - a broken tag simply finds no image
        return []
    return p.found


def _neutral_html(html: str, *, in_link: bool) -> str:
    """Raw HTML as text: every `<img>` becomes a link (or words inside a link), every other
    `<` is escaped so no tag is ever drawn."""
    out, rest = [], html
    for raw, src, alt in _img_tags(html):
        at = rest.find(raw) if raw else -1
        if at < 0:
            continue
        out.append(_escape_html(rest[:at]))
        out.append(_image_link(src, alt, in_link=in_link) if src else plain_label(raw))
        rest = rest[at + len(raw):]
    out.append(_escape_html(rest))
    return "".join(out)


def _escape_html(text: str) -> str:
    return text.replace("<", "&lt;")


def _escape_everything(text: str) -> str:
    """The last resort: no `![` and no `<` left, so CommonMark can find neither an image nor a
    tag (entities never act as Markdown syntax; code spans may show them literally)."""
    return text.replace("![", "&#33;[").replace("<", "&lt;")
