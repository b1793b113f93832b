"""Corpus pane: pick files or a folder, see their counts, a preview and the split.

A file of fine-tuning records (prompt/completion or chat ``.jsonl``) shows as records: the example count,
prompt and completion lengths in tokens (once the session has a tokenizer), how many examples the current
context (``block_size`` + ``shift``) truncates or cannot score, and one example with its scored part marked.
"""

from __future__ import annotations

import itertools
from typing import Any, Self

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from shiftstudio.format import human_bytes, human_count
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.session import CorpusInfo, Session, corpus_label
from shiftstudio.gui.widgets import named
from shiftstudio.gui.widgets.config_form import ConfigForm
from shiftstudio.gui.widgets.message_bar import MessageBar
from shiftstudio.gui.widgets.progress_panel import ProgressPanel
from shiftstudio.gui.widgets.record_preview import RecordPreview
from shiftstudio.gui.workers import Task

CORPUS_FILTER = "Text (*.txt *.md *.py *.jsonl *.ndjson *.rst *.json *.csv);;All files (*)"
CONTEXT_KEYS = ("block_size", "shift")


def _encode_records(corpus: Any, tokenizer: Any):
    """Task work: every example of a records corpus encoded, with its per-example lengths (records files
    are small: the whole set is held)."""

    def work(progress, cancel) -> tuple[Any, Any, Any]:
        from shiftstudio.core.data.records import RecordLengths, encode_records

        records = list(corpus.iter_records())
        if cancel():
            return None
        encoded = encode_records(records, tokenizer)
        return tokenizer, encoded, RecordLengths.from_arrays(encoded.mask, encoded.index)

    return work


class FilesModel(QAbstractTableModel):
    """The corpus files as a table (a view over CorpusFile records; any count)."""

    HEADERS = ("File", "Kind", "Size", "Documents", "Characters", "Lines")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._files: list[Any] = []

    def set_files(self, files: list[Any]) -> None:
        self.beginResetModel()
        self._files = list(files)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self._files)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole) -> Any:
        f = self._files[index.row()]
        col = index.column()
        if role == Qt.DisplayRole:
            return (f.path.name, f.kind, human_bytes(f.size), f"{f.documents:,}", f"{f.chars:,}", f"{f.lines:,}")[col]
        if role == Qt.ToolTipRole:
            return str(f.path)
        if role == Qt.TextAlignmentRole and col >= 2:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None


