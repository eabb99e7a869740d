"""Arena: a model as judge of a finished round (blind, in both orders), and its verdicts.
Drawing only; the judging is in atom_core.arena.judge. Judge reasons and replies are model text:
shown as plain text (st.text / st.code), never as Markdown."""


import streamlit as st

from atom_core.arena import judge, judge_totals, promptsets
from atom_core.arena.rounds import ArenaRound
from atom_core.errors import AtomError
from atom_core.render import plain_label, safe_markdown
from atom_core.words import EMPTY_CELL, plural
from pages.parts import ui


def _judges() -> list[tuple[str, str]]:
    """(server URL, model key) of every LLM on every server the session knows."""
    out = []
    for choice in ui.servers():
        listing = ui.status_for(choice.url).models
        out += [(choice.url, m.key) for m in (listing.llms if listing is not None else [])]
    return out


def judge_panel(store: ui.HistoryStore, rnd: ArenaRound) -> None:
    complete = [s for s in rnd.slots if s.state == "complete" and s.content.strip()]
    verdicts = judge.verdicts_for(store, rnd.id)
    if len(complete) < 2 and not verdicts:
        return
    with st.expander("Judge this round with a model", icon=":material/gavel:",
                     expanded=bool(verdicts)):
        st.caption("The judge reads the answers blind, as Response 1…N, twice: in a shuffled "
                   "order and in the reverse order. A pair's verdict counts only when both "
                   "orders agree; otherwise it is a tie. Judge verdicts never count as votes.")
        options = _judges()
        if not options:
            st.info("No model is available to judge: start a server with a model.",
                    icon=":material/gavel:")
        else:
            _ask(store, rnd, options)
        for v in reversed(verdicts):
            draw_verdict(rnd, v)


def _ask(store: ui.HistoryStore, rnd: ArenaRound, options: list[tuple[str, str]]) -> None:
    # One set of keys for whichever round is shown (see arena_round._vote_bar): a key per round
    # left each round's widgets, options included, in the session for good.
    multi = len({url for url, _ in options}) > 1
    pick = st.selectbox("Judge model", options, key="judge-model",
                        format_func=lambda o: f"{o[1]} ({o[0]})" if multi else o[1])
    reference = st.text_area("Reference answer (optional)", key="judge-ref",
                             help="With a reference, the judge scores how well each answer "
                             "matches it.", height=68)
    default = judge.REFERENCE_RUBRIC if reference.strip() else judge.DEFAULT_RUBRIC
    rubric = st.text_area("Rubric", value=default, key=f"judge-rubric-{bool(reference)}",
                          height=68)
    if st.button("Judge", icon=":material/gavel:", key="judge-go",
                 disabled=pick is None):
        assert pick is not None
        url, model = pick
        with st.spinner(f"{plain_label(model)} is judging, in both orders…"):
            try:
                judge.judge_round(store, ui.client_for(url), model, rnd, rubric=rubric,
                                  reference=reference.strip() or None)
            except AtomError as e:  # JudgeError included
                st.error(safe_markdown(e.sentence), icon=":material/error:")
                return
        st.rerun()


