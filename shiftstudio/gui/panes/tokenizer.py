"""Tokenizer pane: char / byte-level BPE / a tokenizer.json; stats and a live token view.

When the settings start from a source model (``init_from``: a run's checkpoint
or a Hugging Face folder) the tokenizer is the source's: the pane reads the
source off the GUI thread, points the settings at the source's tokenizer (a
cached copy, as a new run will use it), loads it on the corpus, and locks the
choice of kind, saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from shiftstudio.config import help_text
from shiftstudio.gui import style
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.session import CorpusInfo, Session, TokenizerInfo
from shiftstudio.gui.widgets.config_form import ConfigForm
from shiftstudio.gui.widgets.message_bar import MessageBar
from shiftstudio.gui.widgets.progress_panel import ProgressPanel
from shiftstudio.gui.widgets.source_picker import SourceInfo, is_scratch, read_source, tokenizer_matches
from shiftstudio.gui.workers import Task
from shiftstudio.gui.widgets.token_pieces_view import DARK_COLOURS, LIGHT_COLOURS, TokenPiecesView  # noqa: F401 - (tints re-exported)

MAX_TRY_CHARS = 4000
SAMPLE_LINE_CHARS = 300  # of the corpus's first line, put in the try-it box


def first_line(text: str) -> str:
    """The first line of ``text`` with something on it (cut to ``SAMPLE_LINE_CHARS``), or ""."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:SAMPLE_LINE_CHARS]
    return ""


