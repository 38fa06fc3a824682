"""The job file: YAML validated into frozen, typed settings before any work starts.

Unknown keys and bad values are refused with a message naming the key path and the
value, so a typo in a nightly job fails at submit time, not four hours in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from vidbatch.errors import JobError
from vidbatch.job_yaml import Written, dotted, path_at
from vidbatch.redaction import credentials_in_uri, redact_uri
from vidbatch.uri_bucket import missing_bucket

Arch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
SamplingMode = Literal["fps", "uniform", "keyframes"]
Task = Literal["embed", "classify", "both"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ResizeMethod = Literal["exact", "fast"]  # vidbatch.preprocess says what each does
CompileMode = Literal["auto", "on", "off"]  # vidbatch.model_compile says when each compiles


class _Frozen(BaseModel):
    # NaN and infinity are refused for every float key (NaN would pass every bound check).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: Any) -> Any:
        # YAML reads `yes`/`off`/`true` as booleans and pydantic would take them as 1/0 for a
        # number; a boolean given for a numeric key is a mistake to name, not a number.
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, bool) and field is not None and _is_numeric(field.annotation):
            raise ValueError(f"{value!r} is a boolean; give a number")
        return value


# The error type of a uri refused for the credentials in it: its message names the redacted uri, and
# _describe must not repeat the value as written.
_CREDENTIALS_IN_URI = "credentials_in_uri"


def _without_credentials(value: Any) -> Any:
    """A uri of the job file that carries a credential is refused. Credentials in the job file would be
    printed by `check`, written to every run's `_runs/<run_id>/started.json`, and put in the entrypoint
    Ray's dashboard shows; s3fs and botocore do not even read them from there."""
    if isinstance(value, str) and (what := credentials_in_uri(value)) is not None:
        raise PydanticCustomError(
            _CREDENTIALS_IN_URI,
            "{uri} holds {what}; vidbatch takes no credentials in its settings, which are printed, recorded in "
            "_runs/<run_id>/started.json and shown in Ray's dashboard: remove them and give them in the environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), an AWS profile or an instance or pod role",
            {"uri": repr(redact_uri(value)), "what": what},
        )
    return value


def _is_numeric(annotation: Any) -> bool:
    args = getattr(annotation, "__args__", None)
    if args:  # int | None and the like
        return any(_is_numeric(a) for a in args if a is not type(None))
    return annotation in (int, float)


class SamplingConfig(_Frozen):
    mode: SamplingMode = "fps"
    fps: float = Field(1.0, gt=0, le=240)
    num_frames: int = Field(16, ge=1, le=100_000)
    # At least 10 ms (a frame at 100 fps): shorter clips hold no frame of their own, and a clip index
    # (int32 in the clips table) would overflow within hours of video.
    clip_len_s: float = Field(4.0, ge=0.01)

    def sampling_id(self) -> str:
        """Stable hash of only the settings that change which frames are used."""
        relevant: dict[str, Any] = {"mode": self.mode, "clip_len_s": self.clip_len_s}
        if self.mode == "fps":
            relevant["fps"] = self.fps
        elif self.mode == "uniform":
            relevant["num_frames"] = self.num_frames
        digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
        return f"{self.mode}-{digest[:12]}"


# What a run's decoding makes of a file, as a number recorded in each run's started.json. Raised when a
# change to decoding gives some files another videos row than before with no setting changed (a
# status, the frames used, the sizes): such rows are not redone on their own (that would redo every
# video of a library), but check and run count the ok and decode_error rows older runs made and
# --redo-older-decoding decodes them again. 1: every fix up to 2026-12-07 (cut-short AVI and
# Matroska uploads, raw MPEG-4 streams, mirrored display matrices, frame times that go back,
# uniform's look for a stream's real end, keyframes on open GOPs); rows of runs that recorded none
# were made before it. 2: time 0 is the first frame shown, not the header's start (an MPEG-4 AVI with
# B-frames: every fps frame one earlier, uniform one frame fewer; an MPEG-TS recording cut in a group
# of pictures: targets before its first frame had none), see decode_start. 3: uniform in AVI, ASF/WMV and
# FLV spreads over where the packets end, from the first frame shown (their headers count from another
# origin: a WMV whose first frame is at 0.4 s lost 2 of 8 targets), see decode_end; an FLV whose first
# packet is after 0 is read (it was decode_error). 4: uniform in NUT and MPEG-PS (.mpg/.vob) spreads over
# where the video's packets end (their stated length is FFmpeg's estimate: the audio's end, decode
# times, or the last packet that carries a time: a 1.2 s .mpg stated 1.02 s), see decode_end.
DECODE_REVISION = 4

