"""Live-preview slices depend on the text only, never on how it arrived: a saved notebook's outputs are stable."""
import random

from nb_model.display import SLICE_CHARS, LiveOutput, slice_end
from nb_model.sandbox.engine import SimulatedEngine

S = SLICE_CHARS


def test_slice_ends_after_a_line_end_else_a_space_else_at_twice_the_size():
    assert slice_end("a" * S, 0) is None  # too short to tell
    assert slice_end("a" * (S + 5) + "\nrest", 0) == S + 6
    lines = "a\n" * S
    assert slice_end(lines, 10) == lines.index("\n", 10 + S) + 1  # the first line end past S characters
    words = "word " * S
    end = slice_end(words, 0)
    assert S < end <= 2 * S and words[end - 1] == " " and words[:end].count(" ") == end // 5
    assert slice_end(words[:2 * S - 1], 0) is None  # a space may still come: wait
    assert slice_end("x" * 3 * S, 0) == 2 * S  # no break at all: cut


def test_slices_are_the_same_whatever_the_deltas(capsys):
    text = "".join(SimulatedEngine().generate("write a long essay about rivers", max_tokens=1500, temperature=0.7,
                                              top_p=1.0, top_k=0, language="en", seed=None))
    whole = LiveOutput("markdown")
    whole.write(text)
    expected = whole._slices()
    assert len(expected) > 10 and "".join(text[a:b] for a, b in expected) == text
    assert all(S < b - a <= 2 * S for a, b in expected[:-1])
    for seed in range(3):
        rng, live, pos = random.Random(seed), LiveOutput("markdown"), 0
        while pos < len(text):
            step = rng.choice((1, 3, 17, 200, 900))
            live.write(text[pos:pos + step])
            pos += step
            live._slices()  # what a preview update computes on the way
        assert live._slices() == expected
