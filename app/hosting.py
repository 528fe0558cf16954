"""Local and hosted mode: what a visitor may make the app read, write, load and run.

Local mode (the default for `python app.py`) trusts the user: they own the machine. Hosted mode is
on by itself on a Hugging Face Space (SPACE_ID is set), or with `python app.py --hosted` or
TND_HOSTED=1 (TND_HOSTED=0 turns it off on a private Space). In hosted mode a visitor is a stranger:

- no remote code: `trust_remote_code` stays off unless the host sets TND_ALLOW_REMOTE_CODE=1;
- models come from the bundle, the Hub (downloaded as safetensors, never as a local path) or folders
  inside the app's data root; prompts likewise, plus the files this browser session uploaded. Any
  other value gets one refusal whose wording never depends on whether a path exists;
- `output_dir` is a run name: the run lives in `<runs root>/<name>` (`runs_root`), nothing is written or
  deleted outside it, and a run name belongs to the session that made it;
- work is bounded by `LIMITS`, each raised by the host through its environment variable;
- messages never show server paths (`redact`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tnd_core.cache import cache_root
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.sources import MODEL_SOURCE_FIELDS, SOURCE_FIELDS, is_bundle

log = logging.getLogger(__name__)

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
UPLOAD_PREFIX = "upload:"
OWNER_FILE = ".tnd-owner"
# A Hugging Face Space's persistent storage, when the Space has it: the data root unless TND_DATA_ROOT says otherwise
SPACE_PERSISTENT_STORAGE = Path("/data")
# A Hub repo id: 'name' or 'owner/name', letters, digits, '-', '_', '.', never starting with '.' or '-'
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
RUN_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
# Files a hosted app downloads from the Hub: configs, tokenizers and safetensors weights, never pickles or code
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
DATASET_FILES = ["*.csv", "*.json", "*.jsonl", "*.txt", "*.parquet"]


@dataclass(frozen=True)
class Limit:
    """One bound on a visitor's work: its name, the environment variable that raises it, its default."""

    name: str
    env: str
    default: int
    what: str


