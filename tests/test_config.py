"""Job files: typed, validated before work starts, errors name key and value."""

import pytest

from vidbatch.config import load_job, parse_job
from vidbatch.errors import JobError

BASE = "name: t\nmanifest: m.parquet\noutput: out\n"


def write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    job = load_job(write(tmp_path, BASE), ["model.arch=resnet18", "sampling.fps=2", "model.weights=none"])
    assert job.model.arch == "resnet18"
    assert job.sampling.fps == 2.0
    assert job.model.weights == "none"
    assert job.model.task == "both"


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (BASE + "modle: {}\n", [], "unknown key 'modle'"),
        (BASE, ["model.arch=resnet51"], "model.arch='resnet51'"),
        (BASE, ["sampling.mode=random"], "sampling.mode='random'"),
        (BASE, ["sampling.fps=0"], "sampling.fps=0"),
        (BASE, ["sampling.clip_len_s=0.001"], "sampling.clip_len_s=0.001: Input should be greater than or equal to 0.01"),
        (BASE, ["model.precision=fp8"], "model.precision='fp8'"),
        (BASE, ["model.resize=swscale"], "model.resize='swscale'"),
        (BASE, ["resources.batch_frames=-4"], "resources.batch_frames=-4"),
        (BASE, ["limits.decode_memory_mb=420"], "limits.decode_memory_mb=420: Input should be greater than or equal to 1024"),
        ("name: t\noutput: o\n", [], "missing required key 'manifest'"),
        (BASE, ["model"], "expected key.path=value"),
        (BASE, ["name.sub=1"], "name is not a section"),
        # accepted before, then a crash: a table split between ~/x and ./~/x, OverflowError after
        # Ray's start, setrlimit's overflow in every sandbox, torch's seed overflow
        ("name: t\nmanifest: m.parquet\noutput: ~/out\n", [], "output='~/out': Value error, '~' is not expanded"),
        ("name: t\nmanifest: ~/m.parquet\noutput: o\n", [], "manifest='~/m.parquet': Value error, '~' is not expanded"),
        # a store's root: 'Unable to recognise URL "s3:/videos"' (output), 'Cannot traverse all of S3' (manifest)
        (BASE, ["output=s3://"], "output='s3://': Value error, 's3://' names no bucket (write s3://BUCKET/...)"),
        (BASE, ["manifest=gs:///m.parquet"], "manifest='gs:///m.parquet': Value error, 'gs:///m.parquet' names no bucket"),
        (BASE, ["limits.no_progress_timeout_s=1e10"], "limits.no_progress_timeout_s=.1e10.: Input should be less than"),
        (BASE, ["limits.decode_timeout_s=99999999999"], "limits.decode_timeout_s=99999999999: Input should be less than"),
        (BASE, ["limits.decode_memory_mb=99999999999999999"], "limits.decode_memory_mb=99999999999999999: Input should be less"),
        (BASE, ["model.seed=18446744073709551616"], "model.seed=18446744073709551616: Input should be less than"),
        (BASE, ["model.seed=-1"], "model.seed=-1: Input should be greater than or equal to 0"),
    ],
)
def test_bad_job_is_refused_with_the_key_named(tmp_path, text, overrides, message):
    with pytest.raises(JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_job(write(tmp_path, text), overrides)


@pytest.mark.parametrize("written", ["0123", "12:30", "0x1F", "2024", "1.50"])
def test_a_name_yaml_reads_as_a_number_is_kept_as_written(tmp_path, written):
    """YAML 1.1 read `name: 0123` as octal: the run was named '83'."""
    job = load_job(write(tmp_path, f"name: {written}\nmanifest: m.parquet\noutput: out\n"))
    assert job.name == written
    assert load_job(write(tmp_path, BASE), [f"name={written}"]).name == written  # and on the command line


def test_missing_job_file(tmp_path):
    with pytest.raises(JobError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_yaml_null_weights_mean_random_init():
    # an empty `weights:` is refused, not taken for `none` (random weights, exit 0)
    with pytest.raises(JobError, match=r"model\.weights.*is empty \(null\); write `none` for a seeded random init"):
        parse_job({"name": "t", "manifest": "m", "output": "o", "model": {"weights": None}})


def test_sampling_id_ignores_settings_of_other_modes():
    a = parse_job({"name": "t", "manifest": "m", "output": "o", "sampling": {"mode": "fps", "num_frames": 3}})
    b = parse_job({"name": "t", "manifest": "m", "output": "o", "sampling": {"mode": "fps", "num_frames": 9}})
    c = parse_job({"name": "t", "manifest": "m", "output": "o", "sampling": {"mode": "fps", "fps": 2}})
    assert a.sampling.sampling_id() == b.sampling.sampling_id() != c.sampling.sampling_id()


def test_shipped_job_files_are_valid():
    from pathlib import Path

    jobs = sorted(Path(__file__).resolve().parents[1].joinpath("jobs").glob("*.yaml"))
    assert {p.name for p in jobs} >= {"demo.yaml", "nightly_tagging.yaml"}
    for path in jobs:
        load_job(path)


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (BASE, ["sampling.fps=true"], "sampling.fps=True: Value error, True is a boolean; give a number"),
        (BASE + "model: {top_k: yes}\n", [], "model.top_k=True"),
        (BASE + "model: {seed: off}\n", [], "model.seed=False"),
        (BASE, ["resources.decode_actors=true"], "resources.decode_actors=True"),
        (BASE, ["sampling.fps=nan"], "sampling.fps='nan': Input should be a finite number"),
        (BASE, ["limits.max_duration_s=.inf"], "limits.max_duration_s=inf: Input should be a finite number"),
        (BASE + "name: t2\n", [], "key 'name' is given twice \\(line 4, column 1\\)"),
        (BASE + "model:\n  top_k: 3\n  top_k: 4\n", [], "at model.top_k: key 'top_k' is given twice \\(line 6, column 3\\)"),
    ],
)
def test_booleans_non_finite_numbers_and_repeated_keys_are_refused(tmp_path, text, overrides, message):
    with pytest.raises(JobError, match=message):
        load_job(write(tmp_path, text), overrides)


