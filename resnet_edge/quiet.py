"""Libraries that print: litert-torch, torchao, ExecuTorch and the MLIR converter under them write pages of logs and
warnings while converting, and LiteRT's interpreter a line per interpreter, some from C++ straight to file
descriptors 1 and 2."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings


@contextlib.contextmanager
def quiet():
    """Keep a converter's logs off the user's terminal (and the progress bar) while it runs; its exceptions still
    reach the caller."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        root.setLevel(level)


@contextlib.contextmanager
def captured_stderr():
    """What a C++ library writes to file descriptor 2 while the block runs, as a list that holds the text once the
    block has ended (ncnn's parser says why a file did not load only there)."""
    import tempfile

    holder: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield holder
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            holder.append(tmp.read().decode(errors="replace"))
