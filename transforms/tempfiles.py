"""Folders of a job's temporary files (the sinks' parts, the batch learner's runs), through
Beam's `FileSystems`, so that they work on local disks and object stores alike."""
from __future__ import annotations

from apache_beam.io.filesystems import FileSystems


def delete_folder(path: str) -> None:
    """Deletes a folder of temporary files, if there is one. An object store has no folders:
    what is under its prefix is listed and deleted file by file.

    >>> import os, tempfile
    >>> folder = os.path.join(tempfile.mkdtemp(), "parts")
    >>> os.makedirs(folder); open(os.path.join(folder, "part-1"), "w").close()
    >>> delete_folder(folder); delete_folder(folder); os.path.exists(folder)
    False
    """
    files = [m.path for m in FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(path):
        FileSystems.delete([path])