def test_yaml_errors_are_one_line_naming_where_and_how_to_fix(tmp_path):
    with pytest.raises(JobError) as caught:
        load_job(write(tmp_path, BASE + "manifest: [a\n"))
    message = str(caught.value)
    assert "\n" not in message and "<unicode string>" not in message
    assert "while parsing a flow sequence (line 4, column 11)" in message
    with pytest.raises(JobError) as caught:  # a --set value: before, a yaml ParserError traceback
        load_job(write(tmp_path, BASE), ["model.top_k=[1"])
    assert "--set model.top_k=...: the value (2 characters, not shown) is not valid YAML" in str(caught.value)
    with pytest.raises(JobError) as caught:  # one scheme where a list is wanted: say how to write the list
        load_job(write(tmp_path, BASE), ["inputs.allowed_schemes=s3"])
    assert "inputs.allowed_schemes='s3': should be a list, e.g. [s3]" in str(caught.value)


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ('storage.secret=[hunter2"x', "expected ',' or ']', but got '<stream end>' (line 1, column 11)"),
        ("storage.region=*hunter2", "found undefined alias '...' (line 1, column 1)"),  # PyYAML quotes the alias
        ("storage.endpoint_url={https://me:hunter2@host", "expected ',' or '}', but got '<stream end>'"),
    ],
)
def test_a_set_value_that_is_not_yaml_is_not_repeated(tmp_path, override, problem):
    """It was repeated twice (`--set 'KEY=VALUE'` and the quoting hint): a secret given to a wrong key went to logs."""
    key = override.partition("=")[0]
    with pytest.raises(JobError) as caught:
        load_job(write(tmp_path, BASE), [override])
    message = str(caught.value)
    assert message.startswith(f"--set {key}=...: the value (") and "not shown) is not valid YAML" in message, message
    assert problem in message and f"quote it: --set '{key}=\"...\"'" in message, message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (BASE + 'storage: "AKIAEXAMPLE:hunter2"\n', [], "storage (text of 19 characters, not shown: it may be a credential): "
         "Input should be a valid dictionary or instance of StorageConfig; storage is a section of endpoint_url, region"),
        (BASE, ["storage.anon=hunter2"], "storage.anon (text of 7 characters, not shown: it may be a credential): Input should"),
        (BASE, ["storage.region=[hunter2]"], "storage.region (a list, not shown: it may be a credential): Input should"),
        (BASE, ["storage.max_attempts=99"], "storage.max_attempts=99: Input should be less than or equal to 20"),  # a number is
        (BASE, ["storage.region=https://AKIA:hunter2@minio:9000"], "not shown: it may be a credential): Value error, is no "
         "region name (letters, digits, '-', '_' and '.', such as us-east-1 or auto): an endpoint goes in storage.endpoint_url"),
        (BASE + "storage: {region: hunter2 us}\n", [], "storage.region (text of 10 characters, not shown"),
    ],
)  # fmt: skip
def test_a_bad_storage_value_is_not_repeated_unless_a_number(tmp_path, text, overrides, message):
    """`storage: "KEY:SECRET"` (someone's way of giving credentials) was repeated as written in its error."""
    with pytest.raises(JobError) as caught:
        load_job(write(tmp_path, text), overrides)
    assert message in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_region_is_a_name():
    """A uri or a key written as storage.region went to botocore as a region, and into every started.json."""
    for region in ("us-east-1", "auto", "eu-west-3", "garage", "fr-par", "my_minio.1"):
        assert parse_job({"name": "t", "manifest": "m", "output": "o", "storage": {"region": region}}).storage.region == region


