"""Test helpers without side effects (tests/conftest.py sets torch's thread count when imported;
scripts that tests start under torchrun import from here so they compute as the CLI does)."""

from __future__ import annotations


class StopAfter:
    """Wraps a loader and raises ``exc`` after ``n`` batches, like a kill mid-run."""

    def __init__(self, loader, n: int, exc: BaseException | type[BaseException] = KeyboardInterrupt) -> None:
        self.loader, self.n, self.exc, self.count = loader, n, exc, 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, *args, **kwargs) -> None:
        self.loader.set_epoch(*args, **kwargs)

    def __iter__(self):
        for batch in self.loader:
            if self.count == self.n:
                raise self.exc
            self.count += 1
            yield batch


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI on ``argv`` and return its one error line (exit 2, one ``error: `` line, no traceback)."""
    from beyondkd.cli.main import main

    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return lines[0]
