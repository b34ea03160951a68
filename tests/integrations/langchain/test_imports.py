"""The public surface of langchain_deltamem, pinned."""

import langchain_deltamem

EXPECTED_ALL = ["DeltaMemChatMessageHistory", "DeltaMemLLM", "DeltaMemRetriever", "__version__"]


def test_all_imports_are_pinned():
    assert sorted(langchain_deltamem.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(langchain_deltamem, name) is not None
    assert langchain_deltamem.__version__ == "0.1.0"