LIMITS: tuple[Limit, ...] = (
    Limit("steps", "TND_MAX_STEPS", 2000, "training steps per run"),
    Limit("batch_size", "TND_MAX_BATCH_SIZE", 32, "prompts per PPO step"),
    Limit("ppo_epochs", "TND_MAX_PPO_EPOCHS", 8, "PPO epochs per batch"),
    Limit("max_new_tokens", "TND_MAX_NEW_TOKENS", 64, "tokens generated per trial or demo"),
    Limit("max_prompt_length", "TND_MAX_PROMPT_LENGTH", 256, "prompt tokens"),
    Limit("save_total_limit", "TND_MAX_CHECKPOINTS", 3, "checkpoints kept per run"),
    Limit("model_parameters", "TND_MAX_MODEL_PARAMETERS", 200_000_000, "parameters per model"),
    Limit("upload_mb", "TND_MAX_UPLOAD_MB", 10, "MB per uploaded file"),
    Limit("uploads_per_session", "TND_MAX_UPLOADS_PER_SESSION", 5, "uploaded files per session"),
    Limit("dataset_mb", "TND_MAX_DATASET_MB", 50, "MB of prompt files downloaded from the Hub"),
    Limit("runs_kept", "TND_MAX_RUNS_KEPT", 8, "runs kept on disk"),
    Limit("compare_per_minute", "TND_MAX_COMPARE_PER_MINUTE", 6, "Compare calls per minute per session"),
)
# The share of a running job's wall time Compare may take by default. Each Compare also costs the run
# some Python time in the server's threads (requests, queue, JSON), so the budget is kept below the 20%
# a visitor flood may cost the owner.
COMPARE_SHARE = 0.1
CONFIG_LIMITS = ("steps", "batch_size", "ppo_epochs", "max_new_tokens", "max_prompt_length", "save_total_limit")
LIMIT_BY_NAME = {limit.name: limit for limit in LIMITS}


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    value = environ.get(name, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    return None


def session_key(owner_token: str | None) -> str:
    """A folder-safe name for a browser session, derived from its owner token (never the token itself)."""
    return hashlib.sha256((owner_token or "").encode()).hexdigest()[:16]


def run_name(output_dir: str) -> str:
    """`output_dir` as a run name: its last path part with anything but letters, digits, '_', '-', '.' made '-'."""
    last = Path(str(output_dir).replace("\\", "/").rstrip("/")).name
    name = RUN_NAME_CHARS.sub("-", last).strip(".-")[:64]
    return name or "tnd-run"


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class HostPolicy:
    """What this app process lets a visitor do. `hosted=False` is local mode: everything is allowed."""

    hosted: bool = False
    data_root: Path = field(default_factory=cache_root)
    limits: dict[str, int] = field(default_factory=lambda: {limit.name: limit.default for limit in LIMITS})
    allow_remote_code: bool = False
    require_login: bool = False
    allowed_users: frozenset[str] = frozenset()
    # the share of a running job's wall time that Compare (run between two steps) may take, in both modes
    compare_share: float = COMPARE_SHARE
    # where run folders live (TND_RUNS_ROOT); None: `<data root>/runs`
    runs_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, hosted: bool | None = None) -> HostPolicy:
        """The policy the environment asks for; `hosted` (the --hosted flag) wins over TND_HOSTED and SPACE_ID."""
        env = os.environ if environ is None else environ
        if hosted is None:
            hosted = _flag(env, "TND_HOSTED")
        if hosted is None:
            hosted = bool(env.get("SPACE_ID"))
        limits = {}
        for limit in LIMITS:
            raw = env.get(limit.env, "").strip()
            try:
                limits[limit.name] = int(raw) if raw else limit.default
            except ValueError:
                raise ConfigError(limit.env, raw, f"must be an integer ({limit.what})") from None
        data_root = Path(env["TND_DATA_ROOT"]).expanduser() if env.get("TND_DATA_ROOT") else cache_root()
        if not env.get("TND_DATA_ROOT") and env.get("SPACE_ID") and _writable_dir(SPACE_PERSISTENT_STORAGE):
            data_root = SPACE_PERSISTENT_STORAGE  # a Space with persistent storage: runs survive restarts
        runs_dir = Path(env["TND_RUNS_ROOT"]).expanduser().resolve() if env.get("TND_RUNS_ROOT") else None
        raw_share = env.get("TND_COMPARE_SHARE", "").strip()
        try:
            compare_share = float(raw_share) if raw_share else COMPARE_SHARE
        except ValueError:
            compare_share = -1.0
        if not 0 < compare_share <= 1:
            raise ConfigError("TND_COMPARE_SHARE", raw_share, "must be a number in (0, 1]")
        users = frozenset(u.strip() for u in env.get("TND_ALLOWED_USERS", "").split(",") if u.strip())
        return cls(
            hosted=hosted,
            data_root=data_root.resolve(),
            limits=limits,
            allow_remote_code=bool(_flag(env, "TND_ALLOW_REMOTE_CODE")),
            require_login=bool(_flag(env, "TND_REQUIRE_LOGIN")) or bool(users),
            allowed_users=users,
            compare_share=compare_share,
            runs_dir=runs_dir,
        )

    # ------------------------------------------------------------------ folders
    @property
    def runs_root(self) -> Path:
        """The folder of every run the Runs tab lists: TND_RUNS_ROOT, else `<data root>/runs`."""
        return self.runs_dir if self.runs_dir is not None else self.data_root / "runs"

    @property
    def uploads_root(self) -> Path:
        return self.data_root / "uploads"

    def uploads_dir(self, owner_token: str | None) -> Path:
        """The folder of one browser session's uploads."""
        return self.uploads_root / session_key(owner_token)

    def run_folder(self, output_dir: str) -> Path:
        """Where the run named by `output_dir` lives: a folder under the runs root named by its last part,
        except in local mode for an absolute `output_dir`, which is used as given (and not listed)."""
        if not self.hosted and Path(output_dir).expanduser().is_absolute():
            return Path(output_dir).expanduser()
        return self.runs_root / run_name(output_dir)

    def owns_run(self, folder: str | Path, owner_token: str | None) -> bool:
        """Whether a session may rename, annotate, delete or resume a run: in hosted mode the session
        that claimed it (its `.tnd-owner` marker); in local mode the machine's user, owner of every run
        folder it can write."""
        folder = Path(folder)
        if not self.hosted:
            try:
                return folder.stat().st_uid == os.getuid()
            except (OSError, AttributeError):  # no uid on Windows: the local user owns the app's runs
                return folder.exists()
        marker = folder / OWNER_FILE
        return bool(owner_token) and marker.is_file() and marker.read_text().strip() == session_key(owner_token)

    def limit(self, name: str) -> int:
        return self.limits[name]

    def _over(self, name: str, value: Any, field_name: str | None = None) -> ConfigError:
        limit = LIMIT_BY_NAME[name]
        return ConfigError(
            field_name or name,
            value,
            f"at most {self.limits[name]:,} {limit.what} on this hosted app (its host can raise {limit.env})",
        )

    # ------------------------------------------------------------------ sources
    def _local_source(self, value: str, owner_token: str | None) -> Path | None:
        """The allowed local file or folder a source names, else None (never saying whether it exists)."""
        try:
            return self._allowed_path(value, owner_token)
        except (OSError, ValueError):  # names too long for the file system, NUL bytes: not a path we allow
            return None

    def _allowed_path(self, value: str, owner_token: str | None) -> Path | None:
        if value.startswith(UPLOAD_PREFIX):
            folder = self.uploads_dir(owner_token).resolve()
            candidate = (folder / value[len(UPLOAD_PREFIX) :]).resolve()
            return candidate if _inside(candidate, folder) and candidate.is_file() else None
        raw = Path(value).expanduser()
        candidate = (raw if raw.is_absolute() else self.data_root / raw).resolve()
        if not _inside(candidate, self.data_root) or _inside(candidate, self.uploads_root.resolve()):
            return None  # another session's uploads are as closed as the rest of the disk
        return candidate if candidate.exists() else None

    def _refuse_source(self, field_name: str, value: str) -> ConfigError:
        kind = "model" if field_name in MODEL_SOURCE_FIELDS else "dataset"
        extra = f", '{UPLOAD_PREFIX}<file>' for a file uploaded in this session" if kind == "dataset" else ""
        return ConfigError(
            field_name,
            value,
            f"on this hosted app: 'bundle', a Hugging Face Hub {kind} id (owner/name), "
            f"or a path inside the app's data folder{extra}",
        )

    def check_source(self, field_name: str, value: str, owner_token: str | None) -> str:
        """What a source resolves to in hosted mode: 'bundle…', a local path inside the allowed roots, or a
        Hub id (marked 'hub:'); raises the same ConfigError for every other value."""
        if is_bundle(value):
            return value
        local = self._local_source(value, owner_token)
        if local is not None:
            return str(local)
        if HUB_ID.match(value) and ".." not in value:
            return f"hub:{value}"
        raise self._refuse_source(field_name, value)

    # ------------------------------------------------------------------ configs
    def check_limits(self, config: CustomPPOConfig) -> None:
        """Refuse remote code and values above the host's limits (hosted mode; nothing in local mode)."""
        if not self.hosted:
            return
        if config.trust_remote_code and not self.allow_remote_code:
            raise ConfigError(
                "trust_remote_code",
                True,
                "off on this hosted app: a visitor cannot run a model's own code (the host can allow it "
                "with TND_ALLOW_REMOTE_CODE=1)",
            )
        for name in CONFIG_LIMITS:
            value = getattr(config, name)
            too_many = value > self.limits[name] or (name == "save_total_limit" and value == 0)
            if too_many:
                raise self._over(name, value)

    def check_config(self, config: CustomPPOConfig, owner_token: str | None) -> CustomPPOConfig:
        """`config` as this app runs it: unchanged in local mode; in hosted mode checked against the
        limits and the allowed sources, with local sources (uploads, the data root) made absolute paths,
        Hub ids kept, and `output_dir` made a folder under the runs root."""
        if not self.hosted:
            return config
        self.check_limits(config)
        sources = {}
        for name in SOURCE_FIELDS:
            resolved = self.check_source(name, getattr(config, name), owner_token)
            sources[name] = resolved.removeprefix("hub:")
        if config.eval_word_list:  # a file, like an uploaded prompt table (never a Hub id: 'words.txt' looks like one)
            word_list = self._local_source(config.eval_word_list, owner_token)
            if word_list is None or not word_list.is_file():
                allowed = f"on this hosted app: '{UPLOAD_PREFIX}<file>' uploaded in this session, or a data-folder file"
                raise ConfigError("eval_word_list", config.eval_word_list, allowed)
            sources["eval_word_list"] = str(word_list)
        resume = config.resume_from_checkpoint
        if resume and resume != "latest" and not re.fullmatch(r"checkpoint-\d{1,12}", resume):
            raise ConfigError(
                "resume_from_checkpoint", resume, "on this hosted app: empty, 'latest' or checkpoint-<step> of this run"
            )
        run_folder = self.run_folder(config.output_dir)
        if resume and resume != "latest":
            sources["resume_from_checkpoint"] = str(run_folder / resume)
        return config.replace(output_dir=str(run_folder), **sources)

    def claim_run(self, output_dir: str | Path, owner_token: str | None) -> None:
        """Create the run folder for `owner_token`, or refuse a run name another session owns; then
        remove the oldest other runs beyond the `runs_kept` limit (hosted mode only)."""
        if not self.hosted:
            return
        folder = Path(output_dir)
        if not _inside(folder.resolve(), self.runs_root.resolve()):
            raise ConfigError("output_dir", folder.name, "must be a run name")
        marker = folder / OWNER_FILE
        key = session_key(owner_token)
        if marker.is_file() and marker.read_text().strip() != key:
            raise ConfigError("output_dir", folder.name, "this run name belongs to another session; choose another")
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
        self._prune_runs(keep=folder)

    def _prune_runs(self, keep: Path) -> None:
        runs = [p for p in self.runs_root.iterdir() if p.is_dir() and (p / OWNER_FILE).is_file() and p != keep]
        runs.sort(key=lambda p: p.stat().st_mtime)
        for old in runs[: max(0, len(runs) - (self.limits["runs_kept"] - 1))]:
            log.info("removing run %s: more than %d runs on disk", old.name, self.limits["runs_kept"])
            shutil.rmtree(old, ignore_errors=True)

    def check_starter(self, username: str | None) -> None:
        """Refuse to start a run when sign-in is required and `username` is not (or not allowed) signed in."""
        if not self.require_login:
            return
        if not username:
            raise TndError("Sign in with Hugging Face to start runs; everyone else can watch.")
        if self.allowed_users and username not in self.allowed_users:
            raise TndError(f"{username} may not start runs on this app; everyone else can watch.")

    # ------------------------------------------------------------------ uploads
    def keep_upload(self, source: Path, owner_token: str | None, local_limit_mb: int) -> tuple[Path, str]:
        """Copy an uploaded file into the session's own folder; returns the stored path and the source
        value that names it (the path in local mode, 'upload:<name>' in hosted mode)."""
        limit_mb = self.limits["upload_mb"] if self.hosted else local_limit_mb
        size_mb = source.stat().st_size / 2**20
        name = RUN_NAME_CHARS.sub("-", source.name).strip(".-")[:100] or "prompts.txt"
        if size_mb > limit_mb:
            raise ConfigError("dataset file", name, f"at most {limit_mb} MB (this one has {size_mb:.1f} MB)")
        folder = self.uploads_dir(owner_token)
        existing = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        if self.hosted and name not in existing and len(existing) >= self.limits["uploads_per_session"]:
            raise self._over("uploads_per_session", len(existing) + 1, "dataset file")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        tmp = folder / f".{name}.part"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target, (f"{UPLOAD_PREFIX}{name}" if self.hosted else str(target))

    # ------------------------------------------------------------------ messages
    def redact(self, text: str) -> str:
        """`text` without server paths in hosted mode (data root, Hub cache, app folder, home)."""
        if not self.hosted or not text:
            return text
        replacements = [(str(self.data_root), "<data>")]
        hub_cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME")
        if hub_cache:
            replacements.append((str(Path(hub_cache).expanduser()), "<hub-cache>"))
        replacements += [(str(Path.cwd()), "<app>"), (str(Path.home()), "~")]
        for path, label in sorted(replacements, key=lambda pair: -len(pair[0])):
            if len(path) > 1:
                text = text.replace(path, label)
        return text

    # ------------------------------------------------------------------ models and data from the Hub
    def fetch_sources(
        self,
        config: CustomPPOConfig,
        progress: Callable[[str], None] | None = None,
        fields: Sequence[str] = SOURCE_FIELDS,
    ) -> CustomPPOConfig:
        """A config that passed `check_config`, with every model and dataset made a local folder (hosted
        mode): Hub ids fetched into the Hub cache (safetensors only, within the size limits), and every
        model's size checked. Local mode returns `config` unchanged. Runs where waiting is fine (the run's
        thread, the Models tab's Load), never in a request that must answer quickly. `fields` picks the
        sources to fetch (default: all four)."""
        if not self.hosted:
            return config
        changes: dict[str, str] = {}
        for name in fields:
            value = getattr(config, name)
            if is_bundle(value):
                continue
            local = value
            if not Path(value).is_absolute():  # check_config made every allowed local source absolute
                if progress is not None:
                    progress(f"Fetching {value} from the Hugging Face Hub")
                fetch = self._fetch_model if name in MODEL_SOURCE_FIELDS else self._fetch_dataset
                local = changes[name] = fetch(name, value)
            if name in MODEL_SOURCE_FIELDS:
                self._check_model_size(name, value, Path(local))
        return config.replace(**changes) if changes else config

    def _check_model_size(self, field_name: str, value: str, folder: Path) -> None:
        from tnd_core.models.size import folder_parameters

        try:
            count = folder_parameters(folder)
        except TndError as exc:
            raise ConfigError(field_name, value, f"a hosted app loads safetensors weights only: {exc}") from None
        if count > self.limits["model_parameters"]:
            raise self._over("model_parameters", f"{value} ({count:,} parameters)", field_name)

    def _fetch_model(self, field_name: str, repo_id: str) -> str:
        from huggingface_hub import get_safetensors_metadata, snapshot_download

        try:
            count = sum(get_safetensors_metadata(repo_id).parameter_count.values())
        except Exception as exc:  # missing repo, no safetensors, no network: one wording for all
            raise ConfigError(field_name, repo_id, f"no Hub model with safetensors weights could be read ({exc})")
        if count > self.limits["model_parameters"]:
            raise self._over("model_parameters", f"{repo_id} ({count:,} parameters)", field_name)
        try:
            return snapshot_download(repo_id, allow_patterns=MODEL_FILES)
        except Exception as exc:  # network and Hub errors reach the visitor in words
            raise ConfigError(field_name, repo_id, f"could not be downloaded from the Hub ({exc})") from None

    def _fetch_dataset(self, field_name: str, repo_id: str) -> str:
        from huggingface_hub import HfApi, snapshot_download

        try:
            info = HfApi().dataset_info(repo_id, files_metadata=True)
        except Exception as exc:  # missing repo, no network: one wording for all
            raise ConfigError(field_name, repo_id, f"no Hub dataset could be read ({exc})") from None
        suffixes = tuple(pattern[1:] for pattern in DATASET_FILES)
        size_mb = sum((s.size or 0) for s in info.siblings or [] if s.rfilename.endswith(suffixes)) / 2**20
        if size_mb > self.limits["dataset_mb"]:
            raise self._over("dataset_mb", f"{repo_id} ({size_mb:.0f} MB)", field_name)
        try:
            return snapshot_download(repo_id, repo_type="dataset", allow_patterns=DATASET_FILES)
        except Exception as exc:  # network and Hub errors reach the visitor in words
            raise ConfigError(field_name, repo_id, f"could not be downloaded from the Hub ({exc})") from None
