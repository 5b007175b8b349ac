"""Checkpoints from local files only: nothing is downloaded unless a config says allow_hub = true."""

from __future__ import annotations


def from_local(loader, source: str, allow_hub: bool = False, **kwargs):
    """`loader.from_pretrained(source)` from a local folder or the local Hugging Face cache only (the hub
    only when allowed), with one clear error when the checkpoint is not here."""
    try:
        return loader.from_pretrained(source, local_files_only=not allow_hub, **kwargs)
    except OSError as err:
        raise FileNotFoundError(
            f"{source!r} is not a local checkpoint folder or in the local Hugging Face cache "
            "(nothing is downloaded unless [model] allow_hub = true)") from err
