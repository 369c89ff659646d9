"""Stop strings in streamed text (gmai.infer.local's stream helper): held back across pieces."""

import threading

import pytest

from gmai.infer.local import _stop_aware


def _run(pieces, stop):
    halt = threading.Event()
    gen = _stop_aware(iter(pieces), stop, halt)
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as end:
            return "".join(out), end.value, halt.is_set()


@pytest.mark.parametrize("pieces,stop,expected", [
    (["Hello ", "wor", "ld END more"], ["END"], "Hello world"),
    (["abc", "de", "f"], ["cd"], "ab"),  # the stop string straddles two pieces
    (["  lead", "ing"], [], "leading"),  # leading whitespace stripped like complete()
    (["no stop here"], ["XYZ"], "no stop here"),
    (["E", "N", "D"], ["END"], ""),
])
def test_stop_aware(pieces, stop, expected):
    text, stopped, halted = _run(pieces, stop)
    assert text == expected
    assert stopped == halted == any(s in "".join(pieces) for s in stop)


def test_nothing_after_a_stop_string_is_emitted():
    text, _, _ = _run(["The END", " of the text"], ["END"])
    assert text == "The"
