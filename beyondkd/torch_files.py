"""What a file that ``torch.load`` refused is, said in one line with what to do.

``torch.load``'s own messages describe the loader, not the file (``EOFError``, ``101``, "retry
with weights_only disabled" for a file that is merely cut short). :func:`unreadable_reason`
looks at the file itself: empty, a PyTorch archive cut short or damaged, a text file, an
archive intact but holding Python objects beyond tensors (the one case where
``weights_only=False`` can help), or an unknown format.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

#: what to do with a file that cannot be repaired by loading it differently
DAMAGED_FIX = "restore it from a copy or use another checkpoint (a run folder's best.pt or last.pt)"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _archive_intact(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def unreadable_reason(path: str | Path, exc: BaseException, weights_only: bool, unsafe_hint: str = "weights_only=False") -> str:
    """``"it is ...: <what to do>"`` for a file ``torch.load`` failed on with ``exc``.

    Args:
        path: the file.
        exc: the exception ``torch.load`` raised.
        weights_only: whether it was loaded with ``weights_only=True``.
        unsafe_hint: how the caller's user turns ``weights_only`` off (an option name).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(256)
    if size == 0:
        return f"it is empty (0 bytes): {DAMAGED_FIX}"
    if head.startswith(b"PK\x03\x04"):
        if not _archive_intact(path):
            return f"it is a PyTorch checkpoint cut short or damaged ({size} bytes, its archive is incomplete): {DAMAGED_FIX}"
        if weights_only and "weights only" in str(exc).lower():
            return (f"it holds Python objects beyond tensors, which weights_only loading refuses: if you trust "
                    f"its source, load it with {unsafe_hint}")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"it is a PyTorch archive whose contents cannot be read ({first}): {DAMAGED_FIX}"
    if head.startswith(b"\x80"):  # a pickle: torch's legacy (non-zip) format
        extra = f", or if you trust its source load it with {unsafe_hint}" if weights_only else ""
        return f"it is a legacy-format PyTorch file that cannot be read (damaged or holding Python objects): {DAMAGED_FIX}{extra}"
    if _looks_like_text(head):
        start = head.decode("utf-8").strip().splitlines()[0][:40] if head.strip() else ""
        return f"it is a text file, not a PyTorch checkpoint (it starts with {start!r}): give the .pt file written by beyondkd"
    return f"it is not a PyTorch checkpoint (unknown format, {size} bytes): give the .pt file written by beyondkd"
