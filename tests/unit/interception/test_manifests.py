"""The container manifests agree with each other and with the sidecar's own loaders.

The image itself is built and run by tools/container-check (podman, from a
debootstrap base; .ci/run runs it). Here the Dockerfile, the Kubernetes
example, the compose file and the documents that describe them are checked
the way a reviewer would: every document parses,
every config embedded in them loads with the real loaders (the same ones
`spiffe-sidecar run` and `agent` use), the init container's arguments parse
with the real CLI, and every port, uid and socket path referenced in one place
is the one used in the others.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from proxy.agent.config import parse_agent_config
from proxy.cli import build_parser
from proxy.commands.iptables import spec_from_args
from proxy.config.load import load_sidecar_config
from proxy.config.model import SidecarConfig
from proxy.interception.rules import InterceptionSpec
from proxy.policy.load import load_policy_text

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "examples" / "kubernetes"
COMPOSE = ROOT / "examples" / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
CONTAINER_CHECK = ROOT / "tools" / "container-check"
TRANSPARENT_DOC = ROOT / "docs" / "transparent-mode.md"


def _load_all(path: Path) -> list[Any]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text()) if doc is not None]


def _k8s() -> dict[str, Any]:
    """Every Kubernetes document by kind (one of each in the example)."""
    docs: dict[str, Any] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _load_all(path):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path.name}: not a Kubernetes object"
            docs.setdefault(doc["kind"], doc)
    return docs


def _sidecar_config(tmp_path: Path, sidecar_yaml: str, policy_yaml: str | None) -> SidecarConfig:
    """Load sidecar.yaml (and its policy.yaml beside it) as `spiffe-sidecar run` would."""
    (tmp_path / "sidecar.yaml").write_text(sidecar_yaml)
    if policy_yaml is not None:
        (tmp_path / "policy.yaml").write_text(policy_yaml)
    return load_sidecar_config(tmp_path / "sidecar.yaml", env={})


def _container(pod: dict[str, Any], name: str, kind: str = "containers") -> dict[str, Any]:
    return next(c for c in pod[kind] if c["name"] == name)


def _init_spec(init: dict[str, Any]) -> InterceptionSpec:
    args = build_parser().parse_args(init["args"])
    assert args.command == "iptables" and args.action == "install"
    return spec_from_args(args)


def _excluded(spec: InterceptionSpec) -> set[int]:
    return {port for low, high in spec.exclude_inbound_ports for port in range(low, high + 1)}


def _socket_dir(config: SidecarConfig) -> str:
    assert config.identity.workload_api is not None and config.identity.workload_api.startswith("unix://")
    return posixpath.dirname(config.identity.workload_api[len("unix://"):])


def _dockerfile() -> str:
    return DOCKERFILE.read_text()


def _dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)(?::\d+)?\s*$", _dockerfile(), re.M)
    assert users, "the runtime stage must run as a fixed numeric uid"
    return int(users[-1])


@pytest.fixture
def k8s(tmp_path: Path) -> tuple[dict[str, Any], SidecarConfig]:
    docs = _k8s()
    data = docs["ConfigMap"]["data"]
    return docs, _sidecar_config(tmp_path, data["sidecar.yaml"], data["policy.yaml"])


def test_every_manifest_is_valid_yaml_with_the_expected_objects() -> None:
    assert set(_k8s()) >= {"ConfigMap", "Deployment", "Service", "ServiceAccount", "ClusterSPIFFEID"}
    assert _load_all(COMPOSE)[0]["services"]


def test_init_container_redirects_to_the_sidecars_listener_ports_and_spares_admin_and_probes(k8s: Any) -> None:
    docs, config = k8s
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    spec = _init_spec(_container(pod, "spiffe-sidecar-init", "initContainers"))
    transparent = config.transparent
    assert transparent is not None and transparent.inbound is not None and transparent.outbound is not None
    assert transparent.inbound.listen.port == spec.inbound_port
    assert transparent.outbound.listen.port == spec.outbound_port
    assert config.admin is not None and config.admin.listen.port in _excluded(spec)
    probe_ports = {probe[kind]["port"] for c in pod["containers"] for key in ("readinessProbe", "livenessProbe")
                   if (probe := c.get(key)) for kind in ("httpGet", "tcpSocket") if kind in probe}
    assert probe_ports and probe_ports <= _excluded(spec), "kubelet probes must reach the app directly"


def test_every_app_port_the_service_targets_is_mapped_by_the_inbound_listener(k8s: Any) -> None:
    docs, config = k8s
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    app_ports = {p["containerPort"] for p in _container(pod, "app")["ports"]}
    mapped = {m.port: m.forward_to.port for m in config.transparent.inbound.ports}
    targets = {p["targetPort"] for p in docs["Service"]["spec"]["ports"]}
    assert targets <= mapped.keys(), "a Service port the sidecar does not map would be refused"
    assert set(mapped.values()) <= app_ports, "every mapping forwards to a port the app container serves"


def test_init_container_has_only_the_network_capabilities_it_needs(k8s: Any) -> None:
    pod = k8s[0]["Deployment"]["spec"]["template"]["spec"]
    context = _container(pod, "spiffe-sidecar-init", "initContainers")["securityContext"]
    assert set(context["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"} and context["capabilities"]["drop"] == ["ALL"]
    assert context["runAsUser"] == 0


def test_the_sidecar_runs_as_the_uid_the_rules_exempt_and_the_app_does_not(k8s: Any) -> None:
    pod = k8s[0]["Deployment"]["spec"]["template"]["spec"]
    spec = _init_spec(_container(pod, "spiffe-sidecar-init", "initContainers"))
    assert _container(pod, "spiffe-sidecar")["securityContext"]["runAsUser"] == spec.proxy_uid == _dockerfile_uid()
    assert _container(pod, "app")["securityContext"]["runAsUser"] != spec.proxy_uid


def test_the_sidecar_mounts_its_config_and_the_workload_api_socket_where_the_config_says(k8s: Any) -> None:
    docs, config = k8s
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    sidecar = _container(pod, "spiffe-sidecar")
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    socket_volume = next(name for name, path in mounts.items() if path == _socket_dir(config))
    assert volumes[socket_volume]["hostPath"]["path"] == "/run/spire/sockets"
    config_dir = posixpath.dirname(sidecar["args"][sidecar["args"].index("--config") + 1])
    config_volume = next(name for name, path in mounts.items() if path == config_dir)
    assert volumes[config_volume]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert config.policy_file is not None and config.policy_file.name in docs["ConfigMap"]["data"]


def _healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK CMD, exec form (continuation lines joined)."""
    found = re.search(r"^HEALTHCHECK\b(?:.*\\\n)*.*$", _dockerfile(), re.M)
    assert found, "the Dockerfile has no HEALTHCHECK"
    exec_form = re.search(r"\bCMD\s+(\[.*\])\s*$", found.group(0).replace("\\\n", " "))
    assert exec_form, "HEALTHCHECK must use CMD's exec form (no shell in the check)"
    command: list[str] = YAML(typ="safe").load(exec_form.group(1))
    return command


