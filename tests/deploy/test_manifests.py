"""The files of ``deploy/`` parse, validate where a schema exists, and agree with each other and with the project.

Nothing here reaches Kubernetes, a cloud or SLURM: the ``ray up`` YAML is validated against Ray's own autoscaler
schema (``ray/autoscaler/ray-schema.json`` in the installed wheel), the KubeRay manifests and the scripts are
parsed, and the study command each one runs is parsed by dastudy's own CLI and study loader (a mistyped override
key or option fails here, not on the cluster). docs/cluster.md says what is tested and what is not.
"""
from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
STORAGE = "/mnt/shared/studies"
GPUS_PER_WORKER = 1
CPUS_PER_WORKER = 16


def _yaml(relative: str):
    return yaml.safe_load((DEPLOY / relative).read_text())


def _version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def _ray_schema() -> dict:
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    assert path.is_file(), f"{path}: Ray no longer ships its cluster-config schema here"
    return json.loads(path.read_text())


def _containers(spec: dict) -> list[dict]:
    """Every container of a RayCluster spec (head and worker groups, init containers too)."""
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["containers"] + pod.get("initContainers", [])]


def _sbatch_lines() -> list[str]:
    return (DEPLOY / "slurm" / "dastudy.sbatch").read_text().splitlines()


