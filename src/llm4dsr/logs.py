"""Logging set-up used by the workflow scripts: one log file per rule, plus stderr."""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

INTERRUPTED = "interrupted; rerun the same command to resume"

def setup(log_file: str | None = None, level: int = logging.INFO) -> logging.Logger:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return logging.getLogger("llm4dsr")


@contextlib.contextmanager
def rule_log(log_file: str | None) -> Iterator[logging.Logger]:
    """Context of a workflow script: logs to the rule's log file, and turns a user-input
    error into a one-line message and a non-zero exit instead of a traceback.

    Either way the rule's log ends with the error: a user-input error as its one line;
    anything else (a bug) with its traceback, then one line that says so. Two events of
    the environment are no bug and get one line too: a full disk, and Ctrl-C (every job
    of the run gets the SIGINT; outputs are written atomically, so rerunning resumes).
    """
    from .io import Llm4dsrError, disk_full, disk_full_error

    log = setup(log_file)
    try:
        yield log
    except Llm4dsrError as exc:
        log.error("%s", exc)
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        log.error(INTERRUPTED)
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)  # 128 + SIGINT, as a shell reports it
    except Exception as exc:
        if disk_full(exc):  # a write outside io's atomic helpers (those name their file already)
            full = disk_full_error(getattr(exc, "filename", None) or log_file or "an output")
            log.error("%s", full)
            sys.exit(f"error: {full}")
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        log.exception("unexpected error (a bug of llm4dsr, please report it)")
        log.error("%s", message)
        sys.exit(f"error: unexpected {message} (a bug: the traceback is in {log_file or 'the output above'})")