class CorpusPane(Pane):
    """Opens the corpus through the session; edits the split settings of the config."""

    title = "Corpus"

    def __init__(self, session: Session, config: ConfigModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.config = config

        self.open_files_button = self._button("Open files…", "corpus_open_files_button", "Pick one or more text files (.txt, .md, .py, .jsonl …) — Ctrl+O")
        self.open_folder_button = self._button("Open folder…", "corpus_open_folder_button", "Pick a folder: every text file below it is used")
        self.sample_button = self._button("Sample corpus", "corpus_sample_button", "Use the sample corpus that ships with ShiftStudio (tiny shakespeare)")
        self.source_label = QLabel("No corpus yet", self)
        self.source_label.setObjectName("corpus_source_label")
        self.source_label.setProperty("role", "heading")
        self.source_label.setWordWrap(True)
        self.progress = ProgressPanel(self, "corpus")
        self.messages = MessageBar(self, "corpus_message_bar")
        self.replace_button = self._button("Replace invalid bytes", "corpus_replace_bytes_button",
                                           "Open the corpus again, reading each invalid UTF-8 byte as the replacement character \ufffd")
        self.replace_button.hide()  # only with the not-UTF-8 message

        self.stat_labels: dict[str, QLabel] = {}
        stats = QGroupBox("Statistics", self)
        grid = QGridLayout(stats)
        self.stat_titles: dict[str, QLabel] = {}
        for i, (key, title) in enumerate((("files", "Files"), ("documents", "Documents"), ("chars", "Characters"), ("lines", "Lines"), ("bytes", "Size"))):
            name = QLabel(title, stats)
            self.stat_titles[key] = name
            value = QLabel("–", stats)
            value.setObjectName(f"corpus_stat_{key}")
            grid.addWidget(name, 0, i)
            grid.addWidget(value, 1, i)
            self.stat_labels[key] = value

        self.records_box = QGroupBox("Records", self)
        self.records_box.setObjectName("corpus_records_box")
        self.records_box.setToolTip("Fine-tuning examples: the loss counts only their completions (or assistant turns)")
        records_grid = QGridLayout(self.records_box)
        self.record_labels: dict[str, QLabel] = {}
        for i, (key, title, tip) in enumerate((
            ("examples", "Examples", "How many examples, and of which kind"),
            ("prompt", "Prompt tokens", "Tokens of context per example, not scored (min · median · max)"),
            ("completion", "Completion tokens", "Scored tokens per example: the completion or assistant turns and their end token (min · median · max)"),
            ("context", "At this context", "Examples longer than block_size + shift lose their tail; examples with no scored token inside it are skipped"),
        )):
            title_label = QLabel(title, self.records_box)
            value = named(QLabel("–", self.records_box), f"corpus_records_{key}", tip)
            value.setWordWrap(True)
            records_grid.addWidget(title_label, 0, i)
            records_grid.addWidget(value, 1, i)
            self.record_labels[key] = value
        self.records_box.hide()

        split_box = QGroupBox("Train / validation split", self)
        split_layout = QVBoxLayout(split_box)
        self.split_form = ConfigForm(config, keys=["val_fraction", "split_seed"], parent=split_box)
        self.split_label = QLabel("–", split_box)
        self.split_label.setObjectName("corpus_split_label")
        self.split_label.setWordWrap(True)
        split_layout.addWidget(self.split_form)
        split_layout.addWidget(self.split_label)

        self.files_model = FilesModel(self)
        self.files_view = QTableView(self)
        self.files_view.setObjectName("corpus_files_table")
        self.files_view.setToolTip("The files of the corpus (hover a row for its full path)")
        self.files_view.setModel(self.files_model)
        self.files_view.verticalHeader().hide()
        self.files_view.setAlternatingRowColors(True)
        self.files_view.setSelectionBehavior(QTableView.SelectRows)
        header = self.files_view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for col in range(1, len(FilesModel.HEADERS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeToContents)
        self.preview = QPlainTextEdit(self)
        self.preview.setObjectName("corpus_preview_text")
        self.preview.setToolTip("The beginning of the corpus, as the tokenizer will read it")
        self.preview.setReadOnly(True)
        self.preview.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.preview.setPlaceholderText("Open a corpus to see its text here.")

        buttons = QHBoxLayout()
        for b in (self.open_files_button, self.open_folder_button, self.sample_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        splitter = QSplitter(Qt.Vertical, self)
        splitter.setObjectName("corpus_splitter")
        self.record_preview = RecordPreview(self, "corpus_record")
        self.record_preview.hide()
        splitter.addWidget(self.files_view)
        splitter.addWidget(self.preview)
        splitter.addWidget(self.record_preview)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.source_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.messages)
        replace_row = QHBoxLayout()
        replace_row.addWidget(self.replace_button)
        replace_row.addStretch(1)
        layout.addLayout(replace_row)
        layout.addWidget(stats)
        layout.addWidget(self.records_box)
        layout.addWidget(split_box)
        layout.addWidget(splitter, 1)

        self.open_files_button.clicked.connect(self._on_open_files_clicked)
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)
        self.sample_button.clicked.connect(self._on_sample_clicked)
        self.progress.cancel_requested.connect(self._on_progress_cancel_requested)
        self.replace_button.clicked.connect(self._on_replace_button_clicked)
        self.messages.dismissed.connect(self._on_messages_dismissed)
        self.session.corpus_loading.connect(self._on_session_corpus_loading)
        self.session.corpus_progressed.connect(self._on_session_corpus_progressed)
        self.session.corpus_opened.connect(self._on_session_corpus_opened)
        self.session.corpus_failed.connect(self._on_session_corpus_failed)
        self.session.corpus_cancelled.connect(self._on_session_corpus_cancelled)
        self.session.split_changed.connect(self._on_session_split_changed)
        self.session.tokenizer_changed.connect(self._on_session_tokenizer_changed)
        self.config.values_changed.connect(self._on_config_values_changed)
        self.record_preview.index_changed.connect(self._on_record_preview_index_changed)
        self._records_task: Task | None = None
        self._encoded: tuple[Any, Any, Any] | None = None  # (tokenizer, EncodedRecords, RecordLengths)
        if self.session.corpus is not None:
            self._on_session_corpus_opened(self.session.corpus)

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.session, ctx.config)

    def shutdown(self) -> bool:
        if self._records_task is not None and self._records_task.is_running():
            return self._records_task.wait(5000)
        return True

    def _button(self, text: str, name: str, tip: str) -> QPushButton:
        button = QPushButton(text, self)
        button.setObjectName(name)
        button.setToolTip(tip)
        return button

    # -- user actions --------------------------------------------------------
    def _on_open_files_clicked(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open corpus files", "", CORPUS_FILTER)
        if files:
            self.session.open_corpus(files)

    def _on_open_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open corpus folder")
        if folder:
            self.session.open_corpus([folder])

    def _on_sample_clicked(self) -> None:
        self.session.open_corpus([])

    def _on_progress_cancel_requested(self) -> None:
        self.session.cancel_corpus()

    def _on_replace_button_clicked(self) -> None:
        self.replace_button.hide()
        self.session.reopen_replacing_invalid_bytes()

    def _on_messages_dismissed(self) -> None:
        self.replace_button.hide()

    # -- session signals -----------------------------------------------------
    def _on_session_corpus_loading(self, sources: list[str]) -> None:
        self.messages.clear()
        self.replace_button.hide()
        self.progress.start("Reading corpus…")

    def _on_session_corpus_progressed(self, phase: str, done: int, total: int) -> None:
        self.progress.set_progress(phase, done, total)

    def _on_session_corpus_opened(self, info: CorpusInfo) -> None:
        self.progress.finish()
        corpus = info.corpus
        replaced = info.errors == "replace"
        self.source_label.setText(corpus_label(info) + (" (invalid bytes replaced)" if replaced else ""))
        self.source_label.setToolTip("\n".join(str(f.path) for f in corpus.files[:50]))
        self.stat_labels["files"].setText(f"{corpus.n_files:,}")
        self.stat_labels["documents"].setText(f"{corpus.n_documents:,}")
        self.stat_labels["chars"].setText(human_count(corpus.n_chars))
        self.stat_labels["chars"].setToolTip(f"{corpus.n_chars:,} characters")
        self.stat_labels["lines"].setText(f"{corpus.n_lines:,}")
        self.stat_labels["bytes"].setText(human_bytes(corpus.n_bytes))
        self.files_model.set_files(corpus.files)
        self.preview.setPlainText(info.preview)
        self._show_split(info.split)
        self._show_records(info)
        replaced_note = "Read with each invalid UTF-8 byte replaced by \ufffd (U+FFFD)." if replaced else ""
        if info.warnings:
            more = f" (and {len(info.warnings) - 3} more)" if len(info.warnings) > 3 else ""
            text = "; ".join(info.warnings[:3]) + more
            self.messages.show_message(f"{replaced_note} {text}".strip(), "warning", "\n".join(info.warnings))
        elif replaced:
            self.messages.show_message(replaced_note, "info")
        else:
            self.messages.clear()

    def _on_session_corpus_failed(self, message: str, detail: str, expected: bool) -> None:
        self.progress.finish()
        self.messages.show_message(f"Could not open the corpus: {message}", "error", detail)
        self.replace_button.setVisible(self.session.invalid_utf8_sources is not None)

    def _on_session_corpus_cancelled(self) -> None:
        self.progress.finish()
        self.messages.show_message("Opening the corpus was cancelled.", "info")

    def _on_session_split_changed(self, split: Any) -> None:
        self._show_split(split)

    def _show_split(self, split: Any) -> None:
        if split is None:
            self.split_label.setText("–")
            return
        noun = "example" if split.mode == "examples" else "document"

        def docs(n: int) -> str:
            return f"{n:,} {noun}" + ("" if n == 1 else "s")

        self.split_label.setText(
            f"Train: {docs(split.train_documents)}, {human_count(split.train_chars)} characters · "
            f"Validation: {docs(split.val_documents)}, {human_count(split.val_chars)} characters"
            + (" (the document is cut in two)" if split.mode == "cut" else "")
        )

    # -- records ---------------------------------------------------------------
    def _is_records(self) -> bool:
        info = self.session.corpus
        return info is not None and bool(getattr(info.corpus, "is_records", False))

    def _show_records(self, info: CorpusInfo) -> None:
        records = bool(getattr(info.corpus, "is_records", False))
        self.records_box.setVisible(records)
        self.record_preview.setVisible(records)
        self.preview.setVisible(not records)
        self.stat_titles["documents"].setText("Examples" if records else "Documents")
        self._encoded = None
        if not records:
            return
        corpus = info.corpus
        n, chats = corpus.n_examples, corpus.n_chats
        kinds = "chats" if chats == n else "prompt/completion" if chats == 0 else f"{chats:,} chat{'' if chats == 1 else 's'}, {n - chats:,} prompt/completion"
        self.record_labels["examples"].setText(f"{n:,} ({kinds})")
        for key in ("prompt", "completion", "context"):
            self.record_labels[key].setText("– (waiting for the tokenizer)")
        self.record_preview.set_count(n)
        self._show_example(self.record_preview.index())
        if self.session.tokenizer is not None:
            self._on_session_tokenizer_changed(self.session.tokenizer)

    def _on_session_tokenizer_changed(self, info: Any) -> None:
        if not self._is_records():
            return
        self._encoded = None
        if info is None:
            return
        task = Task(_encode_records(self.session.corpus.corpus, info.tokenizer), "Measuring examples")
        task.succeeded.connect(self._on_records_task_succeeded)
        task.failed.connect(self._on_records_task_failed)
        if self._records_task is not None and self._records_task.is_running():
            self._records_task.cancel()
        self._records_task = task
        task.start()

    def _on_records_task_succeeded(self, result: Any) -> None:
        if self.sender() is not self._records_task or result is None or not self._is_records():
            return
        self._encoded = result
        self._show_record_figures()
        self._show_example(self.record_preview.index())

    def _on_records_task_failed(self, message: str, detail: str, expected: bool) -> None:
        if self.sender() is self._records_task:
            self.messages.show_message(f"Could not measure the examples: {message}", "error", detail)

    def _on_config_values_changed(self, keys: set[str]) -> None:
        if self._encoded is not None and keys & set(CONTEXT_KEYS):
            self._show_record_figures()

    def _show_record_figures(self) -> None:
        from shiftstudio.core.data.records import context_warnings, spread_text

        _, _, lengths = self._encoded
        block_size, shift = int(self.config.value("block_size")), int(self.config.value("shift"))
        stats = lengths.stats(block_size, shift)
        self.record_labels["prompt"].setText(spread_text(stats["prompt_tokens"]))
        self.record_labels["completion"].setText(spread_text(stats["completion_tokens"]))
        warnings = context_warnings(stats["examples"], stats["truncated"], stats["unscorable"], block_size, shift)
        self.record_labels["context"].setText(
            ("⚠ " if warnings else "")
            + f"block_size {block_size} + shift {shift}: {stats['truncated']:,} of {stats['examples']:,} truncated, "
            f"{stats['unscorable']:,} without a scored token"
        )
        self.record_labels["context"].setToolTip("\n".join(warnings) or "Every example fits the context")

    def _on_record_preview_index_changed(self, i: int) -> None:
        self._show_example(i)

    def _show_example(self, i: int) -> None:
        """Example ``i``: token-exact from the encoded set once there is one, else from the record's text."""
        if not self._is_records():
            return
        if self._encoded is not None:
            from shiftstudio.core.data.records import decode_marked

            tokenizer, encoded, lengths = self._encoded
            if not 0 <= i < len(encoded):
                return
            ids, mask = encoded.example(i)
            scored = int(lengths.scored[i])
            caption = f"{len(ids):,} tokens: {len(ids) - scored:,} context, {scored:,} scored"
            if len(ids) > int(self.config.value("block_size")) + int(self.config.value("shift")):
                caption += " (truncated at this context)"
            self.record_preview.show_segments(decode_marked(tokenizer, ids, mask), caption)
            return
        record = next(itertools.islice(self.session.corpus.corpus.iter_records(), i, None), None)
        if record is not None:
            from shiftstudio.core.data.tokenizer import EOT

            self.record_preview.show_segments(
                [(t + (EOT if scored else ""), scored) for t, scored in record.segments],
                f"{sum(len(t) for t, _ in record.segments):,} characters (token counts come with the tokenizer)",
            )


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(CorpusPane))
