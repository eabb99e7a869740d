"""Every place a page hands text to Streamlit (which renders Markdown, images included, in
messages, captions, labels and options) either passes literal text, or text that went through
atom_core.render (safe_markdown / plain_label), or is on the short list below of values ATOM
writes itself. A new call that interpolates something named like untrusted text (a model name,
an error sentence, a reply, a URL, an id...) without that fails here, so the next leak is caught
before a browser fetches anything.

The check reads the source (ast); it is a net for the common shapes, not a proof."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SINKS = {"markdown", "error", "warning", "info", "success", "caption", "toast", "write",
         "button", "title", "header", "subheader", "metric", "expander", "tabs", "selectbox",
         "radio", "popover", "checkbox", "toggle", "download_button", "link_button",
         "chat_message", "status", "spinner", "progress", "multiselect", "text_input",
         "number_input", "text_area", "form_submit_button", "segmented_control", "pills"}
SAFE = {"safe_markdown", "plain_label"}
RISKY = re.compile(r"error|sentence|model|name|title|url|label|content|reply|reasoning|\bid\b|"
                   r"_id|stage|message|text|line|problem|why|summary|note|key", re.I)

# (file, expression): text ATOM composes itself from its own words, numbers and values that
# already went through safe_markdown / plain_label where they were built.
OWN_TEXT = {
    ("app.py", "sentence"),  # safe_markdown(status.sentence) just above
    ("pages/parts/arena_class.py", "label"),  # this machine's address, the digits of the code;
    # and the tally's "Response 2: 12"
    ("pages/parts/arena_judge.py", "why"),  # a fixed word per status
    ("pages/parts/stats_archive.py", "text"),  # the two export buttons' fixed labels
    ("pages/parts/arena_machine.py", "line"),  # the hardware strip: numbers
    ("pages/parts/arena_round.py", "label"),  # fixed download labels
    ("pages/parts/arena_round.py", "row.name"),  # the results grid's own row names
    ("pages/parts/arena_round.py", "HELP.get(row.key)"),
    ("pages/parts/arena_round.py", "name"),  # rnd.short_label: "Model A" / "Response 1"
    ("pages/parts/arena_sets.py", "runner.progress.sentence"),  # "3 of 10 done · about 2 min left"
    ("pages/parts/arena_sets.py", "p.sentence"),
    ("pages/parts/arena_sets.py", "r.label"),  # slot letter
    ("pages/parts/arena_setup.py", "label"),  # slot letter
    ("pages/parts/arena_setup.py", "HELP['reasoning']"),
    ("pages/parts/arena_setup.py", "HELP['context']"),
    ("pages/parts/arena_setup.py", "problem"),  # client.route_problem: ATOM's sentence
    ("pages/parts/arena_setup.py", "names"),  # plain_label per model where built
    ("pages/parts/arena_sets.py", "plural(len(setups), 'model')"),  # a count of models
    ("pages/parts/chat_conversations.py", "plain_label(c.preview) or None"),
    ("pages/parts/chat_header.py", "label"),  # fixed download labels
    ("pages/parts/chat_route.py", "line"),  # built from plain_label'd parts
    ("pages/parts/chat_route.py", "STAGES.get(stage) or plain_label(stage)"),
    ("pages/parts/chat_route.py", "problem"),  # client.route_problem
    ("pages/parts/models_download.py", "line"),  # built from plain_label / safe_markdown
    ("pages/parts/settings_data.py",
     "'\\n'.join((f'- {safe_markdown(problem)}' for problem in e.problems))"),
    ("pages/parts/stats_machine.py", "here.label"),  # this machine, read locally
    ("pages/parts/stats_sweep.py", "problem"),  # client.route_problem
    ("pages/parts/ui.py", "label"),  # the caller's fixed label
    ("pages/settings.py", "label"),  # LIMIT_INPUTS: fixed labels
    ("pages/settings.py", "help_text"),  # LIMIT_INPUTS: fixed help
    ("pages/settings.py", "LIMIT_VARIABLES[key]"),  # a variable's name
    ("pages/arena.py", "blind_line(slot)"),  # fixed words
    ("pages/arena.py", "arena.live_line(slot)"),  # numbers; a server stage via plain_label
    ("pages/arena.py", "len(reply.reasoning.split())"),  # a count
    ("pages/vote.py", "label"),  # "Response 2", "Tie", "All bad"
    ("pages/vote.py", "classroom.choice_label(rnd, mine.outcome, mine.winner)"),  # the same
    ("pages/vote.py", "' · '.join((f'{label}: {n}' for label, n in counts))"),  # and counts
    ("pages/chat.py", "turn.note"),  # ATOM's notes about how a turn was sent
    ("pages/chat.py", "' · '.join((x for x in (plain_label(m.model), line) if x))"),
    ("pages/chat.py", "text"),  # fixed words + safe_markdown(m.error)
    ("pages/chat.py", "live_line(turn)"),  # plain_label(model) + numbers
    ("pages/models.py", "len(listing.models)"),
    ("pages/models.py", "m.max_context"),
    ("pages/models.py", "listing.dialect.label"),  # ATOM's name for the server type
    ("pages/models.py", "['Load a model', 'Download a model']"),
    ("pages/stats.py", "CHART_TITLES[name]"),
    ("pages/stats.py", "gaps[name]"),  # stats.chart_gaps: ATOM's sentences
    ("pages/stats.py", "label"),  # fixed card labels; the replay's label is plain_label'd
    ("pages/stats.py", "best[key][1]"),  # a figure: "52.1 tok/s median"
}


def unsafe_parts(node: ast.expr) -> list[ast.expr]:
    """The parts of a text argument that are neither literal nor passed through SAFE."""
    if isinstance(node, ast.Constant):
        return []
    if isinstance(node, ast.Call):
        f = node.func
        name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
        return [] if name in SAFE else [node]
    if isinstance(node, ast.JoinedStr):
        return [p for v in node.values if isinstance(v, ast.FormattedValue)
                for p in unsafe_parts(v.value)]
    if isinstance(node, ast.BinOp):
        return unsafe_parts(node.left) + unsafe_parts(node.right)
    if isinstance(node, ast.IfExp):
        return unsafe_parts(node.body) + unsafe_parts(node.orelse)
    return [node]


def risky_calls(path: Path) -> set[tuple[str, str, int]]:
    found = set()
    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SINKS):
            continue
        texts = node.args[:1] + [k.value for k in node.keywords
                                 if k.arg in ("label", "text", "help", "placeholder")]
        for text in texts:
            for part in unsafe_parts(text):
                src = ast.unparse(part)
                if RISKY.search(src):
                    found.add((rel, src, node.lineno))
    return found


def test_every_page_text_that_may_be_untrusted_goes_through_the_safe_render() -> None:
    files = [*sorted((ROOT / "pages").rglob("*.py")), ROOT / "app.py"]
    leaks = sorted(f"{f}:{line}: {src}" for path in files
                   for f, src, line in risky_calls(path) if (f, src) not in OWN_TEXT)
    assert not leaks, ("Pass these through atom_core.render.safe_markdown / plain_label, or "
                       "add them to OWN_TEXT if ATOM writes every word:\n" + "\n".join(leaks))


def test_the_net_catches_an_unwrapped_model_name(tmp_path: Path) -> None:
    page = tmp_path / "page.py"
    page.write_text('import streamlit as st\nmodel = "x"\n'
                    'st.spinner(f"Asking {model}…")\nst.caption(plain_label(model))\n')
    assert {(src, line) for _f, src, line in risky_calls(page)} == {("model", 3)}


def test_the_list_of_own_text_has_no_stale_entries() -> None:
    files = [*sorted((ROOT / "pages").rglob("*.py")), ROOT / "app.py"]
    seen = {(f, src) for path in files for f, src, _line in risky_calls(path)}
    assert not OWN_TEXT - seen, sorted(OWN_TEXT - seen)
