"""The public surface of langchain_deltamem, pinned."""

import langchain_deltamem
import pytest

EXPECTED_ALL = ["DeltaMemChatMessageHistory", "DeltaMemLLM", "DeltaMemRetriever", "__version__"]


def test_all_imports_are_pinned():
    assert sorted(langchain_deltamem.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(langchain_deltamem, name) is not None
    assert langchain_deltamem.__version__ == "0.1.0"


@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket")
def test_tiny_model_tests_run_with_the_network_off():
    import socket

    import pytest_socket

    with pytest.raises(pytest_socket.SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