def _sbatch_option(name: str) -> str:
    for line in _sbatch_lines():
        match = re.match(rf"#SBATCH\s+--{name}=(\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"deploy/slurm/dastudy.sbatch: no #SBATCH --{name}")


def _sbatch_default_study() -> list[str]:
    """The ``set -- ...`` words of the sbatch script's default study (preset + overrides)."""
    text = (DEPLOY / "slurm" / "dastudy.sbatch").read_text()
    match = re.search(r"^\s*set -- (.*?)\nfi$", text, flags=re.S | re.M)
    assert match, "deploy/slurm/dastudy.sbatch: no default study (set -- ...)"
    return shlex.split(match.group(1).replace("\\\n", " "))


# ---------------------------------------------------------------------------------------------------------
# ray up


def _ray_up_check(config: dict) -> dict:
    """What `ray up` does to a cluster YAML before it calls the cloud (ray/autoscaler/_private/commands.py
    ``_bootstrap_config``): fill in the provider's defaults, then validate (Ray's schema plus its own checks: head
    type, min_workers against max_workers, synced files). Returns the filled-in config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    filled = prepare_config(copy.deepcopy(config))
    validate_config(filled)
    return filled


def test_ray_up_yaml_validates_as_ray_up_validates_it():
    config = _yaml("ray-up/cluster.yaml")
    jsonschema.validate(config, _ray_schema())
    filled = _ray_up_check(config)
    assert filled["available_node_types"]["head"]["max_workers"] == 0  # filled in by Ray: it did run
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # no trial on the head
    gpu_types = [t for t in types.values() if t["resources"].get("GPU")]
    assert len(gpu_types) == 1
    worker = gpu_types[0]
    assert worker["min_workers"] == 0 and worker["max_workers"] <= config["max_workers"]
    assert worker["resources"] == {"CPU": CPUS_PER_WORKER, "GPU": GPUS_PER_WORKER}
    assert any("--num-cpus=0" in c and "--head" in c for c in config["head_start_ray_commands"])
    assert any("--autoscaling-config" in c for c in config["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])


@pytest.mark.parametrize("breakage", ["fractional_gpu", "no_provider", "unknown_key", "min_over_max",
                                      "unknown_head_type"])
def test_the_ray_up_check_rejects_a_broken_cluster_yaml(breakage):
    """The validation above can fail: it refuses what `ray up` would refuse, including what the schema alone lets
    through (more min_workers than max_workers, a head type that is not a node type)."""
    config = copy.deepcopy(_yaml("ray-up/cluster.yaml"))
    if breakage == "fractional_gpu":
        config["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    elif breakage == "no_provider":
        del config["provider"]
    elif breakage == "unknown_key":
        config["head_start_commands"] = config.pop("head_start_ray_commands")
    elif breakage == "min_over_max":
        config["available_node_types"]["gpu_worker"]["min_workers"] = config["max_workers"] + 1
    else:
        config["head_node_type"] = "ray.head.default"
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError)):
        _ray_up_check(config)


def test_ray_up_nodes_run_a_named_ami_and_the_image_users_home():
    """The head had no ImageId (Ray's default AMI, never tried with this recipe); the shared mount is owned by the
    image's uid; the token lands in the image's HOME (Ray reads HOME from the image's environment, else /root)."""
    config = _yaml("ray-up/cluster.yaml")
    amis = {name: t["node_config"].get("ImageId") for name, t in config["available_node_types"].items()}
    assert all(amis.values()) and len(set(amis.values())) == 1, amis
    assert f"sudo chown {IMAGE_UID}:{IMAGE_UID} /mnt/shared" in config["initialization_commands"]
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert _dockerfile_env()["HOME"] == "/home/ray"
    text = (DEPLOY / "ray-up" / "cluster.yaml").read_text()
    assert "2049" in text and "docker login" in text  # the EFS security group and the registry login, walked


# ---------------------------------------------------------------------------------------------------------
# KubeRay


def test_rayjob_and_raycluster_describe_the_same_cluster():
    job, cluster = _yaml("kuberay/rayjob.yaml"), _yaml("kuberay/raycluster.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


def test_kuberay_head_hosts_no_trials_and_gpu_workers_scale_from_zero():
    spec = _yaml("kuberay/rayjob.yaml")["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _pins()["ray"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # a string, as KubeRay requires
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] == 0 and group["replicas"] == 0 and group["maxReplicas"] >= 1
    (container,) = group["template"]["spec"]["containers"]
    for kind in ("requests", "limits"):
        assert int(container["resources"][kind]["nvidia.com/gpu"]) == GPUS_PER_WORKER
        assert int(container["resources"][kind]["cpu"]) == CPUS_PER_WORKER
    assert spec["entrypointNumCpus"] == 0  # the driver fits on the 0-CPU head


KUBERAY_VERSION = "v1.7.0"  # the CRD schemas vendored in tests/deploy/schemas/ (SOURCE.md there)
SCHEMAS = Path(__file__).parent / "schemas" / f"kuberay-{KUBERAY_VERSION}"
TOKEN_SECRET = "dastudy-ray-token"
IMAGE_UID = 1000  # deploy/Dockerfile: USER 1000


def _strict(schema):
    """A CRD's structural schema as ``kubectl apply`` checks it (server-side field validation, strict since
    Kubernetes 1.27): an object with ``properties`` refuses fields it does not list. CEL rules
    (``x-kubernetes-validations``) are not checked here."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(x) for x in schema]
    return schema


@functools.lru_cache(maxsize=None)
def _crd_validator(kind: str):
    """A validator of KubeRay's schema for ``kind``, built once per test session. The vendored file must be the
    one SOURCE.md records (sha256 of its JSON); checking the 200 kB schema itself would cost 5 s a kind."""
    import gzip
    import hashlib

    path = SCHEMAS / f"ray.io_{kind.lower()}s.v1.json.gz"
    data = gzip.decompress(path.read_bytes())
    row = next(line for line in (SCHEMAS / "SOURCE.md").read_text().splitlines() if f"`{path.name}`" in line)
    assert f"`{hashlib.sha256(data).hexdigest()}`" in row, f"{path}: not the file SOURCE.md records"
    schema = _strict(json.loads(data))
    return jsonschema.validators.validator_for(schema)(schema)


def _kuberay_pods(cluster: dict) -> list[tuple[str, dict]]:
    """(group, pod spec) of the head and of every worker group."""
    return [("head", cluster["headGroupSpec"]["template"]["spec"])] + [
        (g["groupName"], g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]


@pytest.mark.parametrize("name", ["rayjob", "raycluster"])
def test_kuberay_manifests_validate_against_kuberays_crd_schema(name):
    manifest = _yaml(f"kuberay/{name}.yaml")
    _crd_validator(manifest["kind"]).validate(manifest)
    header = (DEPLOY / "kuberay" / f"{name}.yaml").read_text().split("\napiVersion:", 1)[0]
    assert f"KubeRay {KUBERAY_VERSION}" in header  # the version the manifest was checked against, named


@pytest.mark.parametrize("breakage", ["misspelt_field", "unknown_auth_mode", "replicas_as_string", "pod_typo"])
def test_the_crd_check_rejects_a_broken_manifest(breakage):
    """The validation above can fail: KubeRay's schema refuses what the API server would refuse."""
    job = copy.deepcopy(_yaml("kuberay/rayjob.yaml"))
    cluster = job["spec"]["rayClusterSpec"]
    if breakage == "misspelt_field":
        cluster["authOption"] = cluster.pop("authOptions")
    elif breakage == "unknown_auth_mode":
        cluster["authOptions"]["mode"] = "tokens"
    elif breakage == "replicas_as_string":
        cluster["workerGroupSpecs"][0]["replicas"] = "0"
    else:
        cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _crd_validator("RayJob").validate(job)


def test_kuberay_token_auth_is_kuberays_own():
    """``spec.authOptions`` (mode token, the Secret named): the operator then gives the token to the autoscaler
    sidecar, its job-status calls and the submitter. Hand-wired RAY_AUTH_* env left the autoscaler without it:
    the GPU group never scaled up from 0 and the RayJob was marked Failed (issue 20, item 1)."""
    job = _yaml("kuberay/rayjob.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}
    version = tuple(int(x) for x in cluster["rayVersion"].split("."))
    assert version >= (2, 52), "KubeRay refuses authOptions.mode token below Ray 2.52"
    assert "submitterPodTemplate" not in job["spec"]  # KubeRay's default submitter: the head's image, the token
    for _group, pod in _kuberay_pods(cluster):
        for container in pod["containers"] + pod.get("initContainers", []):
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, container["name"]
    for name in ("rayjob", "raycluster"):  # the Secret the headers create has the key KubeRay reads
        text = (DEPLOY / "kuberay" / f"{name}.yaml").read_text()
        assert f"kubectl create secret generic {TOKEN_SECRET} --from-literal=auth_token=" in text, name


def test_kuberay_pods_have_what_ray_and_the_study_need():
    """Pod-level settings a KubeRay user relies on: the shared claim in every pod, a memory-backed /dev/shm for
    Ray's object store, uid 1000 with fsGroup for the shared volume, GPU limits equal to requests on GPU groups
    only, and KubeRay's own health probes (a probe of ours would replace them)."""
    pvc = _yaml("kuberay/pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    cluster = _yaml("kuberay/rayjob.yaml")["spec"]["rayClusterSpec"]
    # KubeRay >= 1.6 probes /api/healthz over HTTP from Ray 2.53 on (no wget in the pod; token auth lets it pass)
    assert tuple(int(x) for x in cluster["rayVersion"].split(".")) >= (2, 53)
    gpu_groups = 0
    for group, pod in _kuberay_pods(cluster):
        volumes = {v["name"]: v for v in pod["volumes"]}
        security = pod["securityContext"]
        assert (security["runAsUser"], security["fsGroup"]) == (IMAGE_UID, IMAGE_UID), group
        (container,) = pod["containers"]
        assert "livenessProbe" not in container and "readinessProbe" not in container, group
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        claim = volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"]
        assert claim == pvc["metadata"]["name"], group
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory" and shm["sizeLimit"], group
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DASTUDY_STORAGE"] == STORAGE and env["TORCH_HOME"].startswith("/mnt/shared/"), group
        resources = container["resources"]
        gpus = resources["limits"].get("nvidia.com/gpu")
        assert resources["requests"].get("nvidia.com/gpu") == gpus, group  # Kubernetes: GPU requests == limits
        if gpus is not None:
            gpu_groups += 1
            assert int(gpus) == GPUS_PER_WORKER and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
            assert int(container["resources"]["limits"]["cpu"]) == CPUS_PER_WORKER
    assert gpu_groups == 1
    # the head's init step: creates the studies' folder and fails the pod, saying why, if uid 1000 cannot write it
    (init,) = cluster["headGroupSpec"]["template"]["spec"]["initContainers"]
    script = init["command"][-1]
    assert "/mnt/shared/studies" in script and "exit 1" in script
    assert subprocess.run(["bash", "-n", "-c", script], capture_output=True).returncode == 0
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/mnt/shared"}


def test_the_seed_pod_writes_onto_the_claim_as_the_trials_user():
    """docs/cluster.md seeds datasets and checkpoints through it: the same claim at the same path, and the uid
    the trials run as (files it writes are theirs to read)."""
    pod = _yaml("kuberay/seed-pod.yaml")
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    spec = pod["spec"]
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["fsGroup"]) == (IMAGE_UID, IMAGE_UID)
    (container,) = spec["containers"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert claims[mounts["/mnt/shared"]] == _yaml("kuberay/pvc.yaml")["metadata"]["name"]
    assert f"pod/{pod['metadata']['name']}" in (REPO / "docs" / "cluster.md").read_text()


# ---------------------------------------------------------------------------------------------------------
# agreement across the paths


def test_every_manifest_runs_the_same_image():
    version = _version()
    images = {"ray up": _yaml("ray-up/cluster.yaml")["docker"]["image"],
              "seed pod": _yaml("kuberay/seed-pod.yaml")["spec"]["containers"][0]["image"]}
    for name in ("rayjob", "raycluster"):
        data = _yaml(f"kuberay/{name}.yaml")
        spec = data["spec"].get("rayClusterSpec", data["spec"])
        for container in _containers(spec):
            images[f"{name} {container['name']}"] = container["image"]
    assert len(set(images.values())) == 1, images
    image = next(iter(images.values()))
    assert image.rsplit(":", 1)[1] == version  # the tag is the project's version
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f'org.opencontainers.image.version="{version}"' in dockerfile
    assert f"-t {image} ." in dockerfile  # the build command in its header produces that tag


def test_every_path_gives_a_worker_the_same_gpus_and_cpus():
    ray_up = _yaml("ray-up/cluster.yaml")["available_node_types"]["gpu_worker"]["resources"]
    kuberay = _yaml("kuberay/raycluster.yaml")["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert (ray_up["GPU"], ray_up["CPU"]) == (GPUS_PER_WORKER, CPUS_PER_WORKER)
    assert (int(kuberay["resources"]["limits"]["nvidia.com/gpu"]),
            int(kuberay["resources"]["limits"]["cpu"])) == (GPUS_PER_WORKER, CPUS_PER_WORKER)
    assert int(_sbatch_option("gpus-per-node")) == GPUS_PER_WORKER
    assert int(_sbatch_option("cpus-per-task")) == CPUS_PER_WORKER


def _study_commands() -> dict[str, list[str]]:
    """The dastudy command of each path, as words (shell variables of the scripts at their defaults)."""
    job = shlex.split(_yaml("kuberay/rayjob.yaml")["spec"]["entrypoint"])
    sbatch = ["dastudy", "study", "run", *_sbatch_default_study(), "--address", "10.0.0.1:26379",
              "--storage", STORAGE]
    header = (DEPLOY / "ray-up" / "cluster.yaml").read_text().split("\ncluster_name:", 1)[0]
    match = re.search(r"ray exec \S+ --tmux '(.*?)'", header.replace("\\\n#", " "), flags=re.S)
    assert match, "deploy/ray-up/cluster.yaml: the header no longer shows the study command"
    ray_up = shlex.split(match.group(1))
    return {"rayjob": job, "slurm": sbatch, "ray up": ray_up}


def test_every_path_runs_a_valid_study_command_on_the_shared_storage():
    from study.cli import get_parser
    from study.commands.study import _run_options, split_overrides
    from study.config.study_config import load_study_config

    parser = get_parser()
    for path, words in _study_commands().items():
        assert words[:3] == ["dastudy", "study", "run"], (path, words)
        args = split_overrides(parser.parse_args(words[1:]), _run_options)
        assert args.storage == STORAGE, path
        assert args.address, path  # always a cluster, never a private local Ray
        study = load_study_config(args.preset, args.overrides, name=args.name)  # keys and values are valid
        assert study.resources.gpu > 0, path
        if path != "slurm":  # GPU workers start at zero replicas: the driver must ask the autoscaler for them
            assert study.resources.autoscaling, path


def test_job_submit_recipe_uses_the_shared_storage_and_runtime_env_json():
    text = (DEPLOY / "job-submit.sh").read_text()
    assert "--runtime-env-json" in text and "--address auto" in text
    assert f"STORAGE=${{DASTUDY_STORAGE:-{STORAGE}}}" in text
    assert "dastudy study run" in text and "dastudy study resume" in text


@pytest.mark.parametrize("script", ["job-submit.sh", "slurm/dastudy.sbatch"])
def test_shell_scripts_parse(script):
    path = DEPLOY / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert path.read_text().startswith("#!")
    assert "ray stop" not in path.read_text().replace("never `ray stop`", "")  # stops its own processes by PID
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------------------------------------------------
# the image


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _dockerfile_env() -> dict[str, str]:
    """The image's environment (every ENV instruction, ``KEY=VALUE`` pairs)."""
    out = {}
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                out[key] = value
    return out


def test_dockerfile_runs_as_uid_1000_with_its_home_and_the_driver_it_needs():
    instructions = _dockerfile_instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users[-1] == str(IMAGE_UID)
    (adduser,) = [rest for keyword, rest in instructions if keyword == "RUN" and "useradd" in rest]
    assert f"--uid {IMAGE_UID}" in adduser and f"chown {IMAGE_UID}:{IMAGE_UID} /mnt/shared" in adduser
    env = _dockerfile_env()
    assert env["HOME"] == "/home/ray"  # `ray up` puts ~/.ray/auth_token under the image's HOME, else /root
    # torch's wheel names its CUDA (2.14.1+cu130); the toolkit refuses a GPU container on a driver below it
    import torch

    cuda = torch.version.cuda
    assert cuda and env["NVIDIA_REQUIRE_CUDA"] == f"cuda>={cuda}", (cuda, env.get("NVIDIA_REQUIRE_CUDA"))
    minimum_driver = {"13.0": "R580"}[cuda]  # NVIDIA's CUDA 13.0 release notes: Linux driver >= 580
    assert minimum_driver in (DEPLOY / "Dockerfile").read_text()
    assert minimum_driver in (REPO / "docs" / "cluster.md").read_text()


def _lock() -> dict[str, tuple[str, list[str]]]:
    """deploy/requirements.lock: name -> (version, sha256 hashes)."""
    text = (DEPLOY / "requirements.lock").read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            spec, *options = line.split()
            name, version = spec.split("==")
            out[name] = (version, [o.split(":", 1)[1] for o in options if o.startswith("--hash=sha256:")])
    return out


def _requirement_name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]).lower()


def test_dockerfile_installs_the_locked_project_on_python_311():
    """Every package of the image pinned by version and sha256 (deploy/requirements.lock, from constraints.txt),
    the project itself without dependencies, and `pip check` after: a lock that misses one fails the build."""
    instructions = _dockerfile_instructions()
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    assert args["BASE"] == "python:3.11-slim"
    assert ("FROM", "${BASE}") in instructions
    installs = [rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest]
    assert len(installs) == 1, installs
    steps = [step.strip() for step in installs[0].split("&&")]
    assert steps[0] == "python -m pip install --require-hashes --no-deps -r requirements.lock"
    assert steps[1] == "python -m pip install --no-deps --no-build-isolation ."
    assert steps[2] == "python -m pip check"
    assert "import torch, ray, optuna, psycopg" in steps[3]

    lock = _lock()
    assert all(len(hashes) == 1 and len(hashes[0]) == 64 for _version, hashes in lock.values())
    pins = _pins()
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")
    assert {"ray", "optuna"} <= set(pins)
    assert {name: lock[name][0] for name in pins} == pins  # the lock is made from constraints.txt
    assert "setuptools" in lock  # the project's build backend, for --no-build-isolation
    # the lock covers what the image's extras ask for (a dependency added since: python deploy/make_lock.py)
    from importlib import util

    spec = util.spec_from_file_location("make_lock", DEPLOY / "make_lock.py")
    make_lock = util.module_from_spec(spec)
    spec.loader.exec_module(make_lock)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in make_lock.EXTRAS.split(","):
        wanted += project["optional-dependencies"][extra]
    assert any(r.startswith("ray[default]") for r in wanted)  # dashboard, job server, autoscaler
    assert any(r.startswith("psycopg") for r in wanted)  # postgresql:// storage (SQLAlchemy 2 drives psycopg 3)
    names = {_requirement_name(r) for r in wanted} | {"psycopg-binary"}  # psycopg[binary]: its wheel too
    missing = names - set(lock)
    assert not missing, f"deploy/requirements.lock lacks {sorted(missing)}: run python deploy/make_lock.py"
    header = (DEPLOY / "requirements.lock").read_text().splitlines()[0]
    assert f'".[{make_lock.EXTRAS}]"' in header


def test_dockerfile_copies_what_exists_and_the_dockerignore_lets_it_through():
    copied = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY":
            *sources, _dest = rest.split()
            copied += sources
    assert copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*"  # everything else stays out
    for source in copied:
        assert (REPO / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is excluded from the build context"
    # every package the project installs is in the image
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= set(copied)

