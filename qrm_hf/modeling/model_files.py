"""Model folders and Hub ids: checked before anything loads them (the encoder a run fine-tunes, the reward model
a scorer, the prediction command or a reward function loads), and a reward model saved as they expect it.

Loading a bad folder fails late and says little: a truncated `model.safetensors` raises a bare SafetensorError, a
missing folder is reported as a malformed Hub repo id, and an encoder folder without tokenizer files silently
gets a 5-token tokenizer that turns every word into `[UNK]`. These checks say what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import cached_file

from ..data import looks_like_path

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
LEGACY_WEIGHTS_FILE = "pytorch_model.bin"
REWARD_MODEL_TYPE = "query_reward"  # QueryRewardConfig.model_type, without importing the model here

# The tokenizer check reads this many training queries and refuses a tokenizer that maps more than this share of
# their tokens to its unknown token (a real tokenizer maps well under 1% of this data there).
TOKENIZER_CHECK_QUERIES = 200
MAX_UNKNOWN_TOKEN_SHARE = 0.5


class EncoderError(ValueError):
    """An encoder (`--model` of a run) that cannot be fine-tuned; the message names it and the fix."""


def resolve_config_file(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """The `config.json` of a local model folder or of a Hub repo (fetched into the cache), or an OSError
    saying what is missing: no such folder (for a value that can only be a path), a file instead of a folder,
    a folder without config.json, a Hub repo that cannot be reached."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise OSError(
                f"{folder} is not a model folder: it has no config.json "
                "(save one with qrm_hf.modeling.model_files.save_model_folder or model.save_pretrained)"
            )
        return config_file
    if folder.exists():
        raise OSError(f"{folder} is a file; expected a model folder or a Hub repo id")
    if looks_like_path(str(name_or_path)):
        raise FileNotFoundError(
            f"{name_or_path}: no such folder (resolved to {folder.resolve()}); give a model folder or a Hub repo id "
            "such as org/name"
        )
    try:
        return Path(cached_file(str(name_or_path), "config.json", revision=revision))
    except OSError as error:
        # transformers' message names neither the repo nor the file when offline or the Hub is unreachable.
        raise OSError(
            f"{name_or_path} is neither a local folder nor a Hub repo whose config.json could be fetched "
            f"(revision {revision or 'main'}): {error}"
        ) from error


def read_model_config(config_file: Path) -> dict[str, Any]:
    """The mapping in a `config.json`; ValueError naming the file when it is not a JSON object."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} is not a JSON object of config values")
    return config


def check_weights(folder: Path) -> None:
    """Raise OSError naming the weights file of `folder` when it is missing, empty, truncated or not safetensors.

    Opening a safetensors file reads its header and checks that the file covers every tensor it lists, so an
    interrupted save or download is found without loading a single weight.
    """
    from safetensors import safe_open

    single, index = folder / WEIGHTS_FILE, folder / WEIGHTS_INDEX_FILE
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = read_model_config(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise OSError(f"{index} is incomplete or corrupt: it has no weight_map; save the model again")
        files = [folder / name for name in sorted(set(weight_map.values()))]
    elif (folder / LEGACY_WEIGHTS_FILE).is_file():
        return  # the pickle format has no header to check; transformers reports its own errors there
    else:
        raise OSError(
            f"{folder} has no weights ({WEIGHTS_FILE}): the folder is incomplete; save the model again "
            "(model.save_pretrained) or download it again"
        )
    for file in files:
        if not file.is_file():
            raise OSError(f"{file} is missing (listed in {index.name}): the folder is incomplete; save it again")
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as error:  # SafetensorError, and OSError for unreadable files
            size = file.stat().st_size
            raise OSError(
                f"{file} is incomplete or corrupt ({size} bytes; {error}): an interrupted save or download; "
                "save or download the model again"
            ) from None


def check_encoder(model: str, name_or_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The config of the encoder a run fine-tunes (`model` as the user gave it, `name_or_path` where it loads
    from), or EncoderError: a missing folder or unreachable repo, a saved query reward model instead of an
    encoder, incomplete weights."""
    name_or_path = model if name_or_path is None else name_or_path
    try:
        config = read_model_config(resolve_config_file(name_or_path))
    except (OSError, ValueError) as error:
        raise EncoderError(f"--model: {error}") from None
    if config.get("model_type") == REWARD_MODEL_TYPE:
        encoder = config.get("encoder") if isinstance(config.get("encoder"), dict) else {}
        origin = encoder.get("_name_or_path")
        hint = f" ({origin} when it was trained)" if origin else " (its model card's base_model)"
        raise EncoderError(
            f"--model {model} is a saved query reward model, not an encoder: pass the encoder it was fine-tuned "
            f"from{hint}"
        )
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        try:
            check_weights(folder)
        except (OSError, ValueError) as error:
            raise EncoderError(f"--model: {error}") from None
    return config


