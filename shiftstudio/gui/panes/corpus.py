"""Corpus pane: pick files or a folder, see their counts, a preview and the split."""

from __future__ import annotations

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
from shiftstudio.gui.widgets.config_form import ConfigForm
from shiftstudio.gui.widgets.message_bar import MessageBar
from shiftstudio.gui.widgets.progress_panel import ProgressPanel

CORPUS_FILTER = "Text (*.txt *.md *.py *.jsonl *.ndjson *.rst *.json *.csv);;All files (*)"


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
        for i, (key, title) in enumerate((("files", "Files"), ("documents", "Documents"), ("chars", "Characters"), ("lines", "Lines"), ("bytes", "Size"))):
            name = QLabel(title, stats)
            value = QLabel("–", stats)
            value.setObjectName(f"corpus_stat_{key}")
            grid.addWidget(name, 0, i)
            grid.addWidget(value, 1, i)
            self.stat_labels[key] = value

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
        splitter.addWidget(self.files_view)
        splitter.addWidget(self.preview)
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
        if self.session.corpus is not None:
            self._on_session_corpus_opened(self.session.corpus)

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.session, ctx.config)

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
        def docs(n: int) -> str:
            return f"{n:,} document" + ("" if n == 1 else "s")

        self.split_label.setText(
            f"Train: {docs(split.train_documents)}, {human_count(split.train_chars)} characters · "
            f"Validation: {docs(split.val_documents)}, {human_count(split.val_chars)} characters"
            + (" (the document is cut in two)" if split.mode == "cut" else "")
        )


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(CorpusPane))