def test_probes_and_healthcheck_ask_the_admin_port(k8s: Any) -> None:
    docs, config = k8s
    assert config.admin is not None
    ready_url = f"http://127.0.0.1:{config.admin.listen.port}/ready"
    assert ready_url in " ".join(_healthcheck_command())
    sidecar = _container(docs["Deployment"]["spec"]["template"]["spec"], "spiffe-sidecar")
    assert ready_url in " ".join(sidecar["readinessProbe"]["exec"]["command"])


def test_the_readiness_probe_is_the_images_healthcheck_and_liveness_asks_live(k8s: Any) -> None:
    docs, config = k8s
    sidecar = _container(docs["Deployment"]["spec"]["template"]["spec"], "spiffe-sidecar")
    assert sidecar["readinessProbe"]["exec"]["command"] == _healthcheck_command()
    live = " ".join(sidecar["livenessProbe"]["exec"]["command"])
    assert f"http://127.0.0.1:{config.admin.listen.port}/live" in live


def test_the_admin_endpoint_the_probes_use_exists() -> None:
    """/ready and /live are served by the admin endpoint, not promised for later."""
    admin = (ROOT / "proxy" / "operations" / "admin.py").read_text()
    assert 'url.path == "/ready"' in admin and 'url.path == "/live"' in admin
    for path in (DOCKERFILE, K8S / "deployment.yaml", TRANSPARENT_DOC):
        text = path.read_text()
        assert not re.search(r"later issue|admin issue|until then", text), f"{path.name} says /ready does not exist yet"


def _base_image_default() -> str:
    found = re.search(r"^ARG BASE_IMAGE=(\S+)\s*$", _dockerfile(), re.M)
    assert found, "the base image is a build argument, BASE_IMAGE, with the public image as its default"
    return found.group(1)


def test_every_stage_builds_on_the_base_image_argument() -> None:
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)\s*$", _dockerfile(), re.M)
    assert [name for _, name in stages] == ["build", "runtime"]
    assert {base for base, _ in stages} == {"${BASE_IMAGE}"}, "one base for both stages, as CI swaps it"


def test_the_documents_name_the_base_image_the_dockerfile_uses() -> None:
    base = _base_image_default()
    short = base.removeprefix("docker.io/library/")
    doc = TRANSPARENT_DOC.read_text()
    assert f"`{short}`" in doc
    named = set(re.findall(r"\b(?:python|debian|ubuntu|alpine):[\w.-]+", doc + (ROOT / "README.md").read_text()))
    assert named <= {short}, f"the documents name other base images than the Dockerfile's {short}: {named}"