_SECRET = "wJalrXUtnFEMI/K7MDENG"
_ALIASED = BASE + "defaults: &base\n  mode: fps\n  fps: -1\nsampling: *base\n"


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        # The value is written under the anchor; the path alone (sampling.fps) is spelled nowhere in the file.
        (_ALIASED, [], "sampling.fps=-1: Input should be greater than 0 (written at line 6 as 'defaults.fps', "
         "reached through the alias or merge key at line 7)"),
        (BASE + "x-base: &base\n  fps: -1\nsampling:\n  <<: *base\n  mode: fps\n", [], "sampling.fps=-1: Input should "
         "be greater than 0 (written at line 5 as 'x-base.fps', reached through the alias or merge key at line 7)"),
        (BASE + "sampling: &s\n  mode: fps\nmodel:\n  <<: [*s]\n", [], "unknown key 'model.mode' (written at line 5 as "
         "'sampling.mode', reached through the alias or merge key at line 7)"),
        (_ALIASED, ["sampling.fps=-2"], "sampling.fps=-2: Input should be greater than 0; unknown key 'defaults'"),  # --set's
        (BASE + "sampling:\n  mode: fps\n  fps: -1\n", [], "sampling.fps=-1: Input should be greater than 0"),  # no alias
        # Written under storage, aliased elsewhere: shown by its kind, as storage's own values are.
        (BASE + f"storage:\n  region: &r {_SECRET}\nmodel:\n  top_k: *r\n", [], "model.top_k (text of 21 characters, not "
         "shown: it may be a credential): Input should be a valid integer, unable to parse string as an integer (written at "
         "line 5 as 'storage.region', reached through the alias or merge key at line 7)"),
        (BASE + f"creds: &c\n  anon: {_SECRET}\nstorage:\n  <<: *c\n", [], "storage.anon (text of 21 characters, not "
         "shown: it may be a credential): Input should be a valid boolean, unable to interpret input (written at line 5 as "
         "'creds.anon', reached through the alias or merge key at line 7)"),
        # YAML's own errors named the line only: the key path too, where the anchor's mapping is not the key used
        (BASE + "storage:\n  endpoint_url: *nothere\n", [], "is not valid YAML: at storage.endpoint_url: found undefined "
         "alias 'nothere' (line 5, column 17); an alias (*name) names an anchor (&name) written above it in the same file"),
        (BASE + "base: &base\n  mode: fps\n  mode: uniform\nsampling: *base\n", [], "is not valid YAML: at base.mode: "
         "key 'mode' is given twice (line 6, column 3)"),
        (BASE + f"storage:\n  region: {_SECRET}\n  region: x\n", [], "at storage.region: key 'region' is given twice"),
    ],
)  # fmt: skip
def test_a_value_reached_through_an_alias_is_refused_where_it_is_written(tmp_path, text, overrides, message):
    """`sampling: *base` or `<<: *base`: a bad value was named by the path that reaches it, with no word of the
    anchor's key and line where it is written; one written under storage and aliased elsewhere was repeated."""
    with pytest.raises(JobError) as caught:
        load_job(write(tmp_path, text), overrides)
    assert message in str(caught.value), str(caught.value)
    assert _SECRET not in str(caught.value) and "\n" not in str(caught.value)