# model.weights with one of these endings (or any '/') is a state_dict file. Lightning writes .ckpt;
# PyTorch's old examples wrote checkpoint.pth.tar.
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors")


class ModelConfig(_Frozen):
    arch: Arch = "resnet50"
    # A torchvision weights name (IMAGENET1K_V2, or DEFAULT), a path/URI to a
    # state_dict file, or "none" for a seeded random init.
    weights: str = "IMAGENET1K_V2"
    task: Task = "both"
    top_k: int = Field(5, ge=1, le=1000)
    precision: Precision = "auto"
    seed: int = Field(0, ge=0, le=2**64 - 1)  # only used by weights: none; torch's seed range
    # The classifier's class names: a text file (path or URI), one name per line in the fc's order.
    # None: torchvision's names for its weights, ImageNet's for a 1000-class file, else class_0, ...
    categories: str | None = None
    # How a sampled frame becomes the model's input: "exact" is torchvision's recipe for the weights
    # (PIL's antialiased resize), bit for bit; "fast" resizes in FFmpeg's swscale while converting
    # from YUV, ~3x cheaper per sampled frame, with pixels a few levels off the recipe's.
    resize: ResizeMethod = "exact"

    def results_settings(self) -> dict[str, Any]:
        """The settings besides arch and weights (those make `model_id`) that change what an ok row
        holds: which results it has (task), how many labels (top_k, when there are labels), the
        precision its numbers were computed in and how its frames were resized. A nightly run
        redoes the rows made otherwise."""
        settings: dict[str, Any] = {"task": self.task, "precision": self.precision, "resize": self.resize}
        if self.task != "embed":
            settings["top_k"] = self.top_k
        return settings

    @field_validator("weights", "categories")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        return _without_credentials(value)

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_are_written_out(cls, value: Any) -> Any:
        # YAML turns `weights:` left empty (or null, ~) into None. Taking that for `none` made an
        # unfinished job file run on random weights, with meaningless results and exit 0.
        if value is None:
            raise ValueError(
                "is empty (null); write `none` for a seeded random init (results not meaningful), "
                "a torchvision weights name such as IMAGENET1K_V2, or a state_dict path/URI"
            )
        return value