def draw_verdict(rnd: ArenaRound, v: judge.JudgeVerdict) -> None:
    """One verdict: scores per answer in each order, the pairs, and unread replies."""
    dis, pairs = v.disagreements
    head = f"Judge: {v.judge_model}"
    if pairs:
        head += f" · the two orders disagreed on {dis} of {plural(pairs, 'pair')}"
    st.markdown("**Verdict**")
    st.text(head)  # a model name: plain text
    rows = []
    for a in v.per_answer():
        slot = a["slot"]
        scores = [c.scores.get(v.slots.index(slot)) for c in v.calls]
        rows.append({"Answer": rnd.short_label(slot),
                     "Order 1": scores[0] if scores else None,
                     "Order 2": scores[1] if len(scores) > 1 else None,
                     "Mean": a["score"], "Positions": " / ".join(map(str, a["order"])),
                     "Agreed": "yes" if a["agreed"] else "no", "Reason": a["reason"]})
    st.dataframe(rows, hide_index=True, key=f"verdict-{v.id}", placeholder=EMPTY_CELL,
                 column_config={
        "Positions": st.column_config.TextColumn(help="Where the answer stood in each order "
                                                 "(1 = shown first)."),
        "Agreed": st.column_config.TextColumn(help="Both orders gave the same verdict on every "
                                              "pair this answer was in."),
        "Reason": st.column_config.TextColumn(help="The judge's own words (from the first order "
                                              "it scored); its “Response N” is that order's "
                                              "numbering.")})
    for p in v.pairs():
        a, b = rnd.short_label(v.slots[p.a]), rnd.short_label(v.slots[p.b])
        said = {"a": a, "b": b, "tie": "tie", None: "no verdict"}
        result = {"a": f"{a} wins", "b": f"{b} wins", "tie": "tie", None: "no verdict"}
        if rnd.positions.index(v.slots[p.a]) > rnd.positions.index(v.slots[p.b]):
            a, b = b, a  # name the pair in the order the page shows the answers
        st.caption(f"{a} vs {b}: order 1 → {said[p.first]}, order 2 → {said[p.second]}: "
                   f"{'agreed, ' if p.agreed else 'disagreed, ' if p.complete else ''}"
                   f"{result[p.outcome]}")
    for n, c in enumerate(v.calls, start=1):
        if c.status == "ok":
            continue
        why = {"unparseable": "could not be read", "refused": "was a refusal",
               "error": "failed"}.get(c.status, c.status)
        st.warning(f"The judge's reply in order {n} {why}: that order has no verdict.",
                   icon=":material/warning:")
        if c.error:
            st.text(c.error)
        if c.raw:
            st.code(c.raw, language=None, wrap_lines=True)


# -- a prompt set's run ---------------------------------------------------------------------------


def promptset_panel(store: ui.HistoryStore, run: promptsets.PromptSetRunSpec,
                    records: list[promptsets.PromptSetRecord]) -> None:
    """Under a prompt set run: judge every prompt's answers (blind, both orders) and show the
    judge's scores per model and the set's judge checks."""
    run_id = run.id
    verdicts = judge.promptset_verdicts(store, run_id)
    with st.expander("Judge this run with a model", icon=":material/gavel:",
                     expanded=bool(verdicts)):
        st.caption("Each prompt's answers are judged like a round: blind, in two orders; a "
                   "prompt's reference answer, if the set has one, goes to the judge.")
        options = _judges()
        if options:
            multi = len({url for url, _ in options}) > 1
            pick = st.selectbox("Judge model", options, key=f"ps-judge-{run_id}",
                                format_func=lambda o: f"{o[1]} ({o[0]})" if multi else o[1])
            if st.button("Judge every prompt", icon=":material/gavel:",
                         key=f"ps-judge-go-{run_id}", disabled=pick is None):
                assert pick is not None
                with st.spinner(f"{plain_label(pick[1])} is judging every prompt, in both orders…"):
                    try:
                        judge.judge_promptset_run(store, ui.client_for(pick[0]), pick[1], run,
                                                  records)
                    except AtomError as e:
                        st.error(safe_markdown(e.sentence), icon=":material/error:")
                        return
                st.rerun()
        if not verdicts:
            return
        for s in judge_totals.judge_summaries(verdicts):
            st.text(judge_totals.summary_line(s))  # names a model: plain text
        st.dataframe(judge_totals.model_scores(verdicts), hide_index=True,
                     key=f"ps-scores-{run_id}",
                     placeholder=EMPTY_CELL,
                     column_config={"model": "Model", "score_mean": "Judge score (mean)",
                                    "wins": "Agreed wins", "ties": "Ties", "losses": "Losses"})
        checks = judge.judge_check_rows(run, verdicts)
        if checks:
            st.markdown("**Judge checks** (passed / judged over the repeats)")
            st.dataframe(checks, hide_index=True, key=f"ps-judge-checks-{run_id}",
                         placeholder=EMPTY_CELL)