def test_the_container_check_builds_this_dockerfile_with_a_base_like_its_default() -> None:
    """CI's image is this Dockerfile with BASE_IMAGE swapped for a debootstrap of the same suite."""
    script = CONTAINER_CHECK.read_text()
    assert '--build-arg "BASE_IMAGE=$BASE"' in script and "-f Dockerfile" in script
    suite = re.search(r"^SUITE=(\w+)$", script, re.M)
    assert suite and _base_image_default().endswith(f"debian:{suite.group(1)}-slim")
    assert "healthcheck run" in script
    assert "tools/container-check" in (ROOT / ".ci" / "run").read_text()


def test_dockerfile_builds_in_two_stages_and_runs_the_sidecar_by_default() -> None:
    text = _dockerfile()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "pip install" in text and "libssl-dev" in text
    runtime = text[text.index("AS runtime"):]
    assert "libssl-dev" not in runtime and "gcc" not in runtime, "the runtime stage carries no compiler"
    assert 'ENTRYPOINT ["spiffe-sidecar"]' in text
    assert 'CMD ["run", "--config", "/etc/spiffe-sidecar/sidecar.yaml"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"proxy/*.c", "proxy/*.so", ".git"} <= set(ignored)


def test_spire_registration_selects_the_sidecar_container_of_the_deployment() -> None:
    docs = _k8s()
    deployment, entry = docs["Deployment"], docs["ClusterSPIFFEID"]["spec"]
    pod = deployment["spec"]["template"]
    assert entry["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert entry["workloadSelectorTemplates"] == ["k8s:container-name:spiffe-sidecar"]
    assert _container(pod["spec"], "spiffe-sidecar")
    command = (K8S / "spire-registration.yaml").read_text()
    assert f"-selector k8s:sa:{pod['spec']['serviceAccountName']}" in command
    assert "-selector k8s:container-name:spiffe-sidecar" in command


# --- docker compose ---------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return _load_all(COMPOSE)[0]


def _compose_sidecar(tmp_path: Path, compose: dict[str, Any], service: str) -> SidecarConfig:
    contents = {c["source"]: compose["configs"][c["source"]]["content"] for c in compose["services"][service]["configs"]}
    sidecar = next(v for k, v in contents.items() if k.endswith("sidecar-yaml"))
    directory = tmp_path / service
    directory.mkdir()
    return _sidecar_config(directory, sidecar, contents.get("policy-yaml"))


def test_compose_sidecars_and_agent_share_one_socket_path(tmp_path: Path) -> None:
    compose = _compose()
    agent = parse_agent_config(compose["configs"]["agent-yaml"]["content"], "docker-compose.yaml#agent-yaml")
    agent_dir = posixpath.dirname(str(agent.socket_path))
    for service in ("backend-sidecar", "frontend-sidecar"):
        config = _compose_sidecar(tmp_path, compose, service)
        assert _socket_dir(config) == agent_dir
        volumes = compose["services"][service]["volumes"]
        assert f"workload-api:{agent_dir}:ro" in volumes
    assert f"workload-api:{agent_dir}" in compose["services"]["agent"]["volumes"]


def test_compose_agent_keeps_its_ca_on_a_volume() -> None:
    compose = _compose()
    agent = parse_agent_config(compose["configs"]["agent-yaml"]["content"], "docker-compose.yaml#agent-yaml")
    assert agent.state_dir is not None
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in compose["services"]["agent"]["volumes"]}
    assert mounts.get(str(agent.state_dir)) in compose["volumes"], "the agent's CA must outlive its container"


def test_compose_identities_line_up_with_expectations_and_policy(tmp_path: Path) -> None:
    compose = _compose()
    agent = parse_agent_config(compose["configs"]["agent-yaml"]["content"])
    by_uid = {int(sel.split(":")[2]): str(e.spiffe_id) for e in agent.entries for sel in map(str, e.selectors)
              if sel.startswith("unix:uid:")}
    ids = {s: by_uid[int(compose["services"][s]["user"].split(":")[0])] for s in ("backend-sidecar", "frontend-sidecar")}
    backend = _compose_sidecar(tmp_path, compose, "backend-sidecar")
    frontend = _compose_sidecar(tmp_path, compose, "frontend-sidecar")
    route = frontend.outbound[0]
    assert route.expect.matches(ids["backend-sidecar"])
    assert (route.connect_to.host, route.connect_to.port) == ("backend-sidecar", backend.inbound[0].listen.port)
    policies = load_policy_text(compose["configs"]["policy-yaml"]["content"])
    assert policies.evaluate(backend.inbound[0].policy, ids["frontend-sidecar"]).allowed


def test_compose_apps_share_their_sidecars_network_and_use_its_ports(tmp_path: Path) -> None:
    compose = _compose()
    services = compose["services"]
    assert services["backend"]["network_mode"] == "service:backend-sidecar"
    assert services["frontend"]["network_mode"] == "service:frontend-sidecar"
    backend = _compose_sidecar(tmp_path, compose, "backend-sidecar")
    frontend = _compose_sidecar(tmp_path, compose, "frontend-sidecar")
    assert str(backend.inbound[0].forward_to.port) in services["backend"]["command"]
    assert f"127.0.0.1:{frontend.outbound[0].listen.port}/" in shlex.join(services["frontend"]["command"])