class ResourcesConfig(_Frozen):
    """How the work is spread. Never changes results."""

    decode_actors: int | None = Field(None, ge=1)  # None: one per free CPU
    model_actors: int = Field(1, ge=1)
    decode_cpus: float = Field(1.0, gt=0)  # CPUs reserved by each decode actor
    model_cpus: float = Field(1.0, ge=0)
    model_gpus: float | None = Field(None, ge=0)  # None: 1 when the cluster has GPUs
    batch_frames: int = Field(32, ge=1)  # frames per forward pass
    batch_clips: int = Field(8, ge=1)  # clips per Ray Data batch into the model
    decode_threads: int | None = Field(None, ge=0)  # FFmpeg threads per decode; None: one per CPU reserved; 0: FFmpeg picks
    # torch.compile of the model, weights frozen in. on: before the first pass, any device; auto (today
    # no compile: CPUs run the weights packed for oneDNN, as fast without a compile's cost) and off:
    # never. Results agree with eager to the precision's rounding.
    model_compile: CompileMode = "auto"
    progress_interval_s: float = Field(5.0, gt=0)

    @field_validator("model_gpus")
    @classmethod
    def _one_gpu_per_actor(cls, value: float | None) -> float | None:
        # A model actor runs on one device (the first GPU Ray gives it); Ray would give it the others for nothing.
        if value is not None and value > 1:
            raise ValueError(
                "a model actor runs on one GPU, so more than 1 would reserve GPUs it leaves idle; for more GPUs "
                "raise resources.model_actors (one actor per GPU), or give values below 1 to share a GPU"
            )
        return value

    @field_validator("model_compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML reads a bare `on` / `off` (and yes/no) as booleans: take them for what was written.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class StorageConfig(_Frozen):
    """Object-store settings. Credentials are never read from the job file."""

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    # Tries per S3 request (botocore's adaptive retries, with backoff: throttling, 5xx, dropped
    # connections); None is vidbatch's default, 8. A store that is down costs each file ~40 s at 8.
    max_attempts: int | None = Field(None, ge=1, le=20)

    @field_validator("endpoint_url")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        return _without_credentials(value)

    @field_validator("region")
    @classmethod
    def _region_is_a_name(cls, value: Any) -> Any:
        # A region is a name (us-east-1, auto, a MinIO's own). A uri or a key written here went to botocore
        # as a region (requests then failed far from the cause) and into every run's started.json.
        if isinstance(value, str) and value and not _REGION_NAME.fullmatch(value):
            raise ValueError(
                "is no region name (letters, digits, '-', '_' and '.', such as us-east-1 or auto): an endpoint goes "
                "in storage.endpoint_url, credentials in the environment"
            )
        return value


_REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class LimitsConfig(_Frozen):
    max_pixels: int = Field(8192 * 8192, ge=1)
    max_duration_s: float = Field(6 * 3600.0, gt=0)
    max_file_bytes: int = Field(50 * 1024**3, ge=1)
    max_streams: int = Field(64, ge=1)
    # Upper bounds of a week: a larger value is a typo, and a deadline past time_t's range crashes.
    decode_timeout_s: float = Field(600.0, gt=0, le=7 * 86400)  # per video, time the decoder spends working
    # Address-space cap of the decode sandbox. Its libraries alone (Python, Arrow, FFmpeg) map
    # ~450 MB; under ~500 the sandbox cannot start or fails at random, so 1024 is the floor.
    decode_memory_mb: int = Field(4096, ge=1024, le=2**40)  # an address-space cap setrlimit can take
    isolate_decode: bool = True  # decode in a sandbox process: a crash or hang costs one row
    no_progress_timeout_s: float = Field(1800.0, gt=0, le=7 * 86400)  # the run stops waiting when nothing finishes for this long
    # The run stops (and commits what is done) when this many videos finish in a row with their
    # object store or server not answering at all: each has spent its retries (~40 s on S3) by then.
    unreachable_in_a_row: int = Field(32, ge=1)
    # A night's window: after this long (from the run's start) no more videos are taken; the run
    # commits what is done and the next run does the rest. None: no limit. A first run over a whole
    # library (hours or days) then lands night by night instead of all or nothing.
    max_run_s: float | None = Field(None, gt=0, le=30 * 86400)
    # Free space kept on the disk of the run's temporary folder (TMPDIR), where its rows wait for the
    # commit: below it a run is refused before any work, or stops taking videos and commits what is
    # done. A disk that filled lost the whole night (the spill cannot be written, so nothing commits).
    spill_min_free_mb: int = Field(512, ge=0, le=2**30)


# fsspec protocols that open another URL or a local path written inside the uri (caches, archives,
# a directory view, "local" as a second name for file). uri_policy applies allowed_roots to `file`
# uris only, so allowing one of these would let a manifest reach local files outside the roots.
_WRAPPING_SCHEMES = frozenset(
    {
        "local", "asynclocal", "dir", "blockcache", "cached", "filecache", "simplecache", "reference",
        "zip", "tar", "libarchive", "generic", "async_wrapper", "asyncwrapper", "dask", "git", "dvc",
    }
)  # fmt: skip
_SCHEME_EXAMPLES = "file, s3, gs, gcs, az, abfs, memory, http, https"


class InputPolicy(_Frozen):
    # Schemes (`scheme_of` of a manifest uri: lowercase, a plain path is `file`) a row may use.
    allowed_schemes: tuple[str, ...] = ("file", "s3", "gs", "gcs", "az", "abfs", "memory")
    # Local roots a file:// or plain path must lie under; empty means no restriction. A relative
    # root is resolved against the current directory, as a relative manifest or output is
    # (`vidbatch submit` makes it absolute for the cluster).
    allowed_roots: tuple[str, ...] = ()

    @field_validator("allowed_schemes")
    @classmethod
    def _readable_schemes(cls, schemes: tuple[str, ...]) -> tuple[str, ...]:
        from fsspec.registry import known_implementations, registry

        if not schemes:
            raise ValueError(
                "no scheme is allowed, so every manifest row would be refused as invalid_uri; list the schemes "
                "the manifest uses (e.g. [file, s3]) or leave the key out for the defaults"
            )
        readable = {"file"} | set(known_implementations) | set(registry)
        normalised = []
        for given in schemes:
            # Schemes are case-insensitive (RFC 3986) and scheme_of() lowercases a uri's, so 'S3'
            # can only mean 's3'. 's3://...' is refused rather than trimmed: it may be meant as a
            # bucket or prefix to confine reads to, which a scheme cannot do, and trimming it
            # would silently allow the whole store.
            scheme = given.lower()
            if ":" in scheme or "/" in scheme:
                alone = scheme.split(":", 1)[0]
                raise ValueError(
                    f"{given!r} is not a scheme: give the scheme alone (e.g. {alone!r}); a bucket or prefix cannot be "
                    "allowed here, only a whole scheme"
                )
            if scheme in _WRAPPING_SCHEMES:
                instead = " (write 'file' for local files)" if scheme in ("local", "asynclocal") else ""
                raise ValueError(
                    f"{given!r} opens another uri or a local path given inside the uri, which would bypass "
                    f"inputs.allowed_roots; allow the scheme of the files themselves{instead}"
                )
            if scheme not in readable:
                raise ValueError(
                    f"{given!r} is not a scheme vidbatch can read (fsspec has no filesystem for it); e.g. {_SCHEME_EXAMPLES}"
                )
            normalised.append(scheme)
        return tuple(normalised)

    @field_validator("allowed_roots")
    @classmethod
    def _local_roots(cls, roots: tuple[str, ...]) -> tuple[str, ...]:
        from urllib.parse import unquote, urlsplit

        normalised = []
        for root in roots:
            if not root.strip():
                raise ValueError("an empty root names no folder (it would mean the current directory); give an absolute path")
            parts = urlsplit(root)
            if len(parts.scheme) > 1:  # one letter is a Windows drive (C:\videos), as in storage.scheme_of
                if parts.scheme.lower() != "file":
                    raise ValueError(
                        f"{root!r} is a uri: roots confine local files (plain paths and file:// uris) only and would "
                        "confine nothing in an object store; limit those with inputs.allowed_schemes and the store's "
                        "own permissions, and give roots as local folders"
                    )
                if parts.netloc not in ("", "localhost"):
                    raise ValueError(f"{root!r} names the host {parts.netloc!r}; a local folder is 'file:///path' or '/path'")
                # uri_policy compares real paths: the folder the file:// uri names, as storage.local_path reads one.
                root = unquote(parts.path)
            if root.startswith("~"):
                raise ValueError(f"{root!r}: '~' is not expanded here; give the absolute path, e.g. {os.path.expanduser(root)!r}")
            normalised.append(root)
        return tuple(normalised)


class JobConfig(_Frozen):
    name: str = Field(..., min_length=1, coerce_numbers_to_str=True)  # `name: 2024` is a name
    manifest: str = Field(..., min_length=1)
    output: str = Field(..., min_length=1)
    sampling: SamplingConfig = SamplingConfig()
    model: ModelConfig = ModelConfig()
    resources: ResourcesConfig = ResourcesConfig()
    storage: StorageConfig = StorageConfig()
    limits: LimitsConfig = LimitsConfig()
    inputs: InputPolicy = InputPolicy()

    @field_validator("manifest", "output")
    @classmethod
    def _no_tilde(cls, value: str) -> str:
        # Not expanded here, and deltalake would expand it while the data files went to a
        # literal ./~ folder: a table split in two that no later run or reader can open.
        if value.startswith("~"):
            raise ValueError(f"'~' is not expanded; give the absolute path, e.g. {os.path.expanduser(value)!r}")
        if (lacking := missing_bucket(value)) is not None:  # refused here, not as "Cannot traverse all of S3" later
            raise ValueError(f"{value!r} {lacking}")
        return _without_credentials(value)

    @field_validator("sampling", "model", "resources", "storage", "limits", "inputs", mode="before")
    @classmethod
    def _empty_section_means_defaults(cls, value: Any) -> Any:
        # `resources:` with every child commented out is null in YAML: the defaults, not an error.
        return {} if value is None else value


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Read a job file, apply `key.path=value` overrides, validate. Raises JobError."""
    path = Path(path)
    if path.is_dir():
        raise JobError(f"job file {str(path)!r} is a directory; give the job's YAML file")
    if path.exists() and not path.is_file():  # read_text of a FIFO would wait for a writer for ever
        raise JobError(f"job file {str(path)!r} is a pipe or device, not a file; give the job's YAML file")
    if not path.is_file():
        raise JobError(f"job file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte order mark is fine
    except UnicodeDecodeError as exc:
        raise JobError(f"job file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        problem = _where_in_yaml(text, exc) + _yaml_problem(exc)
        if isinstance(exc, yaml.composer.ComposerError) and "undefined alias" in problem:
            problem += "; an alias (*name) names an anchor (&name) written above it in the same file"
        raise JobError(f"job file {str(path)!r} is not valid YAML: {problem}") from exc
    if not isinstance(raw, dict):
        raise JobError(f"job file {str(path)!r} must be a mapping of keys, got {type(raw).__name__}")
    if isinstance(raw.get("name"), int | float):
        raw["name"] = _name_as_written(text, raw["name"])
    for override in overrides:
        _apply_override(raw, override)
    return parse_job(raw, source=str(path), text=text, overrides=overrides)


def _where_in_yaml(text: str, exc: yaml.YAMLError) -> str:
    """The key path an undefined alias or a key given twice is at ("at sampling.mode: "): the line alone did
    not say which key, when the mapping was an anchor's reached through an alias elsewhere."""
    if not isinstance(exc, yaml.composer.ComposerError | yaml.constructor.ConstructorError) or exc.problem_mark is None:
        return ""
    path = path_at(text, exc.problem_mark.index)
    return f"at {path}: " if path else ""


def _name_as_written(text: str, parsed: object) -> object:
    """A job's name that YAML read as a number, as the file writes it: YAML 1.1 reads `0123` as
    octal (83), `12:30` as base 60 (750) and `0x1F` as 31, and a name is a label, not a value."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "name" and isinstance(value, yaml.ScalarNode):
                return value.value
    return parsed


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merge keys may repeat what they merge in
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_job(
    raw: dict[str, Any], *, source: str = "job", text: str | None = None, overrides: Iterable[str] = ()
) -> JobConfig:
    """`text`: the job file's YAML, to say where a refused value reached through an alias is written
    (the keys `overrides` set are left out: their values are not the file's)."""
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as exc:
        origins = _origins(text, overrides)
        described = (_describe(err, origins=origins) for err in exc.errors())
        raise JobError(f"{source}: " + "; ".join(described) + _credentials_hint(exc)) from None


def _origins(text: str | None, overrides: Iterable[str]) -> _Origins | None:
    if text is None:
        return None
    try:
        return _Origins(Written(text), overrides)
    except yaml.YAMLError:  # read once already; a second reading that fails only loses the lines
        return None


class _Origins:
    """Where the job file writes a value validation refused, when an alias or a merge key reaches it."""

    def __init__(self, written: Written, overrides: Iterable[str]) -> None:
        self._written = written
        self._overridden = [override.partition("=")[0].strip().split(".") for override in overrides]

    def of(self, loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], int, int] | None:
        keys = [str(part) for part in loc]
        if any(parts[: len(keys)] == keys[: len(parts)] for parts in self._overridden):
            return None  # set by --set, not by the file
        return self._written.elsewhere(loc)


# Unknown keys that are someone's way of giving credentials (s3fs's storage_options key/secret/token,
# boto3's aws_* names, a profile): said where credentials go, instead of only 'unknown key'.
_CREDENTIAL_KEY = re.compile(r"key|secret|token|passw|credential|profile|storage_options", re.IGNORECASE)
_WHERE_CREDENTIALS_GO = (
    "; credentials are not read from the job file (its settings are printed, recorded in _runs/<run_id>/started.json "
    "and shown in Ray's dashboard): give them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    "AWS_SESSION_TOKEN), an AWS profile (AWS_PROFILE, ~/.aws) or an instance or pod role; the storage section takes "
    "endpoint_url, region, anon and max_attempts"
)


