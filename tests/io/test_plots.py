"""coarsegrad.io.plots: PNGs written atomically, figures closed."""

from coarsegrad.io.plots import pyplot, save_png


def test_save_png_writes_a_png_in_place_and_closes_the_figure(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "deep" / "plot.png"
    save_png(fig, path, bbox_inches="tight")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]  # no temporary file left
    assert fig.number not in plt.get_fignums()
