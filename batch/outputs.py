"""Where `predmesh batch score` may write: the rule for an output path the user names, checked before any row is
scored (and once more right before a file is named into place).

The rule: an absent path in an existing, writable directory is created; an existing regular file is replaced
(atomically); a symlink is written through (the link stays, the regular file it names, or the absent path in an
existing directory it names, gets the content, atomically through that file's directory); anything else that
exists (a device, a fifo, a directory, a socket, a link to one of these) is refused and never replaced."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


class OutputError(Exception):
    """An output path cannot be written under the rule above (the message names the user's path)."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))


def kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def refuse_non_regular(path: Path, shown: str) -> None:
    """OutputError when `path` exists and is not a regular file (it is never followed: a link is not regular)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{shown}: cannot inspect {path} ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise OutputError(f"{shown}: {path} is {kind(mode)}, not a regular file; an output is written only to a "
                          "regular file or a new path")


def writable_directory(directory: Path, shown: str) -> None:
    """OutputError unless a file can be created in `directory` (tried for real: permissions, a read-only mount)."""
    if not directory.exists():
        raise OutputError(f"{shown}: the directory {directory} does not exist")
    if not directory.is_dir():
        raise OutputError(f"{shown}: {directory} is not a directory")
    try:
        tempfile.TemporaryFile(dir=directory).close()  # an unnamed file (O_TMPFILE) where the system has it
    except OSError as exc:
        raise OutputError(f"{shown}: cannot write in the directory {directory} ({exc.strerror})") from None


def output_file(path: Path, option: str) -> Path:
    """The regular file to write for the path the user gave as `option` (the path itself, or what its symlinks
    name), checked under the module's rule. Raises OutputError naming the user's path."""
    path = Path(path)
    shown = f"{option} {path}"
    target = path
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.is_symlink():
            raise OutputError(f"{shown}: a symlink that does not resolve (a loop?)")
        shown = f"{shown} (a symlink to {target})"
    writable_directory(target.parent, shown)
    refuse_non_regular(target, shown)
    return target


def same_file(a: Path, b: Path) -> bool:
    """The same file, by name after links or, when both exist, by device and inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(input_path: Path, output: Path, rejects: Path) -> tuple[Path, Path]:
    """The files to write for --output and --rejects, checked before any work: each under the rule, neither the
    input, and not the same file as each other. Raises OutputError."""
    out_file = output_file(output, "--output")
    rejects_file = output_file(rejects, "--rejects")
    for path, option in ((output, "--output"), (rejects, "--rejects")):
        if same_file(path, input_path):
            raise OutputError(f"{option} {path} is the input file {input_path}; name another file")
    if same_file(output, rejects):
        raise OutputError(f"--rejects {rejects} and --output {output} are the same file; the rejects would be "
                          "lost (name another file for one of them)")
    return out_file, rejects_file