class TokenizerPane(Pane):
    """Picks the tokenizer in the config and builds it through the session; shows how it cuts text."""

    title = "Tokenizer"

    def __init__(self, session: Session, config: ConfigModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.config = config
        tip = help_text("tokenizer")

        kind_box = QGroupBox("Kind", self)
        self.kind_box = kind_box
        self.source_label = QLabel("", kind_box)  # why the kind is locked (a source model decides it)
        self.source_label.setObjectName("tokenizer_source_label")
        self.source_label.setWordWrap(True)
        self.source_label.setProperty("role", "hint")
        self.source_label.setToolTip("A fine-tuned model keeps the tokenizer it was trained with")
        self.source_label.hide()
        self.source_info: SourceInfo | None = None  # the source model whose tokenizer this is
        self._source_task: Task | None = None
        self.char_radio = QRadioButton("Character (one token per character)", kind_box)
        self.char_radio.setObjectName("tokenizer_char_radio")
        self.bpe_radio = QRadioButton("Byte-level BPE, trained on the corpus", kind_box)
        self.bpe_radio.setObjectName("tokenizer_bpe_radio")
        self.file_radio = QRadioButton("A tokenizer.json file", kind_box)
        self.file_radio.setObjectName("tokenizer_file_radio")
        for r in (self.char_radio, self.bpe_radio, self.file_radio):
            r.setToolTip(tip)
        self.kind_group = QButtonGroup(self)
        for r in (self.char_radio, self.bpe_radio, self.file_radio):
            self.kind_group.addButton(r)
        self.file_edit = QLineEdit(kind_box)
        self.file_edit.setObjectName("tokenizer_file_edit")
        self.file_edit.setPlaceholderText("path/to/tokenizer.json")
        self.file_edit.setToolTip("Path to a Hugging Face tokenizers file (tokenizer.json)")
        self.browse_button = QPushButton("Browse…", kind_box)
        self.browse_button.setObjectName("tokenizer_browse_button")
        self.browse_button.setToolTip("Pick a tokenizer.json file")
        self.bpe_form = ConfigForm(self.config, keys=["vocab_size", "min_frequency"], parent=kind_box)
        file_row = QHBoxLayout()
        file_row.addWidget(self.file_edit, 1)
        file_row.addWidget(self.browse_button)
        kind_layout = QVBoxLayout(kind_box)
        kind_layout.addWidget(self.source_label)
        kind_layout.addWidget(self.char_radio)
        kind_layout.addWidget(self.bpe_radio)
        kind_layout.addWidget(self.bpe_form)
        kind_layout.addWidget(self.file_radio)
        kind_layout.addLayout(file_row)

        self.train_button = QPushButton("Build tokenizer", self)
        self.train_button.setObjectName("tokenizer_train_button")
        self.train_button.setToolTip("Build (char) or train (BPE) the tokenizer on the corpus's training split, or load the file")
        self.progress = ProgressPanel(self, "tokenizer")
        self.messages = MessageBar(self, "tokenizer_message_bar")

        stats = QGroupBox("Result", self)
        grid = QGridLayout(stats)
        self.vocab_label = QLabel("–", stats)
        self.vocab_label.setObjectName("tokenizer_vocab_label")
        self.ratio_label = QLabel("–", stats)
        self.ratio_label.setObjectName("tokenizer_ratio_label")
        self.ratio_label.setToolTip("Compression: characters of validation text per token (higher = shorter sequences)")
        self.longest_label = QLabel("–", stats)
        self.longest_label.setObjectName("tokenizer_longest_label")
        self.longest_label.setWordWrap(True)
        self.longest_label.setTextFormat(Qt.PlainText)
        self.longest_label.setToolTip("The longest tokens in the vocabulary")
        grid.addWidget(QLabel("Vocabulary", stats), 0, 0)
        grid.addWidget(self.vocab_label, 0, 1)
        grid.addWidget(QLabel("Characters per token (val)", stats), 1, 0)
        grid.addWidget(self.ratio_label, 1, 1)
        grid.addWidget(QLabel("Longest tokens", stats), 2, 0)
        grid.addWidget(self.longest_label, 2, 1)
        grid.setColumnStretch(1, 1)

        try_box = QGroupBox("Try it", self)
        self.try_edit = QPlainTextEdit(try_box)
        self.try_edit.setObjectName("tokenizer_try_edit")
        self.try_edit.setToolTip("Type text to see how the tokenizer cuts it (it starts with a line of your corpus)")
        self.try_edit.setPlaceholderText("Type text to see how the tokenizer cuts it")
        self.try_edit.setMaximumHeight(80)
        self._try_edited = False  # the user typed in the box: a new corpus leaves it alone
        self._setting_try = False
        self.tokens_view = TokenPiecesView(try_box)
        self.count_label = QLabel("", try_box)
        self.count_label.setObjectName("tokenizer_count_label")
        try_layout = QVBoxLayout(try_box)
        try_layout.addWidget(self.try_edit)
        try_layout.addWidget(self.tokens_view, 1)
        try_layout.addWidget(self.count_label)

        layout = QVBoxLayout(self)
        layout.addWidget(kind_box)
        row = QHBoxLayout()
        row.addWidget(self.train_button)
        row.addWidget(self.progress, 1)
        layout.addLayout(row)
        layout.addWidget(self.messages)
        layout.addWidget(stats)
        layout.addWidget(try_box, 1)

        self._try_timer = QTimer(self)
        self._try_timer.setSingleShot(True)
        self._try_timer.setInterval(120)
        self._try_timer.timeout.connect(self._on_try_timer_timeout)

        self._show_spec(self.config.value("tokenizer"))
        self.kind_group.buttonClicked.connect(self._on_kind_group_clicked)
        self.file_edit.editingFinished.connect(self._on_file_edit_finished)
        self.browse_button.clicked.connect(self._on_browse_clicked)
        self.train_button.clicked.connect(self._on_train_clicked)
        self.progress.cancel_requested.connect(self._on_progress_cancel_requested)
        self.try_edit.textChanged.connect(self._on_try_edit_text_changed)
        self.config.values_changed.connect(self._on_config_values_changed)
        self.session.tokenizer_loading.connect(self._on_session_tokenizer_loading)
        self.session.tokenizer_progressed.connect(self._on_session_tokenizer_progressed)
        self.session.tokenizer_changed.connect(self._on_session_tokenizer_changed)
        self.session.tokenizer_failed.connect(self._on_session_tokenizer_failed)
        self.session.tokenizer_cancelled.connect(self._on_session_tokenizer_cancelled)
        self.session.corpus_opened.connect(self._on_session_corpus_opened)
        if self.session.corpus is not None:
            self._on_session_corpus_opened(self.session.corpus)
        self._on_session_tokenizer_changed(self.session.tokenizer)
        self._sync_source()

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.session, ctx.config)

    def shutdown(self) -> bool:
        task = self._source_task
        return task is None or task.wait(10_000)

    # -- a source model's tokenizer ---------------------------------------------
    @property
    def locked(self) -> bool:
        """The tokenizer is a source model's: the kind cannot be chosen."""
        return not is_scratch(str(self.config.value("init_from")))

    def _sync_source(self) -> None:
        init_from = str(self.config.value("init_from"))
        if is_scratch(init_from):
            if self._source_task is not None:
                self._source_task.cancel()
                self._source_task = None
            self.source_info = None
            self._show_lock()
            return
        if self.source_info is not None and self.source_info.init_from == init_from:
            return
        self.source_info = None
        self._show_lock()
        task = Task(lambda progress, cancel: read_source(init_from), "Source")
        task.succeeded.connect(self._on_source_task_succeeded)
        task.failed.connect(self._on_source_task_failed)
        task.finished.connect(self._on_source_task_finished)
        if self._source_task is not None:
            self._source_task.cancel()
        self._source_task = task
        task.start()

    def _on_source_task_succeeded(self, info: SourceInfo) -> None:
        if self.sender() is not self._source_task:
            return
        self.source_info = info
        self._show_lock()
        if not tokenizer_matches(str(self.config.value("tokenizer")), info):
            self.config.set_value("tokenizer", info.tokenizer_path)  # (the session drops the old one)
        self._maybe_load_source_tokenizer()

    def _on_source_task_failed(self, message: str, detail: str, expected: bool) -> None:
        if self.sender() is self._source_task:
            self.source_label.setText(f"The tokenizer comes from the source model, which cannot be read: {message}")

    def _on_source_task_finished(self) -> None:
        if self.sender() is self._source_task:
            self._source_task = None

    def _show_lock(self) -> None:
        locked, info = self.locked, self.source_info
        if not locked:
            text = ""
        elif info is None:
            text = "The tokenizer comes from the source model (reading it…)."
        else:
            text = (f"The tokenizer comes from the source model: {info.label} — {info.tokenizer_text}. "
                    "A fine-tuned model keeps the tokenizer it was trained with; choose New model under Start from "
                    "(Model & training) to pick another.")
        self.source_label.setText(text)
        self.source_label.setVisible(locked)
        for widget in (self.char_radio, self.bpe_radio, self.file_radio, self.file_edit, self.browse_button, self.bpe_form):
            widget.setEnabled(not locked)
        if not locked:
            self._show_spec(self.config.value("tokenizer"))
        else:
            self.train_button.setText("Load the source's tokenizer")
            why = "Locked: the tokenizer is the source model's" + (f" ({info.label})" if info is not None else "")
            for radio in (self.char_radio, self.bpe_radio, self.file_radio):
                radio.setToolTip(f"{why}. {help_text('tokenizer')}")
        if not locked:
            for radio in (self.char_radio, self.bpe_radio, self.file_radio):
                radio.setToolTip(help_text("tokenizer"))

    def _maybe_load_source_tokenizer(self) -> None:
        """With a source and a corpus, load the source's tokenizer (it is a file: quick) so that the figures,
        the try-it box and the data preparation use it."""
        info, current = self.source_info, self.session.tokenizer
        if info is None or self.session.corpus is None or self.session.busy("tokenizer"):
            return
        spec = str(self.config.value("tokenizer"))
        if current is not None and current.spec == spec:
            return
        if tokenizer_matches(spec, info):
            self.session.train_tokenizer()

    # -- the kind ------------------------------------------------------------
    def _show_spec(self, spec: str) -> None:
        if spec == "char":
            self.char_radio.setChecked(True)
        elif spec == "bpe":
            self.bpe_radio.setChecked(True)
        else:
            self.file_radio.setChecked(True)
            self.file_edit.setText(spec)
        if self.locked:
            return
        self.bpe_form.setEnabled(spec == "bpe")
        self.file_edit.setEnabled(spec not in ("char", "bpe"))
        self.train_button.setText({"char": "Build tokenizer", "bpe": "Train tokenizer"}.get(spec, "Load tokenizer"))

    def _on_kind_group_clicked(self, button: QRadioButton) -> None:
        if button is self.char_radio:
            self.config.set_value("tokenizer", "char")
        elif button is self.bpe_radio:
            self.config.set_value("tokenizer", "bpe")
        else:
            self.file_edit.setEnabled(True)
            self.bpe_form.setEnabled(False)
            if self.file_edit.text().strip():
                self.config.set_value("tokenizer", self.file_edit.text().strip())

    def _on_file_edit_finished(self) -> None:
        text = self.file_edit.text().strip()
        if self.file_radio.isChecked() and text:
            self.config.set_value("tokenizer", text)

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open tokenizer", "", "Tokenizer (tokenizer.json *.json);;All files (*)")
        if path:
            self.load_file(path)

    def load_file(self, path: str | Path) -> None:
        self.config.set_value("tokenizer", str(path))
        self.session.train_tokenizer()

    def _on_config_values_changed(self, keys: set[str]) -> None:
        if "tokenizer" in keys:
            self._show_spec(self.config.value("tokenizer"))
        if "init_from" in keys:
            self._sync_source()
        elif "tokenizer" in keys and self.source_info is not None:
            self._maybe_load_source_tokenizer()

    # -- building ------------------------------------------------------------
    def _on_train_clicked(self) -> None:
        self.session.train_tokenizer()

    def _on_progress_cancel_requested(self) -> None:
        self.session.cancel_tokenizer()

    def _on_session_tokenizer_loading(self, spec: str) -> None:
        self.messages.clear()
        self.train_button.setEnabled(False)
        self.progress.start("Building tokenizer…")

    def _on_session_tokenizer_progressed(self, phase: str, done: int, total: int) -> None:
        self.progress.set_progress(phase, done, total)

    def _on_session_tokenizer_changed(self, info: TokenizerInfo | None) -> None:
        self.progress.finish()
        self.train_button.setEnabled(True)
        if info is None:
            self.vocab_label.setText("– (not built yet)")
            self.ratio_label.setText("–")
            self.longest_label.setText("–")
            self.tokens_view.clear_pieces()
            self.count_label.clear()
            if self.source_info is not None:  # a new corpus or split: the source's tokenizer again
                self._maybe_load_source_tokenizer()
            return
        source = self.source_info
        kind = f"{source.tokenizer_kind}, the source model's" if source is not None and tokenizer_matches(info.spec, source) else info.tokenizer.kind
        self.vocab_label.setText(f"{info.vocab_size:,} tokens ({kind})")
        self.ratio_label.setText(f"{info.chars_per_token:.2f}")
        if info.tokenizer.kind == "char":
            self.longest_label.setText("– (every token is one character)")
        else:
            shown = [repr(t)[1:-1] for t in info.longest[:16]]
            self.longest_label.setText("  ".join(f"[{t}]" for t in shown) or "–")
        self._on_try_timer_timeout()

    def _on_session_tokenizer_failed(self, message: str, detail: str, expected: bool) -> None:
        self.progress.finish()
        self.train_button.setEnabled(True)
        self.messages.show_message(message, "error", detail)

    def _on_session_tokenizer_cancelled(self) -> None:
        self.progress.finish()
        self.train_button.setEnabled(True)
        self.messages.show_message("Tokenizer training was cancelled.", "info")

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        # light <-> dark: the tints follow. (Only after __init__: nothing in it changes the pane's palette, and
        # Qt does not call Python overrides from inside the C++ constructor.)
        if event.type() == QEvent.PaletteChange:
            self._on_try_timer_timeout()
        super().changeEvent(event)

    # -- try it --------------------------------------------------------------
    def _on_session_corpus_opened(self, info: CorpusInfo) -> None:
        """Try the tokenizer on a line of the user's own corpus (unless they typed something already); with a
        source model, load its tokenizer on it."""
        if self.source_info is not None:
            self._maybe_load_source_tokenizer()
        if self._try_edited:
            return
        self._setting_try = True
        try:
            self.try_edit.setPlainText(first_line(info.preview))
        finally:
            self._setting_try = False

    def _on_try_edit_text_changed(self) -> None:
        if not self._setting_try:
            self._try_edited = True
        self._try_timer.start()

    def _on_try_timer_timeout(self) -> None:
        info = self.session.tokenizer
        if info is None:
            return
        text = self.try_edit.toPlainText()[:MAX_TRY_CHARS]
        tok = info.tokenizer
        pieces = tok.pieces(text)
        self.tokens_view.show_pieces(pieces, text, style.is_dark(self.palette()), tok.unk_id)
        ratio = f" · {len(text) / len(pieces):.2f} chars per token" if pieces else ""
        unknown = sum(p.kind == "unknown" for p in pieces)
        missing = f" · {unknown:,} unknown (not in the vocabulary)" if unknown else ""
        self.count_label.setText(f"{len(text):,} characters → {len(pieces):,} tokens{ratio}{missing}")

    def token_pieces(self) -> list[tuple[int, str]]:
        """(id, text as drawn) of each token of the try-it box: a character, the bytes of part of one (hex),
        the character the vocabulary lacks (with the <unk> id), or a special token."""
        info = self.session.tokenizer
        if info is None:
            return []
        text = self.try_edit.toPlainText()[:MAX_TRY_CHARS]
        return [(p.id, p.text) for p in info.tokenizer.pieces(text)]


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(TokenizerPane))