def test_forgiving_where_nothing_is_lost(tmp_path):
    job = load_job(write(tmp_path, BASE + "resources:\n  # batch_frames: 16\nlimits:\n"), ["name=2024", "sampling.fps=2"])
    assert job.name == "2024" and job.resources.batch_frames == 32 and job.sampling.fps == 2.0
    merged = "defaults: &d {top_k: 3}\n" + BASE.replace("name: t\n", "") + "name: t\nmodel:\n  <<: *d\n  arch: resnet18\n"
    with pytest.raises(JobError, match="unknown key 'defaults'"):  # merge keys work; the anchor's key is still unknown
        load_job(write(tmp_path, merged))
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_job(bom).name == "t"


def test_a_job_file_that_is_not_utf8_or_is_a_directory_is_named(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(BASE.replace("t\n", "caf\xe9\n", 1).encode("latin-1"))
    with pytest.raises(JobError, match="is not UTF-8 text"):
        load_job(latin)
    with pytest.raises(JobError, match="is a directory"):
        load_job(tmp_path)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("{allowed_schemes: [file, htpp]}", "inputs.allowed_schemes=\\['file', 'htpp'\\]: Value error, 'htpp' is not a scheme"),
        ("{allowed_schemes: [ffmpeg]}", "'ffmpeg' is not a scheme vidbatch can read"),
        ("{allowed_schemes: ['s3://']}", "inputs.allowed_schemes=\\['s3://'\\]: .*give the scheme alone \\(e.g. 's3'\\)"),
        ("{allowed_schemes: ['s3://media/videos']}", "'s3://media/videos' is not a scheme.*a bucket or prefix cannot"),
        ("{allowed_schemes: []}", "inputs.allowed_schemes=\\[\\]: .*every manifest row would be refused"),
        ("{allowed_schemes: [local]}", "'local' .*would bypass inputs.allowed_roots.*write 'file'"),
        ("{allowed_schemes: [simplecache]}", "'simplecache' .*would bypass inputs.allowed_roots"),
        ("{allowed_roots: ['s3://media/videos']}", "inputs.allowed_roots=\\['s3://media/videos'\\]: .*is a uri: roots confine"),
        ("{allowed_roots: ['file://videos/lib']}", "'file://videos/lib' names the host 'videos'"),
        ("{allowed_roots: ['~/videos']}", "inputs.allowed_roots=\\['~/videos'\\]: .*give the absolute path"),
        ("{allowed_roots: ['']}", "inputs.allowed_roots=\\[''\\]: .*an empty root"),
    ],
)
def test_input_policy_that_cannot_work_is_refused_at_load(tmp_path, inputs, message):
    with pytest.raises(JobError, match=message):
        load_job(write(tmp_path, BASE + f"inputs: {inputs}\n"))


