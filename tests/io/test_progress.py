import io

from coarsegrad.io.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_draws_count_total_and_fields_on_a_terminal():
    stream = Terminal()
    bar = Progress(4, "train", stream=stream, interval=0)
    bar.update(1, loss=0.123456, acc=1)
    bar.update(10)  # clamped to the total
    bar.close()
    text = stream.getvalue()
    assert bar.count == 4
    assert "train" in text and "4/4" in text and "loss=0.1235" in text and "acc=1" in text


def test_silent_off_a_terminal_or_when_disabled():
    for stream, enabled in ((io.StringIO(), True), (Terminal(), False)):
        bar = Progress(3, "x", stream=stream, enabled=enabled, interval=0)
        bar.update(2, loss=1.0)
        bar.close()
        assert bar.count == 2 and stream.getvalue() == ""


def test_zero_total_counts_as_one():
    bar = Progress(0, enabled=False)
    bar.update(5)
    bar.close()
    assert (bar.total, bar.count) == (1, 1)