# Encoders whose position ids start after the padding index: two positions fewer than the config says.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "roberta-prelayernorm", "mpnet"}


def encoder_positions(config: dict[str, Any]) -> int | None:
    """The longest input, in tokens, that the encoder has positions for (None when its config does not say)."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    return positions - 2 if config.get("model_type") in _OFFSET_POSITIONS else positions


def check_max_length(max_length: int, config: dict[str, Any], model: str) -> None:
    """EncoderError when a run's `max_length` exceeds the encoder's positions: every longer input would fail."""
    positions = encoder_positions(config)
    if positions is not None and max_length > positions:
        raise EncoderError(
            f"max_length {max_length} exceeds what --model {model} can read ({positions} positions, "
            f"max_position_embeddings in its config): set max_length <= {positions}"
        )


def check_reward_model(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """Return the path of the `config.json` of a query reward model, or raise saying what is missing.

    Checked before loading because `from_pretrained` on another kind of model, on a missing folder or on an
    interrupted save gives errors that do not say the real problem. A local folder must hold a config.json of
    model_type `query_reward`, complete weights (`model.safetensors`) and a tokenizer; a path that does not exist
    is reported as a missing folder, not as a malformed Hub repo id.
    """
    config_file = resolve_config_file(name_or_path, revision)
    config = read_model_config(config_file)
    model_type = config.get("model_type")
    if model_type != REWARD_MODEL_TYPE:
        raise ValueError(
            f"{name_or_path} is not a query reward model: its config.json has model_type {model_type!r}, "
            f"expected {REWARD_MODEL_TYPE!r}"
        )
    check_reward_config(config, config_file)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            raise OSError(
                f"{folder} has no tokenizer (tokenizer.json or tokenizer_config.json): save it beside the model"
            )
        check_weights(folder)
    return config_file


def check_reward_config(config: dict[str, Any], config_file: Path) -> None:
    """ValueError naming the file and key when a reward model's config.json holds a value out of its domain:
    `decision_threshold` a number in [0, 1], `max_length` a whole number from 2 to the encoder's positions,
    `ensemble_size` a whole number >= 1, the head's sizes whole numbers, `use_layer_norm` true or false. Read
    before any weight is loaded."""
    import math

    def number(key: str) -> Any:
        value = config.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{config_file}: {key} = {value!r} is not a finite number")
        return value

    threshold = number("decision_threshold")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{config_file}: decision_threshold = {threshold!r} is not in [0, 1]")
    for key, least in (("max_length", 2), ("ensemble_size", 1), ("num_hidden_layers", 0)):
        value = number(key)  # max_length: the tokenizer's start and end tokens alone take 2
        if value is not None and (value != int(value) or value < least):
            raise ValueError(f"{config_file}: {key} = {value!r} is not a whole number >= {least}")
    if "use_layer_norm" in config and not isinstance(config["use_layer_norm"], bool):
        raise ValueError(f"{config_file}: use_layer_norm = {config['use_layer_norm']!r} is not true or false")
    encoder = config.get("encoder")
    if "encoder" in config and not (isinstance(encoder, dict) and isinstance(encoder.get("model_type"), str)):
        raise ValueError(
            f"{config_file}: encoder = {json.dumps(encoder)[:80]} is not an encoder's config (a mapping with its "
            "model_type, as save_pretrained writes it)"
        )
    max_length = config.get("max_length")
    if isinstance(encoder, dict) and isinstance(max_length, int):
        positions = encoder_positions(encoder)
        if positions is not None and max_length > positions:
            raise ValueError(
                f"{config_file}: max_length = {max_length} exceeds the encoder's {positions} positions "
                "(encoder.max_position_embeddings): every longer input would fail; set max_length <= "
                f"{positions}"
            )


def save_reward_model(model: Any, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """Save model, tokenizer and remote code in one folder that `from_pretrained` reloads, with or without
    qrm_hf installed (what `check_reward_model` accepts)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_model_folder(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    extras: Callable[[Path], object] | None = None,
) -> Path:
    """Save a reward model (see `save_reward_model`) and what `extras` writes beside it (its card), atomically:
    all is written into a folder beside `folder` that replaces it by one rename once complete, so a failed save
    (disk full, no permission) leaves no folder that later loads, and says how much space the model needs."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_reward_model(model, tokenizer, staging)
        if extras is not None:
            extras(staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except Exception as error:
        needed = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
        free = shutil.disk_usage(folder.parent).free
        raise OSError(
            f"could not save the model to {folder} ({type(error).__name__}: {error}); it needs about "
            f"{needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB are free in {folder.parent}; nothing was left there"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def push_folder(
    folder: Path, repo_id: str, private: bool = False, commit_message: str | None = None, revision: str | None = None
) -> str:
    """Upload a saved model folder to the Hub; without network or token the error says so and nothing changes."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            commit_message=commit_message or "Upload query reward model",
            revision=revision,
        )
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise RuntimeError(
            f"could not push {folder} to {repo_id}: {error}. Log in with `hf auth login` or set HF_TOKEN, "
            "check the network, then run scripts/push.py on the saved folder."
        ) from error
    return str(info)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (transformers' and torch's run over several), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_tokenizer(model: str, name_or_path: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """The encoder's tokenizer, or EncoderError saying the folder lacks usable tokenizer files."""
    name_or_path = model if name_or_path is None else name_or_path
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as error:
        raise EncoderError(
            f"--model {model}: no tokenizer could be loaded ({first_line(error)}): an encoder folder needs the "
            "tokenizer files it was trained with (tokenizer.json or vocab.txt, tokenizer_config.json, "
            "special_tokens_map.json)"
        ) from None


def check_tokenizer(
    tokenizer: PreTrainedTokenizerBase, queries: Sequence[str], model: str, vocab_size: int | None = None
) -> None:
    """Refuse a tokenizer that cannot encode the training queries: most of their tokens unknown (the folder's
    tokenizer files are missing, so transformers built an empty vocabulary), or token ids beyond the encoder's
    vocabulary (the tokenizer of another model). `queries` are the first training queries."""
    sample = list(queries[:TOKENIZER_CHECK_QUERIES])
    if not sample:
        return
    rows = tokenizer(sample, add_special_tokens=True, return_token_type_ids=False)["input_ids"]
    ids = [token for row in rows for token in row]
    unknown = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids) - {unknown}
    words = [token for token in ids if token not in special]
    if unknown is not None and words:
        share = sum(token == unknown for token in words) / len(words)
        if share > MAX_UNKNOWN_TOKEN_SHARE:
            raise EncoderError(
                f"--model {model}: its tokenizer turns {share:.0%} of the tokens of the first {len(sample)} training "
                f"queries into the unknown token {tokenizer.unk_token!r} (more than {MAX_UNKNOWN_TOKEN_SHARE:.0%}): "
                f"the folder's tokenizer files ({tokenizer.name_or_path}) are missing or belong to another model; "
                "copy them from the encoder's original folder or Hub repo"
            )
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise EncoderError(
            f"--model {model}: its tokenizer produces token id {max(ids)}, but the encoder's vocabulary has "
            f"{vocab_size} entries (config.json vocab_size): the tokenizer belongs to another model"
        )


__all__ = [
    "push_folder",
    "save_model_folder",
    "check_reward_config",
    "check_reward_model",
    "save_reward_model",
    "check_max_length",
    "encoder_positions",
    "MAX_UNKNOWN_TOKEN_SHARE",
    "TOKENIZER_CHECK_QUERIES",
    "WEIGHTS_FILE",
    "EncoderError",
    "check_encoder",
    "check_tokenizer",
    "check_weights",
    "first_line",
    "load_tokenizer",
    "read_model_config",
    "resolve_config_file",
]
