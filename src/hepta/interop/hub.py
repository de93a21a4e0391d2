"""Hugging Face Hub ids ("Qwen/Qwen3-30B-A3B") as model folders, through huggingface_hub.

A `--model` that names an existing path is that folder. Anything else shaped like an id
(organisation/name) is looked up with `huggingface_hub.snapshot_download`, so everything its users
know holds: the shared cache (HF_HUB_CACHE, HF_HOME), `--revision` (a branch, tag or commit),
HF_HUB_OFFLINE=1 to use the cache only, and the token from HF_TOKEN or `hf auth login`. Only what
hepta reads is fetched: safetensors weights and their index, config.json, the tokenizer and chat
template files and generation_config.json; never pickle weights, code or other formats. Every
failure, a network one included, is one sentence that says what to do.
"""

from __future__ import annotations

import re
from pathlib import Path

from hepta.errors import HeptaError

FETCHED_FILES = ["*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                 "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
                 "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                 "additional_chat_templates/*.jinja"]
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(model: str) -> bool:
    """True when `model` is not an existing path but has the shape of a Hub id."""
    return not Path(model).expanduser().exists() and HUB_ID.fullmatch(model) is not None


def model_folder(model: str, revision: str | None = None, flag: str = "--model") -> Path:
    """The folder `model` (given as `flag`) names: an existing path as it is, or a Hub id's snapshot
    (downloaded when it is not in the cache)."""
    path = Path(model).expanduser()
    if path.exists():
        if revision:
            raise HeptaError(f"--revision applies to Hugging Face Hub ids, and {model} is a local folder; drop it")
        return path
    if HUB_ID.fullmatch(model) is None:
        raise HeptaError(f"{flag} {model} is not a model folder: it does not exist, and it is not a Hugging Face "
                         "Hub id (organisation/name); pass a model folder or an id such as Qwen/Qwen3-30B-A3B")
    return _snapshot(model, revision)


def _snapshot(model: str, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    at = f" at revision {revision}" if revision else ""
    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=FETCHED_FILES))
    except GatedRepoError as e:
        raise HeptaError(f"{model} is gated on the Hugging Face Hub; accept its terms on its page and set HF_TOKEN "
                         "(or run `hf auth login`)") from e
    except RepositoryNotFoundError as e:
        raise HeptaError(f"the Hugging Face Hub has no model {model} that this token may read; check the id, or set "
                         "HF_TOKEN for a private model") from e
    except RevisionNotFoundError as e:
        raise HeptaError(f"{model} has no revision {revision!r} on the Hugging Face Hub; pass a branch, tag or commit "
                         "it has") from e
    except LocalEntryNotFoundError as e:  # offline, or the Hub could not be reached, and nothing cached
        if constants.HF_HUB_OFFLINE:
            raise HeptaError(f"{model}{at} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                             "HF_HUB_OFFLINE is set; download it once with network access, or unset "
                             "HF_HUB_OFFLINE") from e
        raise HeptaError(f"could not reach the Hugging Face Hub ({constants.ENDPOINT}) to download {model}{at}, and "
                         f"it is not in the cache ({constants.HF_HUB_CACHE}); check the network connection, or pass "
                         "a local folder") from e
    except (HfHubHTTPError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HeptaError(f"downloading {model}{at} from the Hugging Face Hub failed ({reason}); try again, or pass "
                         "a local folder") from e
