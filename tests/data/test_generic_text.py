from deltamem_agents.data.generic_text import (
    prose_paragraphs,
    python_reference_passages,
    stdlib_docstring_text,
)

LONG = "This sentence is plain running text about nothing in particular, written to be long enough. " * 4


def test_prose_paragraphs_keep_running_text_and_drop_code_and_short_lines():
    text = f"{LONG}\n\n    indented = code()\n\n>>> print('example')\n\nToo short.\n\n{LONG.replace('plain', 'more')}"
    kept = prose_paragraphs(text)
    assert len(kept) == 2 and all("code" not in p and ">>>" not in p for p in kept)
    assert "  " not in kept[0]  # whitespace normalised


def test_the_training_text_and_the_checked_text_share_no_paragraph():
    trained = stdlib_docstring_text()
    checked = python_reference_passages(29)
    assert len(trained) >= 10 and sum(map(len, trained)) > 20_000
    trained_sentences = {s for t in trained for s in t.split(". ") if len(s) > 60}
    checked_sentences = {s for t in checked for s in t.split(". ") if len(s) > 60}
    assert trained_sentences and checked_sentences and not trained_sentences & checked_sentences


def test_stdlib_docstrings_are_read_without_importing_and_bad_files_are_skipped(tmp_path):
    (tmp_path / "good.py").write_text(f'"""{LONG}"""\nraise SystemExit("never imported")\n')
    (tmp_path / "broken.py").write_text('"""unterminated\n')
    (tmp_path / "short.py").write_text('"""Short."""\n')
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe\x00")
    assert stdlib_docstring_text(min_chars=100, root=tmp_path) == [" ".join(LONG.split())]