def test_input_policy_is_normalised_where_it_has_one_meaning(tmp_path):
    from vidbatch.uri_policy import refusal_reason

    # Schemes are case-insensitive and a manifest uri's is compared lowercased: 'S3' can only mean 's3'.
    job = load_job(write(tmp_path, BASE + "inputs: {allowed_schemes: [File, S3, HTTPS]}\n"))
    assert job.inputs.allowed_schemes == ("file", "s3", "https")
    assert refusal_reason("S3://bucket/a.mp4", job.inputs) is None
    assert refusal_reason("https://host/a.mp4", job.inputs) is None
    # A file:// root is the folder it names (it used to be compared as a path, "<cwd>/file:/...": nothing matched).
    lib = tmp_path / "my lib"
    lib.mkdir()
    job = load_job(write(tmp_path, BASE), [f"inputs.allowed_roots=['{lib.as_uri()}']"])
    assert job.inputs.allowed_roots == (str(lib),)
    assert refusal_reason(str(lib / "a.mp4"), job.inputs) is None
    assert refusal_reason(str(tmp_path / "a.mp4"), job.inputs) is not None
    # A relative root is kept, resolved against the current directory like a relative manifest
    # (vidbatch submit makes it absolute for the cluster: tests/test_cluster.py).
    assert load_job(write(tmp_path, BASE + "inputs: {allowed_roots: [lib]}\n")).inputs.allowed_roots == ("lib",)


