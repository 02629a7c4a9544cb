"""Shared by the CLI tests: run ``coarsegrad ARGV`` in-process and capture its output."""

from coarsegrad.cli.main import main


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``coarsegrad ARGV``; no traceback may reach the user."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err