def _credentials_hint(exc: ValidationError) -> str:
    # At the top level or in storage, where such keys are written; elsewhere a 'key' is a typo (model.top_key).
    unknown = [
        str(err["loc"][-1])
        for err in exc.errors()
        if err["type"] == "extra_forbidden" and err["loc"] and (len(err["loc"]) == 1 or err["loc"][0] == "storage")
    ]
    return _WHERE_CREDENTIALS_GO if any(_CREDENTIAL_KEY.search(name) for name in unknown) else ""


def parse_storage(raw: dict[str, Any], *, source: str) -> StorageConfig:
    """Storage settings given on a command line (history, vacuum, manifest build); refused as a job's are."""
    try:
        return StorageConfig.model_validate(raw)
    except ValidationError as exc:
        raise JobError(f"{source}: " + "; ".join(_describe(err, in_storage=True) for err in exc.errors())) from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise JobError(f"--set {override!r}: expected key.path=value, e.g. --set model.arch=resnet18")
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise JobError(f"--set {override!r}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    if parts == ["name"]:  # a label, kept as written (see _name_as_written)
        node["name"] = text
        return
    # YAML parsing gives "2" -> 2, "true" -> True, "[a, b]" -> list, like the job file would.
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        # The value is not repeated (nor the parts of it PyYAML quotes, an alias's name): it may be a
        # secret given to the wrong key, and this line goes to logs. The column says where it went wrong.
        key = key.strip()
        raise JobError(
            f"--set {key}=...: the value ({len(text)} characters, not shown) is not valid YAML "
            f"({_without_parts_of(_yaml_problem(exc), text)}); quote it: --set '{key}=\"...\"'"
        ) from exc


def _without_parts_of(problem: str, value: str) -> str:
    """PyYAML's problem with the quoted parts of `value` it repeats (`found undefined alias 'x'`) left out;
    its own tokens (`','`, `'<stream end>'`) are kept."""
    return re.sub(r"'([^']{2,})'", lambda m: "'...'" if m.group(1) in value else m.group(0), problem)


def _describe(err: Any, *, in_storage: bool = False, origins: _Origins | None = None) -> str:
    """One validation error, naming the key. `in_storage`: the error's key is storage's own (parse_storage).
    `origins`: where the file writes values reached through an alias or a merge key."""
    origin = origins.of(tuple(err["loc"])) if origins is not None else None
    if origin is None:
        return _described(err, in_storage=in_storage)
    path, line, via = origin
    # A value written under storage and aliased elsewhere is shown by its kind, as storage's own are.
    described = _described(err, in_storage=in_storage or path[:1] == ("storage",))
    return f"{described} (written at line {line} as {dotted(path)!r}, reached through the alias or merge key at line {via})"


def _described(err: Any, *, in_storage: bool) -> str:
    where = dotted(err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if err["type"] == "missing":
        return f"missing required key {where!r}"
    if err["type"] == _CREDENTIALS_IN_URI:
        return f"{where}: {err['msg']}"  # the value as written holds the credentials
    value = err.get("input")
    if (in_storage or err["loc"][:1] == ("storage",)) and not isinstance(value, int | float | None):
        # Text (or a list of it) where storage settings go is shown by its kind only: `storage: "KEY:SECRET"`
        # was repeated as written, and the line goes to logs (DESIGN guarantee 5).
        shown = f"{where} ({_kind(value)}, not shown: it may be a credential): {err['msg']}"
        return shown + (_STORAGE_IS_A_SECTION if err["loc"] == ("storage",) else "")
    if err["type"] in ("tuple_type", "list_type"):
        return f"{where}={value!r}: should be a list, e.g. [{value}] (on the command line: --set '{where}=[{value}]')"
    return f"{where}={value!r}: {err['msg']}"


_STORAGE_IS_A_SECTION = (
    "; storage is a section of endpoint_url, region, anon and max_attempts (credentials go in the environment, "
    "an AWS profile or an instance or pod role)"
)


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return f"text of {len(value)} characters"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else f"a {type(value).__name__}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line, with the line and column, without its '<unicode string>' source name."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc).replace("\n", " ")

    def at(text: str | None, mark: Any) -> str:
        return f"{text} (line {mark.line + 1}, column {mark.column + 1})" if text and mark is not None else text or ""

    return "; ".join(part for part in (at(exc.context, exc.context_mark), at(exc.problem, exc.problem_mark)) if part)