def test_vidbatch_check_settings_only_refuses_a_bad_input_policy(tmp_path):
    import subprocess
    import sys

    (tmp_path / "job.yaml").write_text(BASE)
    check = [sys.executable, "-m", "vidbatch.cli", "check", "job.yaml", "--settings-only", "--set"]
    for override, message in [
        ("inputs.allowed_schemes=[htpp]", "vidbatch: job.yaml: inputs.allowed_schemes=['htpp']: Value error, 'htpp' is not"),
        ("inputs.allowed_schemes=[]", "inputs.allowed_schemes=[]: Value error, no scheme is allowed"),
        ("inputs.allowed_roots=[s3://b/v]", "inputs.allowed_roots=['s3://b/v']: Value error, 's3://b/v' is a uri"),
    ]:
        done = subprocess.run([*check, override], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


@pytest.mark.parametrize(
    ("written", "mode"),
    [("on", "on"), ("off", "off"), ("auto", "auto"), ('"on"', "on"), ("true", "on"), ("no", "off")],
)
def test_model_compile_takes_yaml_on_and_off_as_written(tmp_path, written, mode):
    # A bare `on` is a boolean to YAML; the key's modes are named on and off, so it means what it says.
    job = load_job(write(tmp_path, BASE + f"resources:\n  model_compile: {written}\n"))
    assert job.resources.model_compile == mode
    assert load_job(write(tmp_path, BASE), [f"resources.model_compile={written}"]).resources.model_compile == mode


def test_a_model_compile_mode_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(JobError, match="resources.model_compile='always': Input should be 'auto', 'on' or 'off'"):
        load_job(write(tmp_path, BASE), ["resources.model_compile=always"])


_CANARY = "s3cr3t-CANARY"
_CREDENTIALS_IN_URIS = [
    ("manifest", f"s3://AKIAEXAMPLE:{_CANARY}@media/manifest.parquet"),
    ("output", f"s3a://AKIAEXAMPLE:{_CANARY}@results/out"),
    ("storage.endpoint_url", f"http://minio:{_CANARY}@127.0.0.1:9000"),
    ("model.weights", f"https://host/w.pt?X-Amz-Credential=AKIA&X-Amz-Signature={_CANARY}"),
    ("model.categories", f"az://heads/names.txt?sv=2024&sig={_CANARY}"),
]


@pytest.mark.parametrize(("key", "uri"), _CREDENTIALS_IN_URIS)
def test_credentials_in_a_uri_of_the_job_are_refused_without_repeating_them(tmp_path, key, uri):
    """Before, they were accepted: `check` printed them, every run wrote them to started.json, `submit` put
    them in the entrypoint Ray's dashboard shows, and a failure to read echoed them (s3fs reads none there)."""
    with pytest.raises(JobError) as refused:
        load_job(write(tmp_path, BASE), [f"{key}={uri}"])
    assert _CANARY not in str(refused.value)
    assert f"{key}: " in str(refused.value) and "REDACTED" in str(refused.value)
    assert "AWS_ACCESS_KEY_ID" in str(refused.value)  # says where credentials go instead


@pytest.mark.parametrize(
    ("key", "uri"),
    [
        ("manifest", "abfs://videos@account.dfs.core.windows.net/m.parquet"),  # container@account: no user info
        ("manifest", "s3://media/odd?sig=x.parquet"),  # '?' is a character of an S3 key
        ("manifest", "/data/someone@host/m.parquet"),  # a local path with an '@' in a folder's name
        ("model.weights", "https://host/w.pt?download=1&versionId=7"),
        ("storage.endpoint_url", "http://127.0.0.1:9000"),
    ],
)
def test_uris_without_credentials_are_taken_as_written(tmp_path, key, uri):
    job = load_job(write(tmp_path, BASE), [f"{key}={uri}"])
    section, _, name = key.rpartition(".")
    assert getattr(getattr(job, section) if section else job, name) == uri


def test_check_and_the_storage_options_of_a_command_line_refuse_credentials_without_printing_them(tmp_path, capsys):
    from vidbatch.cli import main

    job = write(tmp_path, BASE + f"storage: {{endpoint_url: 'http://minio:{_CANARY}@127.0.0.1:9000'}}\n")
    assert main(["check", str(job), "--settings-only"]) == 2
    # --endpoint-url was taken unchecked: the redacted refusal, not a traceback or the password
    assert main(["history", str(tmp_path), "--endpoint-url", f"http://minio:{_CANARY}@127.0.0.1:9000"]) == 2
    printed = capsys.readouterr()
    assert _CANARY not in printed.out + printed.err
    assert printed.err.count("http://REDACTED@127.0.0.1:9000") == 2, printed.err


def test_submit_refuses_credentials_before_building_the_entrypoint(tmp_path):
    from vidbatch.submit import build_submission

    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(JobError) as refused:
        build_submission(write(tmp_path, BASE), [f"output=s3://AKIAEXAMPLE:{_CANARY}@results/out"], staging)
    assert _CANARY not in str(refused.value)
    assert not any(staging.iterdir())


@pytest.mark.parametrize(
    "text",
    [
        "storage: {key: AKIAEXAMPLE, secret: s3cr3t-CANARY}\n",  # s3fs's storage_options
        "storage: {aws_secret_access_key: s3cr3t-CANARY}\n",
        "storage_options: {AWS_SECRET_ACCESS_KEY: s3cr3t-CANARY}\n",
        "storage: {profile: nightly}\n",
    ],
)
def test_credentials_written_as_keys_are_refused_saying_where_they_go(tmp_path, text):
    """Before: only 'unknown key storage.secret', with nothing said about where credentials are read from."""
    with pytest.raises(JobError) as refused:
        load_job(write(tmp_path, BASE + text))
    assert "unknown key" in str(refused.value) and "s3cr3t-CANARY" not in str(refused.value)
    assert "credentials are not read from the job file" in str(refused.value)
    assert "AWS_SECRET_ACCESS_KEY" in str(refused.value) and "AWS_PROFILE" in str(refused.value)


def test_a_misspelt_key_elsewhere_gets_no_word_about_credentials(tmp_path):
    with pytest.raises(JobError) as refused:
        load_job(write(tmp_path, BASE + "model: {top_key: 3}\n"))
    assert "unknown key 'model.top_key'" in str(refused.value) and "credentials" not in str(refused.value)


def test_a_job_file_that_is_a_pipe_or_device_is_named_so_not_missing(tmp_path):
    """Before: "job file '/dev/zero' does not exist" for a path that does exist."""
    import os

    fifo = tmp_path / "job.yaml"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(JobError, match="is a pipe or device, not a file; give the job's YAML file"):
            load_job(path)
