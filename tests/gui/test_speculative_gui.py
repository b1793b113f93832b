"""The playground and self-speculative decoding, on real tiny runs: a K = 4 run (heads 2..4 draft, head 1
verifies) and the session's K = 1 ``tiny_run``. The box follows the chosen model's heads, greedy text is the
same either way, the stats line shows accepted drafts per pass, and the "by accepted drafts" colouring marks
exactly the tokens the core says came from drafts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from shiftstudio.gui.panes import make_context
from shiftstudio.gui.panes.generate import GeneratePane, GenerationWorker, Source
from shiftstudio.gui.widgets.token_output import BY_DRAFTS, BY_PROBABILITY, TOKEN_PROPERTY, draft_colour

ONE_HEAD = "this model has 1 head: speculative decoding needs shift ≥ 2"


@pytest.fixture(scope="module")
def spec_run(make_tiny_run) -> Path:
    """A run with ``shift = 4`` (four heads), trained 30 steps on 20 KB of shakespeare; checkpoints at 15, 30."""
    return make_tiny_run("spec-run", shift=4, n_embd=32, block_size=24, max_iters=30, lr_decay_iters=30,
                         eval_interval=15, learning_rate=3e-3)


@pytest.fixture
def pane(qtbot, spec_run: Path):
    ctx = make_context()
    pane = GeneratePane(ctx.runs)
    qtbot.addWidget(pane)
    pane.resize(1000, 600)
    pane.show()
    pane.set_run(spec_run)
    yield pane
    pane.shutdown()
    ctx.runs.shutdown()
    ctx.session.shutdown()


def generate(qtbot, pane: GeneratePane, index: int = 0) -> str:
    assert pane.generate()
    qtbot.waitUntil(lambda: not pane.running, timeout=60_000)
    assert pane.status.property("error") is False, pane.status.text()
    return pane.output_text(index)


def direct(run_dir: Path, prompt: str, settings, speculative: bool):
    """The tokens of the core's Generation on the run's latest checkpoint, as the worker would run it."""
    from shiftstudio.core.generate.generation import Generation
    from shiftstudio.core.runs.loading import load_model

    model, tokenizer, _ = load_model(run_dir, "latest")
    gen = Generation(model, tokenizer, prompt, settings, speculative=speculative)
    return list(gen), gen


def backgrounds(view) -> dict[int, set]:
    """Token index -> the background colours (None: no background) of its characters in the view."""
    out: dict[int, set] = {}
    cursor = QTextCursor(view.document())
    for pos in range(1, view.document().characterCount()):
        cursor.setPosition(pos)  # a cursor's charFormat is that of the character before it
        fmt = cursor.charFormat()
        index = fmt.property(TOKEN_PROPERTY)
        if index is None:
            continue
        brush = fmt.background()
        out.setdefault(int(index), set()).add(None if brush.style() == Qt.BrushStyle.NoBrush else brush.color().name())
    return out


def test_the_box_is_on_for_a_multi_head_model_and_off_with_the_reason_for_one_head(qtbot, pane: GeneratePane,
                                                                                   tiny_run: Path) -> None:
    box = pane.speculative
    assert box.isEnabled() and box.isChecked()
    assert "4 heads" in box.toolTip()
    pane.set_run(tiny_run)  # K = 1
    assert not box.isEnabled() and not box.isChecked()
    assert ONE_HEAD in box.toolTip()
    assert pane.controls.speculative_on() is False
    # a 1-head model decodes plainly: the stats say tokens/s, no accepted drafts
    pane.max_tokens.setValue(8)
    generate(qtbot, pane)
    assert "tok/s" in pane.status.text() and "accepted/pass" not in pane.status.text()
    assert pane.stream_stats()["speculative"] is False and not any(pane.output_a.drafted)


def test_the_choice_survives_a_one_head_model(pane: GeneratePane, spec_run: Path, tiny_run: Path) -> None:
    box = pane.speculative
    box.setChecked(False)  # the user turns it off on the K = 4 model
    pane.set_run(tiny_run)
    assert not box.isEnabled() and not box.isChecked()
    pane.set_run(spec_run)
    assert box.isEnabled() and not box.isChecked()  # still off: the user's choice
    box.setChecked(True)
    pane.set_run(tiny_run)
    pane.set_run(spec_run)
    assert box.isEnabled() and box.isChecked()


def test_greedy_text_is_the_same_with_and_without_speculative_decoding(qtbot, pane: GeneratePane,
                                                                       spec_run: Path) -> None:
    pane.prompt.setPlainText("ROMEO:")
    pane.temperature.setValue(0.0)
    pane.max_tokens.setValue(60)
    pane.stop_eot.setChecked(False)
    assert pane.speculative.isChecked()
    on = generate(qtbot, pane)
    assert len(pane.output_a.tokens) == 60
    status, stats = pane.status.text(), pane.stream_stats()
    assert "60 tokens in" in status and "accepted/pass" in status and "tok/s" in status, status
    assert stats["speculative"] is True and stats["heads"] == 4
    assert stats["accepted"] == sum(pane.output_a.drafted) > 0  # the heads' drafts wrote some of it
    assert f"{stats['mean_accepted_per_pass']:.1f} accepted/pass" in status
    assert stats["passes"] < 60 + 1  # fewer passes than one per token (plus the prefill)
    view_on = pane.output_a.toPlainText()

    pane.speculative.setChecked(False)
    off = generate(qtbot, pane)
    assert off == on and pane.output_a.toPlainText() == view_on == "ROMEO:" + on
    assert "speculative off" in pane.status.text() and "accepted/pass" not in pane.status.text()
    assert pane.stream_stats()["speculative"] is False and not any(pane.output_a.drafted)

    tokens, _ = direct(spec_run, "ROMEO:", pane.settings(), speculative=False)
    assert "".join(t.text for t in tokens) == on


def test_the_drafts_colouring_marks_exactly_the_drafted_tokens(qtbot, pane: GeneratePane, spec_run: Path) -> None:
    pane.prompt.setPlainText("ROMEO:")
    pane.temperature.setValue(0.8)  # sampling: rejection sampling decides which drafts stay
    pane.seed.setValue(7)
    pane.max_tokens.setValue(80)
    pane.stop_eot.setChecked(False)
    pane.colour.setChecked(True)
    assert pane.colouring.currentData() == BY_PROBABILITY and not pane.draft_legend.isVisible()
    text = generate(qtbot, pane)

    tokens, gen = direct(spec_run, "ROMEO:", pane.settings(), speculative=True)
    assert text == "".join(t.text for t in tokens)
    expected = [t.drafted for t in tokens]
    view = pane.output_a
    assert view.drafted == expected and any(expected) and not all(expected)
    assert pane.stream_stats()["accepted"] == gen.accepted == sum(expected)
    assert pane.stream_stats()["histogram"] == gen.accepted_histogram

    # by probability (as before): every generated character has a background
    shades = backgrounds(view)
    assert shades and all(None not in colours for colours in shades.values())

    pane.colouring.setCurrentIndex(pane.colouring.findData(BY_DRAFTS))
    assert pane.draft_legend.isVisible() and "accepted draft" in pane.draft_legend.toolTip()
    dark = view.palette().base().color().lightness() < 128
    blue = draft_colour(dark).name()
    shades = backgrounds(view)
    with_text = {i for i, t in enumerate(tokens) if t.text}
    assert set(shades) == with_text
    for i in with_text:
        assert shades[i] == ({blue} if expected[i] else {None}), (i, tokens[i])
    drafted_i = next(i for i in with_text if expected[i])
    assert "accepted draft" in view.describe(drafted_i)
    assert "accepted draft" not in view.describe(next(i for i in with_text if not expected[i]))

    # off and back: the colouring stays chosen; the probability one is untouched
    pane.colour.setChecked(False)
    assert set().union(*backgrounds(view).values()) == {None} and not pane.draft_legend.isVisible()
    pane.colour.setChecked(True)
    assert backgrounds(view)[drafted_i] == {blue}
    pane.colouring.setCurrentIndex(pane.colouring.findData(BY_PROBABILITY))
    assert all(None not in c for c in backgrounds(view).values())


def test_picking_a_colouring_turns_colouring_on(pane: GeneratePane) -> None:
    assert not pane.colour.isChecked()
    pane.colouring.setCurrentIndex(pane.colouring.findData(BY_DRAFTS))
    assert pane.colour.isChecked() and pane.output_a.colouring == BY_DRAFTS


def test_compare_shows_each_sides_own_stats(qtbot, pane: GeneratePane, gpt2_folder: Path) -> None:
    pane.prompt.setPlainText("ROMEO:")
    pane.max_tokens.setValue(30)
    pane.stop_eot.setChecked(False)
    pane.compare.setChecked(True)
    pane.compare_source.setCurrentIndex(pane.compare_source.findData("step-15"))
    assert pane.stats_a.isVisibleTo(pane) and pane.stats_b.isVisibleTo(pane)
    generate(qtbot, pane)
    a, b = pane.stream_stats(0), pane.stream_stats(1)
    assert a["speculative"] and b["speculative"] and a["tokens"] == b["tokens"] == 30
    for label, stats in ((pane.stats_a, a), (pane.stats_b, b)):
        assert f"{stats['mean_accepted_per_pass']:.1f} accepted/pass" in label.text() and "tok/s" in label.text()
    assert sum(pane.output_a.drafted) == a["accepted"] and sum(pane.output_b.drafted) == b["accepted"]
    assert f"{a['passes']} passes, {a['accepted']} drafts accepted" in pane.stats_a.toolTip()
    assert "step 15" in pane.title_b.text()

    # against a 1-head Hugging Face model: the box stays on (one side can), that side decodes plainly
    assert pane.add_hf_folder(gpt2_folder, compare=True)
    assert pane.speculative.isEnabled() and pane.speculative.isChecked()
    generate(qtbot, pane)
    assert pane.stream_stats(0)["speculative"] and not pane.stream_stats(1)["speculative"]
    assert "accepted/pass" in pane.stats_a.text() and "accepted/pass" not in pane.stats_b.text()
    assert "tok/s" in pane.stats_b.text() and not any(pane.output_b.drafted)
    # the Hugging Face model alone: 1 head, the box off with the reason
    pane.compare.setChecked(False)
    pane.source.setCurrentIndex(pane.source.findData(f"hf:{gpt2_folder.resolve()}"))
    assert not pane.speculative.isEnabled() and ONE_HEAD in pane.speculative.toolTip()


def test_the_worker_sends_stats_as_plain_data(qtbot, spec_run: Path) -> None:
    from shiftstudio.core.generate.filters import SamplingSettings

    worker = GenerationWorker([Source(spec_run, "latest")], "ROMEO", SamplingSettings(max_new_tokens=25, seed=3,
                                                                                      stop_at_eot=False))
    batches: list[tuple] = []
    ends: list[tuple] = []
    worker.tokens.connect(lambda *args: batches.append(args), Qt.ConnectionType.DirectConnection)
    worker.finished.connect(lambda *args: ends.append(args), Qt.ConnectionType.DirectConnection)
    worker.run()
    assert ends and ends[0][1] == "length" and ends[0][2] == 25
    stats = ends[0][4]

    def plain(value) -> bool:
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        return value is None or isinstance(value, (bool, int, float, str))

    assert plain(stats) and all(plain(b[2]) and plain(b[1]) for b in batches)
    assert stats["speculative"] and stats["tokens"] == 25 and stats["tokens_per_s"] > 0
    assert sum(stats["histogram"]) == stats["passes"]
    drafted = [t[3] for _, batch, _ in batches for t in batch]
    assert len(drafted) == 25 and sum(drafted) == stats["accepted"]


def test_the_choices_come_back_at_the_next_start(qtbot, tmp_path: Path) -> None:
    from shiftstudio.gui.settings import Settings

    settings = Settings(tmp_path / "gui.json")
    ctx = make_context(settings)
    pane = GeneratePane.from_context(ctx)
    qtbot.addWidget(pane)
    assert pane.speculative.isChecked() and pane.colouring.currentData() == BY_PROBABILITY
    pane.speculative.setChecked(False)
    pane.colouring.setCurrentIndex(pane.colouring.findData(BY_DRAFTS))
    settings.save()  # as the window does when it closes

    ctx2 = make_context(Settings(tmp_path / "gui.json"))
    again = GeneratePane.from_context(ctx2)
    qtbot.addWidget(again)
    assert not again.speculative.isChecked() and again.colouring.currentData() == BY_DRAFTS and again.colour.isChecked()
    again.show()
    assert again.draft_legend.isVisible()
    for c in (ctx, ctx2):
        c.runs.shutdown()
        c.session.shutdown()
